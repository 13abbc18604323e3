"""Loss forward+backward times for every registered loss term, and vectorized vs Python-loop ratios.

Every term of the loss-term registry (:mod:`ehrseq.losses.terms`) is timed on the heads of
:data:`CASES` (its own likelihood on one head of each kind of likelihood; every term at least once) with
a synthetic batch (default B = 512 patients, M = 64 visits, L = 32 grid bins): one training objective
of that term alone, from the head's raw outputs to the gradient — the distribution is built from the
raw outputs inside the timed step, as in training — median of repeated runs after warm-up, with
torch's default number of threads. The yardstick is one fused BCE over a ``[B, M, L]`` logit tensor,
run alternately with each term (one run of the term, one of the yardstick, …) so that both see the
same phases of the machine; each term's figure is its median over the median of the yardstick runs
interleaved with it ("× yardstick"), and terms above :data:`TARGET_RATIO_TO_YARDSTICK` are flagged.
The ranking and contrastive losses are also compared, in the same run and
on the same inputs, with the Python-loop formulations of [catalogue] §2 and §6 (re-implemented below
as the baseline, timed on fewer runs); their values are checked to agree. The terms that run a native kernel on
CPU (:data:`NATIVE_CASES`) are timed again with and without it (its PyTorch implementation), alternately on the
same inputs.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from ehrseq.bench._synthetic import model_output, synthetic_logits, synthetic_step, synthetic_targets
from ehrseq.bench._timing import Timing, environment_line, format_table, measure, measure_alternating
from ehrseq.losses.functional import ranking_loss, supervised_contrastive_loss
from ehrseq.losses.terms import TERMS
from ehrseq.models.distributions import _native
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.model import ModelConfig
from ehrseq.objective import Objective, ObjectiveConfig

#: (term, head kind, term options) timed by the benchmark: the likelihood of every kind of head, the
#: dedicated and generic Survival-CRPS, and every other registered term on a head it applies to.
CASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("nll", "visit_hazard", {}),
    ("nll", "logistic_hazard", {}),
    ("nll", "pmf", {}),
    ("nll", "competing_pmf", {}),
    ("nll", "piecewise_linear_hazard", {}),
    ("nll", "lognormal", {}),
    ("nll", "weibull_mixture", {}),
    ("nll", "multi_event", {}),
    ("mle_right", "weibull", {}),
    ("crps", "lognormal", {}),
    ("crps", "weibull", {}),
    ("crps", "logistic_hazard", {}),
    ("crps_right", "piecewise_constant_hazard", {}),
    ("crps_log_time", "lognormal", {}),
    ("focal", "visit_hazard", {}),
    ("focal", "logistic_hazard", {}),
    ("calibration", "logistic_hazard", {}),
    ("ranking", "logistic_hazard", {"horizon": 365.0}),
    ("deephit_ranking", "pmf", {}),
    ("contrastive", "logistic_hazard", {}),
    ("smooth", "logistic_hazard", {}),
    ("next_visit", "logistic_hazard", {}),
)

#: A loss term should cost at most this many yardsticks (fused BCE over [B, M, L], forward + backward).
TARGET_RATIO_TO_YARDSTICK = 3.0
#: Speed-up the vectorized ranking and contrastive losses should have over the [catalogue] loops.
TARGET_RATIO = 100.0


def loop_ranking_loss(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, temperature: float) -> torch.Tensor:
    """[catalogue] §2 ranking loss as written there: a Python loop over anchors and pairs (baseline only)."""
    loss = risk.new_zeros(())
    pairs = 0
    for i in range(risk.shape[0]):
        if event[i] == 0:
            continue
        for j in range(risk.shape[0]):
            if time[j] > time[i]:
                loss = loss + F.softplus(-(risk[i] - risk[j]) / temperature)
                pairs += 1
    return loss / pairs if pairs else loss


def loop_contrastive_loss(
    states: torch.Tensor, event: torch.Tensor, event_visit: torch.Tensor, temperature: float
) -> torch.Tensor:
    """[catalogue] §6 contrastive loss as written there: Python loops over patients (baseline only)."""
    final = torch.stack([states[i, int(event_visit[i])] for i in range(states.shape[0])])
    unit = F.normalize(final, dim=-1)
    similarity = unit @ unit.T
    loss = states.new_zeros(())
    anchors = 0
    for i in range(states.shape[0]):
        if event[i] == 0:
            continue
        positive, negative = [], []
        for j in range(states.shape[0]):
            if i == j:
                continue
            (positive if event[j] != 0 else negative).append(similarity[i, j] / temperature)
        if positive:
            numerator = torch.stack(positive).exp().sum()
            denominator = numerator + (torch.stack(negative).exp().sum() if negative else 0.0)
            loss = loss - torch.log(numerator / denominator)
            anchors += 1
    return loss / anchors if anchors else loss


def _leaves(value: Any) -> Iterable[torch.Tensor]:
    """Tensors requiring grad inside (nested) inputs."""
    if isinstance(value, torch.Tensor):
        if value.requires_grad:
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)


class _Step:
    """One forward + backward, resetting the gradients of the inputs and parameters first; keeps the last value."""

    def __init__(self, loss: Callable[..., torch.Tensor], inputs: dict[str, Any], parameters: list[torch.Tensor]):
        self.loss, self.inputs = loss, inputs
        self.leaves = list(_leaves(inputs)) + parameters
        self.value = math.nan

    def __call__(self) -> None:
        for leaf in self.leaves:
            leaf.grad = None
        value = self.loss(**self.inputs)
        value.backward()
        self.value = float(value.detach())
        if not math.isfinite(self.value):  # a time of an overflowed loss would be a figure of nothing
            raise RuntimeError(f"the benchmarked loss is {self.value} on its synthetic inputs")


def reference_step(batch_size: int, visits: int, bins: int, dtype: torch.dtype, seed: int) -> _Step:
    """torch's own masked BCE-with-logits on ``[B, M, L]``: a yardstick for the speed of the machine."""
    generator = torch.Generator().manual_seed(seed)
    logits = synthetic_logits(batch_size, visits, bins, generator=generator, dtype=dtype)
    targets = (torch.rand(batch_size, visits, bins, generator=generator) < 0.1).to(dtype)
    weights = (torch.rand(batch_size, visits, bins, generator=generator) < 0.8).to(dtype)

    def bce(logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weights)

    return _Step(bce, {"logits": logits}, [])


