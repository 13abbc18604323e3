"""Training throughput: one causal pass over all visit prefixes vs re-encoding every prefix; scoring throughput.

A dynamic model must predict at every visit m from the history ≤ m. ehrseq encodes each patient once with
a causal encoder and reads one state per visit (``[B, M, D]``); the prefix-augmentation approach
(monograph §6.2.3) instead turns a patient with M visits into M training sequences (visits 1..m) and
encodes each separately, keeping the last state. Both produce exactly the same per-visit predictions
for a causal encoder. This benchmark times a training step (forward + loss + backward) per visit for
both, on the same patients with M visits each, in the same run, and then times end-to-end scoring
(validation, cohort, features, tensors, model) of simulated patients with a GRU(64) at the last visit.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import polars as pl
import torch

from ehrseq.bench._timing import environment_line, format_table, measure
from ehrseq.data import SequenceBatch
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig
from ehrseq.objective import Objective, ObjectiveConfig

GRID = tuple(float(x) for x in np.linspace(0.0, 3650.0, 21))


def synthetic_batch(batch: int, visits: int, n_numeric: int, vocab: int, codes: int, seed: int) -> SequenceBatch:
    """``batch`` patients with exactly ``visits`` visits each and survival targets on :data:`GRID`."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.rand(batch, visits, generator=g) * 120 + 1
    gaps[:, 0] = 0
    time_ = gaps.cumsum(1)
    outcome = time_[:, -1] + torch.rand(batch, generator=g) * 1000 + 1
    remaining = outcome[:, None] - time_
    bins = (torch.bucketize(remaining, torch.tensor(GRID)) - 1).clamp(0, len(GRID) - 1)
    return SequenceBatch(
        numeric=torch.randn(batch, visits, n_numeric, generator=g),
        numeric_missing=torch.rand(batch, visits, n_numeric, generator=g) < 0.2,
        categorical=torch.zeros(batch, visits, 0, dtype=torch.long),
        codes=torch.randint(2, vocab, (batch, visits, codes), generator=g),
        time=time_, gap=gaps, mask=torch.ones(batch, visits, dtype=torch.bool),
        patient_index=torch.arange(batch), remaining=remaining,
        event=(torch.rand(batch, generator=g) < 0.5).long(), event_visit=torch.full((batch,), visits - 1),
        bin=bins, upper=torch.full((batch, visits), float("inf")), weight=torch.ones(batch),
    )


