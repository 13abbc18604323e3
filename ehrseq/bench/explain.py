"""Explanations and bootstrap: attributions for 1,000 PBC patients at every visit; a 1,000-resample bootstrap of the landmark table vs a loop of metric recomputations.

Attributions: a GRU fitted on PBC (death) explains the risk within ``--horizon`` days at every visit
of 1,000 patients (the 312 PBC patients repeated under new ids), level and change views, with the
completeness gap of each. The yardstick, measured in the same run, is the encoder alone: a forward
and a backward pass of the model's recurrence over exactly the rows the integrals need (each
prediction's history up to its visit, once per integration point, in the same chunks), on random
embeddings — what any integrated-gradients method through this model must at least spend. Bootstrap: the landmark table of the model on a held-out quarter of PBC,
with percentile intervals from ``--resamples`` resamples of the test patients, computed with the
resamples as weights (:mod:`ehrseq.metrics.resampled`), timed as the whole bootstrapped table (its point
estimates included, so the per-resample time is an upper bound); the yardstick, measured in the same run, is
the plain loop that recomputes every window's metrics on each resampled test set
(``--loop-resamples`` of them, per-resample time compared).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl
import torch

from ehrseq.bench._timing import environment_line, format_table
from ehrseq.data import split_tables
from ehrseq.datasets import load_pbcseq
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import (
    Window,
    landmark_from_predictions,
    landmark_predictions,
    landmark_windows,
    outcomes_since_origin,
    window_metrics,
)
from ehrseq.explain import explain
from ehrseq.metrics.resampled import bootstrap_weights

LANDMARKS = (365.0, 730.0, 1095.0, 1460.0)
HORIZONS = (365.0, 1095.0)
#: Visit rows per forward pass of the yardstick (prediction × integration point × visit).
VISIT_ROWS = 1 << 16


def _replicated(visits: pl.DataFrame, outcomes: pl.DataFrame, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` patients: the PBC patients repeated under new ids (copy k adds k·10⁶ to the id)."""
    copies = -(-n // outcomes.height)
    ids = pl.concat([outcomes["patient_id"] + k * 1_000_000 for k in range(copies)]).head(n)
    many = pl.concat([visits.with_columns(pl.col("patient_id") + k * 1_000_000) for k in range(copies)])
    return many.filter(pl.col("patient_id").is_in(ids.implode())), ids


def _resampled_window(window: Window, index: np.ndarray) -> Window:
    return Window(window.landmark, window.horizon, window.patient_id.gather(index), window.time[index],
                  window.event_type[index], window.risk[index], window.ibs_times, window.incidence[index],
                  window.censoring)


def encoder_alone(model: DynamicSurvival, lengths: np.ndarray, steps: int) -> float:
    """Seconds of a forward and a backward pass of the fitted encoder's sequence model over ``steps``
    copies of histories of ``lengths`` visits (random embeddings), chunked as the attributions are."""
    encoder = model.model_.encoder.eval()
    width = encoder.output_dim
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for length in np.unique(lengths):
        rows = int((lengths == length).sum()) * steps
        per_call = max(1, VISIT_ROWS // int(length))
        for begin in range(0, rows, per_call):
            n = min(per_call, rows - begin)
            visits = torch.randn(n, int(length), width, generator=generator).requires_grad_()
            states = encoder.contextualize(visits, torch.ones(n, int(length), dtype=torch.bool))
            torch.autograd.grad(states[:, -1].sum(), visits)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench explain", description=__doc__)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--horizon", type=float, default=1095.0)
    parser.add_argument("--steps", type=int, default=64, help="integration points of the attributions")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--loop-resamples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(environment_line())

    visits, outcomes = load_pbcseq(outcome="death")
    train, test = split_tables(visits, outcomes, (0.75, 0.25), seed=0)
    start = time.perf_counter()
    model = DynamicSurvival(d_model=32, hidden=(32,), epochs=args.epochs, n_models=1, seed=0, progress=False).fit(*train)
    print(f"fitted a GRU(32) on {train[1].height} PBC patients in {time.perf_counter() - start:.1f} s")

    many, ids = _replicated(visits, outcomes, args.patients)
    start = time.perf_counter()
    explain(model, many.filter(pl.col("patient_id") == ids[0]), args.horizon, n_steps=args.steps)
    print(f"first call (imports Captum): {time.perf_counter() - start:.1f} s, not in the figures below")
    rows = []
    for view in ("level", "change"):
        start = time.perf_counter()
        result = explain(model, many, args.horizon, view=view, n_steps=args.steps)
        seconds = time.perf_counter() - start
        n = result.risks.height
        bound = encoder_alone(model, result.risks["visit"].to_numpy(), args.steps)
        rows.append([view, f"{ids.len():,}", f"{n:,}", f"{seconds:.1f}", f"{n / seconds:,.0f}",
                     f"{bound:.1f}", f"{100 * bound / seconds:.0f} %", f"{100 * result.relative_gap:.3f} %"])
    print(f"\nattributions of the risk within {args.horizon:g} days at every visit ({args.steps} integration points)")
    print(format_table(["view", "patients", "predictions", "seconds", "predictions/s", "encoder alone (s)",
                        "of the bound", "completeness gap"], rows))

    test_frame = outcomes_since_origin(test, model)
    train_frame = outcomes_since_origin(train, model)
    predictions = landmark_predictions(model, test[0], LANDMARKS, HORIZONS, outcomes=test[1])
    point = landmark_from_predictions(predictions, test_frame, train_frame, LANDMARKS, HORIZONS)
    start = time.perf_counter()  # the whole bootstrapped table: its point estimates and the resamples
    landmark_from_predictions(predictions, test_frame, train_frame, LANDMARKS, HORIZONS, ci=0.95,
                              n_bootstrap=args.resamples, seed=0)
    vector_seconds = time.perf_counter() - start

    windows = landmark_windows(predictions, test_frame, train_frame, LANDMARKS, HORIZONS)
    population = test_frame["patient_id"]
    weights = bootstrap_weights(population.len(), args.loop_resamples, 1)
    position = {pid: i for i, pid in enumerate(population.to_list())}
    start = time.perf_counter()
    for counts in weights.astype(int):
        for window in windows:
            rows_of = np.array([position[p] for p in window.patient_id.to_list()])
            index = np.repeat(np.arange(window.n), counts[rows_of])
            window_metrics(_resampled_window(window, index), 1, 10)
    loop_seconds = time.perf_counter() - start
    per_vector = vector_seconds / args.resamples
    per_loop = loop_seconds / args.loop_resamples
    print(f"\nbootstrap of the landmark table: {population.len()} test patients, {point.height} windows, "
          f"C-index, Uno's C, AUC, Brier, IBS")
    print(format_table(["method", "resamples", "seconds", "ms per resample"], [
        ["resamples as weights (ehrseq)", f"{args.resamples:,}", f"{vector_seconds:.2f}", f"{1e3 * per_vector:.2f}"],
        ["loop of metric recomputations", f"{args.loop_resamples:,}", f"{loop_seconds:.2f}", f"{1e3 * per_loop:.2f}"],
    ]))
    print(f"speed-up per resample: {per_loop / per_vector:.1f}x "
          f"(the loop would take {per_loop * args.resamples:.1f} s for {args.resamples:,} resamples)")


if __name__ == "__main__":
    main()