def term_step(term: str, kind: str, options: dict[str, Any], batch_size: int, visits: int, bins: int,
              dtype: torch.dtype, seed: int) -> _Step:
    """One training objective of ``term`` alone on a ``kind`` head: raw outputs → distribution → loss →
    gradient, on a synthetic batch (see :func:`ehrseq.bench._synthetic.synthetic_step`)."""
    generator = torch.Generator().manual_seed(seed)
    head, batch, leaves = synthetic_step(kind, batch_size, visits, bins, generator=generator, dtype=dtype)
    needs_next_visit = TERMS[term].needs_next_visit
    config = ModelConfig(EncoderConfig(kind="gru", n_numeric=leaves["next_numeric"].shape[-1],
                                       code_vocab_size=leaves["next_code_logits"].shape[-1]),
                         head.config, next_visit=needs_next_visit)
    objective = Objective(ObjectiveConfig.parse({term: {"weight": 1.0, **options}}), config,
                          visits_per_patient=float(batch.mask.sum()) / batch_size).to(dtype)

    def loss(**tensors: torch.Tensor) -> torch.Tensor:
        return objective(model_output(head, tensors), batch).total

    return _Step(loss, leaves, list(objective.parameters()))


def time_terms(batch_size: int, visits: int, bins: int, *, repeats: int, dtype: torch.dtype, seed: int,
               names: list[str] | None) -> tuple[list[dict[str, Any]], Timing]:
    """Time every case of :data:`CASES` (only the terms ``names`` when given), each alternately with the
    yardstick (:func:`reference_step`).

    Returns one row per case — ``timing`` and ``ratio``, its median over the median of the yardstick
    runs interleaved with it — and the timing of all the yardstick runs together.
    """
    reference = reference_step(batch_size, visits, bins, dtype, seed)
    rows, reference_runs = [], []
    for term, kind, options in CASES:
        if names and term not in names:
            continue
        step = term_step(term, kind, options, batch_size, visits, bins, dtype, seed)
        timing, yardstick = measure_alternating(step, reference, repeats=repeats)
        rows.append({"term": term, "head": kind, "timing": timing, "ratio": timing.median / yardstick.median})
        reference_runs.append(yardstick)
    if not reference_runs:
        reference_runs.append(measure(reference, repeats=repeats))
    return rows, Timing.of([t.median for t in reference_runs])


