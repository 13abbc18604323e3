"""Tables to padded tensors: validate + cohort + features + tensorize, against a per-patient pandas loop.

The cohort is :func:`ehrseq.datasets.simulate` with parameters chosen for about 20 visits per
patient with little spread (a fixed 5-year follow-up, regular visits that do not depend on health,
a rare event), 16 numeric features (20 % missing) and a ``codes`` column from a 2,000-code
vocabulary. The pipeline under test is the public API: ``build_cohort`` (validation included),
``FeaturePipeline.fit`` and ``transform`` (through ``tensorize``) and ``SequenceData.to_padded``
(the whole cohort as one padded batch). Validation alone is timed separately with
``ehrseq.data.validate`` (it is also part of ``build_cohort``).

The baseline is the per-patient approach: a pandas ``groupby`` over patients that sorts each
patient's visits, drops those at or after the outcome, standardises the numeric features, maps the
codes through a dict and writes the same padded arrays. It is timed on a subset of patients and
compared by visit rows per second (said so in the output).

Peak memory is the peak resident set size above the level before the pipeline, sampled every 5 ms,
compared with the bytes of the output tensors.

Before timing, ``--warm-memory`` GB are written and released: on virtual machines the first write to
guest memory that was never touched before is far slower than later ones (the host backs it
lazily), which would otherwise be charged to whichever stage happens to allocate first.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from ehrseq.bench._timing import environment_line, format_table
from ehrseq.data import FeaturePipeline, build_cohort, tensorize, validate
from ehrseq.data.batch import SequenceBatch
from ehrseq.datasets import simulate

NUMERIC = tuple(f"x{i:02d}" for i in range(16))


def simulated_tables(n_patients: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Visits (patient_id, time, x00..x15, codes) and outcomes of the benchmark cohort."""
    sim = simulate(
        n_patients, seed, n_numeric=len(NUMERIC), n_codes=2000, mean_visits=20.0, follow_up=(5.0, 5.0),
        censoring=0.0, baseline_hazard=0.02, intercept_sd=0.5, slope_sd=0.1, visit_health_effect=0.0,
        visit_regularity=20.0,
    )
    return sim.visits.select("patient_id", "time", *NUMERIC, "codes"), sim.outcomes


# ---------------------------------------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


