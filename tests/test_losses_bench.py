"""Benchmark runner (``python -m ehrseq.bench``) and the loss benchmark in its quick setting."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from ehrseq.bench.__main__ import available_benchmarks
from ehrseq.bench.__main__ import main as run_bench
from ehrseq.bench.losses import CASES, NATIVE_CASES, _Step, term_step
from ehrseq.losses import TERMS
from ehrseq.models.families import FAMILIES


def test_listing_names_every_benchmark_with_its_summary(capsys):
    assert run_bench([]) == 0
    listing = capsys.readouterr().out
    assert "losses" in available_benchmarks()
    assert re.search(r"^  losses +Loss forward\+backward times for every registered loss term", listing, re.MULTILINE)


def test_unknown_benchmark_exits_with_code_2(capsys):
    assert run_bench(["no_such_benchmark"]) == 2
    assert "unknown benchmark 'no_such_benchmark'" in capsys.readouterr().err
    assert run_bench(["_timing"]) == 2


def test_loss_benchmark_quick_mode_times_every_term_and_the_loop_baselines(capsys, tmp_path):
    assert {term for term, _, _ in CASES} == set(TERMS)
    assert all(TERMS[term].applies(FAMILIES[kind]) for term, kind, _ in CASES)
    report_file = tmp_path / "losses.json"
    assert run_bench(["losses", "--quick", "--repeats", "1", "--json", str(report_file)]) == 0
    output = capsys.readouterr().out
    for term, kind, _ in CASES:
        assert re.search(rf"^{term} +{kind} ", output, re.MULTILINE)
    report = json.loads(report_file.read_text())
    assert [(row["term"], row["head"]) for row in report["terms"]] == [(term, kind) for term, kind, _ in CASES]
    assert all(row["median_ms"] > 0 and row["ratio_to_yardstick"] > 0 for row in report["terms"])
    assert re.search(r"^term +head +median ms +best ms +worst ms +× yardstick +≤ 3×$", output, re.MULTILINE)
    assert re.search(r"^\d+ term\(s\) above 3× the yardstick", output, re.MULTILINE)
    for name in ("ranking", "contrastive"):
        loop = report["loops"][name]
        assert loop["speed_up"] > 1 and loop["value_difference"] < 1e-5
    # the constant-hazard CRPS with the native kernel and without it: the same loss value
    assert [(row["term"], row["head"]) for row in report["native"]] == [(t, k) for t, k, _ in NATIVE_CASES]
    assert all(row["relative_value_difference"] < 1e-5 and row["native_ms"] > 0 for row in report["native"])
    assert re.search(r"^term +head +native ms +PyTorch ms +speed-up", output, re.MULTILINE)


def test_every_benchmarked_loss_is_finite_at_full_size_and_an_overflowed_one_is_refused():
    for term, kind, options in CASES:  # the inputs of the full run (B=512, M=64, L=32), one step each
        step = term_step(term, kind, options, 512, 64, 32, torch.float32, 0)
        step()
        assert math.isfinite(step.value), (term, kind)
    leaf = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="inf"):
        _Step(lambda x: (x * float("inf")).sum(), {"x": leaf}, [])()