def compare_with_loops(
    batch_size: int, visits: int, *, repeats: int, loop_repeats: int, dtype: torch.dtype, seed: int
) -> list[dict[str, Any]]:
    """Vectorized ranking / contrastive losses vs the [catalogue] loops on the same inputs."""
    generator = torch.Generator().manual_seed(seed)
    labels = synthetic_targets(batch_size, visits, 1, generator=generator, dtype=dtype)
    rows = torch.arange(batch_size)
    time = labels["remaining"][rows, labels["event_visit"]]
    risk = synthetic_logits(batch_size, generator=generator, dtype=dtype)
    states = synthetic_logits(batch_size, visits, 64, generator=generator, dtype=dtype)
    event, last, mask = labels["event"], labels["event_visit"], labels["mask"]
    cases = {
        "ranking": (
            [risk],
            lambda: ranking_loss(risk, time, event, temperature=1.0),
            lambda: loop_ranking_loss(risk, time, event, 1.0),
        ),
        "contrastive": (
            [states],
            lambda: supervised_contrastive_loss(states, event, last, mask, temperature=0.5),
            lambda: loop_contrastive_loss(states, event, last, 0.5),
        ),
    }
    results = []
    for name, (leaves, vectorized, loop) in cases.items():
        fast_step, slow_step = _Step(vectorized, {}, leaves), _Step(loop, {}, leaves)
        fast = measure(fast_step, repeats=repeats)
        slow = measure(slow_step, repeats=loop_repeats, warmup=0)
        difference = abs(fast_step.value - slow_step.value)
        results.append({"loss": name, "vectorized": fast, "loop": slow, "difference": difference})
    return results


#: The cases that run a native kernel on CPU: the Survival-CRPS (constant-hazard grids, log-normal, Weibull), the
#: next-visit code loss, the PMF likelihood (competing risks included), the piecewise-linear hazard's likelihood and
#: the multi-event (MENSA) likelihood of Weibull-mixture marginals.
NATIVE_CASES = (("crps", "logistic_hazard", {}), ("crps_right", "piecewise_constant_hazard", {}),
                ("crps", "lognormal", {}), ("crps", "weibull", {}), ("next_visit", "logistic_hazard", {}),
                ("nll", "pmf", {}), ("nll", "competing_pmf", {}), ("nll", "piecewise_linear_hazard", {}),
                ("nll", "multi_event", {}))


class _WithoutNative:
    """A step run with the native kernels switched off (their PyTorch implementation)."""

    def __init__(self, step: _Step) -> None:
        self.step = step

    def __call__(self) -> None:
        with _native.disabled():
            self.step()


def compare_native(batch_size: int, visits: int, bins: int, *, repeats: int, dtype: torch.dtype, seed: int
                   ) -> list[dict[str, Any]]:
    """The steps of :data:`NATIVE_CASES` with the native kernels and with their PyTorch implementation, run
    alternately on the same inputs (empty where the kernels are not loaded)."""
    if not _native.available():
        return []
    results = []
    for term, kind, options in NATIVE_CASES:
        native_step = term_step(term, kind, options, batch_size, visits, bins, dtype, seed)
        pytorch_step = _WithoutNative(term_step(term, kind, options, batch_size, visits, bins, dtype, seed))
        native, pytorch = measure_alternating(native_step, pytorch_step, repeats=repeats)
        difference = abs(native_step.value - pytorch_step.step.value) / max(abs(pytorch_step.step.value), 1e-30)
        results.append({"term": term, "head": kind, "native": native, "pytorch": pytorch, "difference": difference})
    return results