class PeakMemory:
    """Peak RSS above the level at entry, sampled by a background thread (Linux ``/proc``)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = _rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def increase(self) -> int:
        return self.peak - self.baseline


# ---------------------------------------------------------------------------------------------- pipeline
def run_pipeline(visits: pl.DataFrame, outcomes: pl.DataFrame) -> tuple[SequenceBatch, dict[str, tuple[float, float]]]:
    """The public pipeline, stage by stage; returns the padded cohort and (wall, CPU) seconds per stage."""
    seconds: dict[str, tuple[float, float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        seconds[name] = (time.perf_counter() - start, time.process_time() - cpu)
        return out

    cohort = timed("cohort (validate + build)", lambda: build_cohort(visits, outcomes, numeric=NUMERIC))
    features = timed("features fit", lambda: FeaturePipeline().fit(cohort))
    data = timed("features transform + tensorize", lambda: tensorize(cohort, features))
    batch = timed("to_padded (whole cohort)", data.to_padded)
    return batch, seconds


# ---------------------------------------------------------------------------------------------- baseline
def pandas_loop(visits: pd.DataFrame, outcomes: pd.DataFrame, means: np.ndarray, stds: np.ndarray,
                vocabulary: dict[str, int]) -> dict[str, np.ndarray]:
    """Padded arrays built one patient at a time with a pandas groupby (the per-patient approach)."""
    outcome_time = outcomes.set_index("patient_id")["time"]
    groups = []
    for patient_id, group in visits.groupby("patient_id", sort=True):
        group = group.sort_values("time")
        groups.append((patient_id, group[group["time"] < outcome_time[patient_id]]))
    n_patients, n_numeric = len(groups), len(NUMERIC)
    max_visits = max(len(g) for _, g in groups)
    max_codes = max((len(c) for _, g in groups for c in g["codes"] if c is not None), default=0)
    numeric = np.zeros((n_patients, max_visits, n_numeric), dtype=np.float32)
    missing = np.zeros((n_patients, max_visits, n_numeric), dtype=bool)
    codes = np.zeros((n_patients, max_visits, max_codes), dtype=np.int64)
    elapsed = np.zeros((n_patients, max_visits), dtype=np.float32)
    remaining = np.zeros((n_patients, max_visits), dtype=np.float32)
    mask = np.zeros((n_patients, max_visits), dtype=bool)
    for i, (patient_id, group) in enumerate(groups):
        n = len(group)
        values = group[list(NUMERIC)].to_numpy(dtype=np.float64)
        is_missing = np.isnan(values)
        numeric[i, :n] = np.where(is_missing, 0.0, (values - means) / stds)
        missing[i, :n] = is_missing
        times = group["time"].to_numpy()
        elapsed[i, :n] = times - times[0]
        remaining[i, :n] = outcome_time[patient_id] - times
        mask[i, :n] = True
        for j, visit_codes in enumerate(group["codes"]):
            if visit_codes is not None:
                indices = [vocabulary.get(code, 1) for code in visit_codes]
                codes[i, j, : len(indices)] = indices
    return {"numeric": numeric, "missing": missing, "codes": codes, "elapsed": elapsed, "remaining": remaining,
            "mask": mask}


def _baseline_rate(visits: pl.DataFrame, outcomes: pl.DataFrame, n_patients: int) -> tuple[float, int]:
    """Visit rows per second of :func:`pandas_loop` on the first ``n_patients`` patients."""
    ids = outcomes.get_column("patient_id").head(n_patients).implode()
    sub_visits = visits.filter(pl.col("patient_id").is_in(ids))
    sub_outcomes = outcomes.filter(pl.col("patient_id").is_in(ids))
    cohort = build_cohort(sub_visits, sub_outcomes, numeric=NUMERIC)
    features = FeaturePipeline(time_features=False).fit(cohort)
    vocabulary = {code: i + 2 for i, code in enumerate(features.code_vocabulary)}
    visits_pd, outcomes_pd = sub_visits.to_pandas(), sub_outcomes.to_pandas()
    start = time.perf_counter()
    pandas_loop(visits_pd, outcomes_pd, np.asarray(features.means), features.stds, vocabulary)
    seconds = time.perf_counter() - start
    return sub_visits.height / seconds, sub_visits.height


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print stage timings, throughput, the pandas ratio and peak memory."""
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench tensorize", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200_000, help="patients in the simulated cohort")
    parser.add_argument("--baseline-patients", type=int, default=5_000, help="patients timed in the pandas loop")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs (the fastest is reported)")
    parser.add_argument("--quick", action="store_true", help="a small cohort, one run (smoke test)")
    parser.add_argument("--cache", type=Path, default=None, help="Parquet directory to reuse the simulated tables")
    parser.add_argument("--warm-memory", type=float, default=6.0, help="GB of memory touched before timing (0: none)")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.baseline_patients, args.repeats, args.warm_memory = 2_000, 200, 1, 0.0

    visits, outcomes = _tables(args.patients, args.cache)
    n_rows = visits.height
    print(f"ehrseq tensorize benchmark — {environment_line()}")
    print(f"cohort: {args.patients:,} patients, {n_rows:,} visit rows, {len(NUMERIC)} numeric features, "
          f"{visits.get_column('codes').list.len().sum():,} codes")

    if args.warm_memory > 0:
        np.ones(int(args.warm_memory * 1e9) // 8)
        print(f"memory warm-up: {args.warm_memory:g} GB written and released before timing")
    validate_seconds = (float("inf"), float("inf"))
    for _ in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()
        validate(visits, outcomes, numeric=NUMERIC)
        validate_seconds = min(validate_seconds, (time.perf_counter() - start, time.process_time() - cpu))

    best: dict[str, tuple[float, float]] | None = None
    peak = 0
    batch = None
    for _ in range(args.repeats):
        batch = None
        with PeakMemory() as memory:
            batch, seconds = run_pipeline(visits, outcomes)
        peak = max(peak, memory.increase)
        if best is None or _wall(seconds) < _wall(best):
            best = seconds
    assert best is not None and batch is not None
    total = (_wall(best), sum(cpu for _, cpu in best.values()))
    output_bytes = sum(t.numel() * t.element_size() for t in batch.tensors().values())

    stages = {"validate (alone; also inside cohort)": validate_seconds, **best, "end to end": total}
    rows = [[name, f"{wall:.3f}", f"{cpu:.3f}", f"{n_rows / wall:,.0f}"] for name, (wall, cpu) in stages.items()]
    print(format_table(["stage", "wall s", "CPU s", "visit rows/s (wall)"], rows))
    print(f"padded output: {list(batch.mask.shape)} (B, M), codes K = {batch.codes.shape[2]}, "
          f"{output_bytes / 1e6:,.0f} MB in {len(batch.tensors())} tensors")
    print(f"peak memory above start: {peak / 1e6:,.0f} MB = {peak / output_bytes:.2f} x the output tensors")

    baseline_rate, baseline_rows = _baseline_rate(visits, outcomes, args.baseline_patients)
    rate = n_rows / total[0]
    print(f"pandas per-patient loop, timed on {args.baseline_patients:,} patients ({baseline_rows:,} rows): "
          f"{baseline_rate:,.0f} visit rows/s")
    print(f"speed-up (rate ratio, end to end vs the loop): {rate / baseline_rate:.1f}x")


def _wall(seconds: dict[str, tuple[float, float]]) -> float:
    return sum(wall for wall, _ in seconds.values())


def _tables(n_patients: int, cache: Path | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    if cache is not None:
        visit_path, outcome_path = cache / f"visits_{n_patients}.parquet", cache / f"outcomes_{n_patients}.parquet"
        if visit_path.exists() and outcome_path.exists():
            return pl.read_parquet(visit_path), pl.read_parquet(outcome_path)
    visits, outcomes = simulated_tables(n_patients)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        visits.write_parquet(visit_path)
        outcomes.write_parquet(outcome_path)
    return visits, outcomes


if __name__ == "__main__":
    main()