def prefixes(batch: SequenceBatch) -> SequenceBatch:
    """Prefix augmentation: patient b with M visits → M sequences (visits 0..m), right-padded to M.

    Targets of prefix m are those of visit m; its last real visit is m (``event_visit``), so that a
    loss on the prefix's last state scores the same prediction as the causal pass at visit m.
    """
    b, m = batch.mask.shape
    keep = torch.arange(m)[None, :] <= torch.arange(m)[:, None]  # [prefix, visit]
    mask = keep.repeat(b, 1)  # [B·M, M]

    def expand(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(m, dim=0)

    per_visit = lambda x: x.reshape(b * m, *x.shape[2:])  # noqa: E731 - target of prefix (b, m) is visit m
    return SequenceBatch(
        numeric=expand(batch.numeric), numeric_missing=expand(batch.numeric_missing),
        categorical=expand(batch.categorical), codes=expand(batch.codes), time=expand(batch.time),
        gap=expand(batch.gap), mask=mask, patient_index=torch.arange(b * m),
        remaining=per_visit(batch.remaining).unsqueeze(1).expand(b * m, m).contiguous(),
        event=expand(batch.event), event_visit=torch.arange(m).repeat(b),
        bin=per_visit(batch.bin).unsqueeze(1).expand(b * m, m).contiguous(),
        upper=expand(batch.upper), weight=expand(batch.weight),
    )


def build(kind: str, n_numeric: int, vocab: int) -> tuple[DynamicSurvivalModel, Objective]:
    torch.manual_seed(0)
    config = ModelConfig(
        EncoderConfig(kind=kind, n_numeric=n_numeric, code_vocab_size=vocab, d_model=64, n_layers=1, dropout=0.0),
        HeadConfig(kind="logistic_hazard", grid=GRID, hidden=(64,), dropout=0.0),
    )
    return DynamicSurvivalModel(config), Objective(ObjectiveConfig.parse("nll"), config)


def causal_step(model, objective, batch: SequenceBatch) -> None:
    model.zero_grad(set_to_none=True)
    objective(model(batch), batch).total.backward()


def prefix_step(model, objective, augmented: SequenceBatch, chunk: int) -> None:
    """One pass over all prefixes in chunks of ``chunk`` sequences; only each prefix's last state is scored."""
    model.zero_grad(set_to_none=True)
    n, m = augmented.mask.shape
    for start in range(0, n, chunk):
        index = torch.arange(start, min(start + chunk, n))
        part = SequenceBatch(**{k: v[index] for k, v in augmented.tensors().items()})
        out = model(part)
        last = part.lengths - 1
        rows = torch.arange(index.numel())
        only_last = torch.zeros_like(part.mask)
        only_last[rows, last] = True
        # the loss of the prefix's last visit only: mask out the earlier (re-encoded) visits
        objective(out, part.replace(mask=only_last)).total.backward()


def scoring_throughput(patients: int, seed: int) -> tuple[float, float, int]:
    """(seconds, patients/s, visit rows) of end-to-end ``predict_risk`` at the last visit with a GRU(64)."""
    from ehrseq.datasets import simulate
    from ehrseq.estimator import DynamicSurvival

    sim = simulate(patients, seed=seed)
    sample = sim.outcomes["patient_id"].head(2000).implode()
    model = DynamicSurvival(encoder="gru", d_model=64, epochs=1, progress=False, device="cpu")
    model.fit(sim.visits.filter(pl.col("patient_id").is_in(sample)), sim.outcomes.filter(pl.col("patient_id").is_in(sample)))
    started = time.perf_counter()
    with torch.inference_mode():
        risk = model.predict_risk(sim.visits, 365.0, batch_size=1024)
    seconds = time.perf_counter() - started
    assert risk.height == patients
    return seconds, patients / seconds, sim.visits.height


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=64, help="patients per training batch (default 64)")
    parser.add_argument("--visits", type=int, default=50, help="visits per patient M (default 50)")
    parser.add_argument("--chunk", type=int, default=512, help="prefix sequences per forward pass in the baseline")
    parser.add_argument("--score-patients", type=int, default=100_000, help="patients for the scoring throughput")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.visits, args.repeats, args.score_patients = 8, 10, 2, 2_000
    n_numeric, vocab, codes = 16, 500, 4
    batch = synthetic_batch(args.patients, args.visits, n_numeric, vocab, codes, seed=0)
    augmented = prefixes(batch)
    visits = args.patients * args.visits
    print(f"ehrseq.bench train: {args.patients} patients x {args.visits} visits, {n_numeric} numeric features, "
          f"{codes} codes per visit; {environment_line()}")
    rows = []
    for kind in ("gru", "transformer"):
        model, objective = build(kind, n_numeric, vocab)
        causal = measure(partial(causal_step, model, objective, batch), repeats=args.repeats, warmup=1)
        prefix = measure(partial(prefix_step, model, objective, augmented, args.chunk),
                         repeats=max(1, args.repeats // 2), warmup=1)
        rows.append((kind, f"{visits / causal.best:,.0f}", f"{visits / prefix.best:,.0f}",
                     f"{prefix.best / causal.best:.1f}x"))
    print("training step (forward + NLL + backward) per visit prediction, best run:")
    print(format_table(("encoder", "causal pass visits/s", "prefix re-encoding visits/s", "speed-up"), rows))
    seconds, rate, rows_in = scoring_throughput(args.score_patients, seed=1)
    print(f"scoring: GRU(64) + logistic hazard, {args.score_patients:,} simulated patients ({rows_in:,} visits), "
          f"risk at the last visit end to end (validate, cohort, features, tensors, model): "
          f"{seconds:.1f} s = {rate:,.0f} patients/s")


if __name__ == "__main__":
    main()