def _ms(timing: Timing) -> str:
    return f"{timing.median_ms:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench losses", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke setting (B=32, M=8, L=8, few runs)")
    parser.add_argument("--batch-size", type=int, default=None, help="patients B (default 512)")
    parser.add_argument("--visits", type=int, default=None, help="visits M (default 64)")
    parser.add_argument("--bins", type=int, default=None, help="grid bins L (default 32)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per loss (default 30)")
    parser.add_argument("--loop-repeats", type=int, default=1, help="timed runs of the loop baselines (default 1)")
    parser.add_argument("--terms", nargs="+", default=None, help="only these registered loss terms")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    quick = args.quick
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batch_size = args.batch_size or (32 if quick else 512)
    visits = args.visits or (8 if quick else 64)
    bins = args.bins or (8 if quick else 32)
    repeats = args.repeats or (3 if quick else 30)
    loop_repeats = args.loop_repeats
    dtype = getattr(torch, args.dtype)
    unknown = sorted(set(args.terms or []) - set(TERMS))
    if unknown:
        parser.error(f"unknown loss term(s) {unknown}; available: {', '.join(sorted(TERMS))}")

    print(f"Loss-term benchmark: B={batch_size}, M={visits}, L={bins}, {args.dtype}, forward+backward, "
          f"median of {repeats} runs after warm-up")
    print(environment_line())
    print()
    timed, reference = time_terms(batch_size, visits, bins, repeats=repeats, dtype=dtype, seed=args.seed,
                                  names=args.terms)
    target = TARGET_RATIO_TO_YARDSTICK
    rows = [[r["term"], r["head"], _ms(r["timing"]), f"{1e3 * r['timing'].best:.2f}",
             f"{1e3 * r['timing'].worst:.2f}", f"{r['ratio']:.2f}", "yes" if r["ratio"] <= target else "NO"]
            for r in timed]
    rows.append(["(yardstick)", "fused BCE [B, M, L]", _ms(reference), f"{1e3 * reference.best:.2f}",
                 f"{1e3 * reference.worst:.2f}", "1.00", ""])
    print(format_table(["term", "head", "median ms", "best ms", "worst ms", "× yardstick", f"≤ {target:g}×"], rows))
    above = [f"{r['term']} ({r['head']}) {r['ratio']:.1f}×" for r in timed if r["ratio"] > target]
    print(f"(the yardstick runs alternately with each term; its row gives the median, fastest and slowest of its "
          f"per-term medians)\n{len(above)} term(s) above {target:g}× the yardstick" + (": " + ", ".join(above) if above else ""))

    natively = compare_native(batch_size, visits, bins, repeats=repeats, dtype=dtype, seed=args.seed)
    if natively:
        print("\nThe native kernels against their PyTorch implementation (same inputs, run alternately)")
        print(format_table(
            ["term", "head", "native ms", "PyTorch ms", "speed-up", "relative value difference"],
            [[r["term"], r["head"], _ms(r["native"]), _ms(r["pytorch"]),
              f"{r['pytorch'].median / r['native'].median:.2f}x", f"{r['difference']:.1e}"] for r in natively],
        ))
    else:
        print(f"\n(no native comparison: {_native.status()})")

    compared = compare_with_loops(
        batch_size, visits, repeats=repeats, loop_repeats=loop_repeats, dtype=dtype, seed=args.seed
    )
    print(f"\nVectorized vs [catalogue] Python loops (B={batch_size}; loops timed on {loop_repeats} run(s))")
    print(format_table(
        ["loss", "vectorized ms", "loop ms", "speed-up", f">= {TARGET_RATIO:g}x", "|value difference|"],
        [[r["loss"], _ms(r["vectorized"]), _ms(r["loop"]), f"{r['loop'].median / r['vectorized'].median:.0f}x",
          "yes" if r["loop"].median / r["vectorized"].median >= TARGET_RATIO else "NO",
          f"{r['difference']:.1e}"] for r in compared],
    ))

    if args.json:
        report = {
            "setting": {"batch_size": batch_size, "visits": visits, "bins": bins, "dtype": args.dtype,
                        "repeats": repeats, "loop_repeats": loop_repeats, "environment": environment_line()},
            "terms": [{"term": r["term"], "head": r["head"], "median_ms": r["timing"].median_ms,
                       "ratio_to_yardstick": r["ratio"]} for r in timed],
            "yardstick_bce_ms": reference.median_ms,
            "native": [{"term": r["term"], "head": r["head"], "native_ms": r["native"].median_ms,
                        "pytorch_ms": r["pytorch"].median_ms, "relative_value_difference": r["difference"]}
                       for r in natively],
            "loops": {r["loss"]: {"vectorized_ms": r["vectorized"].median_ms, "loop_ms": r["loop"].median_ms,
                                  "speed_up": r["loop"].median / r["vectorized"].median,
                                  "value_difference": r["difference"]} for r in compared},
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
