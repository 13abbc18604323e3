"""The explanation and bootstrap benchmark runs end to end at a small size and reports what it measured."""

import re

import polars as pl

from ehrseq.bench.explain import main
from ehrseq.datasets import load_pbcseq


def test_small_benchmark_explains_every_visit_and_times_both_bootstraps(capsys):
    main(["--patients", "12", "--epochs", "1", "--resamples", "40", "--loop-resamples", "3", "--steps", "16"])
    out = capsys.readouterr().out
    visits, outcomes = load_pbcseq(outcome="death")
    first = outcomes["patient_id"].head(12)
    expected = visits.filter(pl.col("patient_id").is_in(first.implode())).height
    for view in ("level", "change"):
        row = next(line for line in out.splitlines() if line.startswith(view))
        cells = row.split()
        assert cells[1] == "12" and int(cells[2].replace(",", "")) == expected
        assert float(cells[-2]) < 5.0  # completeness gap, %
    assert "resamples as weights (ehrseq)" in out and "loop of metric recomputations" in out
    assert float(re.search(r"speed-up per resample: ([\d.]+)x", out).group(1)) > 0
