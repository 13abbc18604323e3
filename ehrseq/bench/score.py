"""Batch scoring: patients per second and peak memory of ``ehrseq.score`` on Parquet shards, by cohort size.

The cohort is :func:`ehrseq.datasets.simulate` with about 20 visits per patient (a fixed 5-year
follow-up, regular visits that do not depend on health, a rare event; 8 numeric features with 20 %
missing, 2 categorical features and a ``codes`` column from a 50-code vocabulary), generated in
chunks of ``--shard-patients`` patients (seeds 0, 1, …; patient ids offset per chunk) and written as
one Parquet shard per chunk, so that generating a million patients never holds them all in memory.
The smaller cohort of the comparison is the first shards of the larger one.

The model is a GRU (``d_model`` 64) with a logistic-hazard head (20-bin grid), trained for one epoch
on 2,000 other simulated patients (the scoring speed does not depend on how well it is trained). Each
run scores every patient at the last visit for three horizons (365, 730 and 1,825 days) in a fresh
spawned process, with ``--workers`` shard processes (0: the scoring process itself); peak resident
memory (``VmHWM``) is read in that process and, for the workers, from their resource usage. CPU
seconds are those of the scoring process and its workers.

The baseline is the in-memory estimator API on one shard: ``predict_risk``, ``predict_survival`` and
``predict_median`` on a DataFrame holding the shard, which gives the same numbers as one pass of the
scorer but materialises the whole table and its predictions.

The yardstick is the model's GRU layer alone, run on random inputs of the cohort's mean length in
the same batches and threads: the recurrence that scoring cannot skip, whatever the data handling.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ehrseq.bench._timing import environment_line, format_table
from ehrseq.datasets import simulate

HORIZONS = (365.0, 730.0, 1825.0)
_SIMULATION = dict(mean_visits=20.0, follow_up=(5.0, 5.0), censoring=0.0, baseline_hazard=0.02, intercept_sd=0.5,
                   slope_sd=0.1, visit_health_effect=0.0, visit_regularity=20.0)


def simulated_patients(n_patients: int, seed: int, first_id: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Visits and outcomes of ``n_patients`` benchmark patients with ids ``first_id, first_id + 1, …``."""
    sim = simulate(n_patients, seed, **_SIMULATION)
    shift = pl.col("patient_id") + first_id
    return sim.visits.with_columns(shift), sim.outcomes.with_columns(shift)


def write_shards(directory: Path, n_patients: int, shard_patients: int) -> list[Path]:
    """Simulated visit shards of ``shard_patients`` patients each (reused when already written)."""
    directory.mkdir(parents=True, exist_ok=True)
    n_shards = -(-n_patients // shard_patients)
    paths = [directory / f"shard-{i:05d}.parquet" for i in range(n_shards)]
    for i, path in enumerate(paths):
        if path.exists():
            continue
        size = min(shard_patients, n_patients - i * shard_patients)
        visits, _ = simulated_patients(size, seed=i, first_id=i * shard_patients)
        partial = path.with_name(f".{path.name}.tmp")
        visits.write_parquet(partial)
        partial.rename(path)
    return paths


def train_model(directory: Path, n_patients: int = 2_000) -> Path:
    """A GRU(64) logistic-hazard model trained for one epoch, saved under ``directory`` (reused)."""
    from ehrseq.estimator import DynamicSurvival

    path = directory / f"model-gru64-{n_patients}"
    if not path.exists():
        visits, outcomes = simulated_patients(n_patients, seed=10_000)
        model = DynamicSurvival(encoder="gru", head="logistic_hazard", grid=20, d_model=64, hidden=(64,), epochs=1,
                                batch_size=256, progress=False, device="cpu")
        model.fit(visits, outcomes, validation=None).save(path)
    return path


# ---------------------------------------------------------------------------------------------- measured runs
def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure_run(model: str, shards: list[str], out_dir: str, threads: int, workers: int, batch_size: int,
                patients_per_chunk: int) -> dict[str, Any]:
    """Score ``shards`` (in a fresh process); return wall and CPU seconds, peak RSS and the manifest."""
    from ehrseq.scoring import score

    torch.set_num_threads(threads)
    cpu = _cpu_seconds(resource.RUSAGE_SELF)
    started = time.perf_counter()
    summary = score(model, shards, out_dir, list(HORIZONS), batch_size=batch_size, patients_per_chunk=patients_per_chunk,
                    num_workers=workers, progress=False)
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "cpu": _cpu_seconds(resource.RUSAGE_SELF) - cpu + _cpu_seconds(resource.RUSAGE_CHILDREN),
        "peak_rss": _peak_rss_bytes(),
        "worker_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "manifest": summary.manifest,
    }


def _in_child(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a fresh spawned process (its peak memory is its own)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _in_process(fn: Any, *args: Any) -> Any:
    return fn(*args)


def baseline_rate(model: str, shard: Path, threads: int) -> tuple[float, int]:
    """Patients per second of the in-memory estimator API on one shard."""
    import ehrseq

    torch.set_num_threads(threads)
    estimator = ehrseq.load(model)
    visits = pl.read_parquet(shard)
    started = time.perf_counter()
    estimator.predict_risk(visits, list(HORIZONS), batch_size=1024)
    estimator.predict_survival(visits, list(HORIZONS), batch_size=1024)
    estimator.predict_median(visits, batch_size=1024)
    n = visits.get_column("patient_id").n_unique()
    return n / (time.perf_counter() - started), n


def recurrence_rate(model: str, threads: int, visits: int, batch_size: int, n_patients: int = 25_000) -> float:
    """Patients per second of the model's recurrent layer alone: its forward pass on random visit
    embeddings ``[batch_size, visits, d_model]``, batch after batch, for ``n_patients`` patients. No
    data handling can make scoring faster than this (a yardstick, like the losses' fused BCE)."""
    import ehrseq

    torch.set_num_threads(threads)
    rnn = ehrseq.load(model).model_.encoder.rnn.eval()
    inputs = torch.randn(batch_size, visits, rnn.input_size)
    batches = -(-n_patients // batch_size)
    with torch.inference_mode():
        rnn(inputs)
        started = time.perf_counter()
        for _ in range(batches):
            rnn(inputs)
    return batches * batch_size / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Generate the shards, train the model, score two cohort sizes and print speed and memory."""
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench score", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000, help="patients of the larger cohort")
    parser.add_argument("--compare", type=int, default=100_000, help="patients of the smaller cohort (0: none)")
    parser.add_argument("--shard-patients", type=int, default=25_000, help="patients per input shard")
    parser.add_argument("--workers", type=int, default=2, help="shard processes (0: score in the scoring process)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the scoring process (default: 1 with workers, else all)")
    parser.add_argument("--batch-size", type=int, default=1024, help="patients per forward pass")
    parser.add_argument("--patients-per-chunk", type=int, default=25_000, help="patients read and predicted at a time")
    parser.add_argument("--data", type=Path, default=None, help="folder to keep (and reuse) the shards and the model")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny cohort scored in this process, no baseline (smoke test)")
    args = parser.parse_args(argv)
    train_patients = 2_000
    if args.quick:
        args.patients, args.compare, args.shard_patients, args.workers = 400, 200, 100, 0
        args.patients_per_chunk, train_patients = 50, 100
    threads = args.threads or (1 if args.workers else torch.get_num_threads())

    scratch = Path(tempfile.mkdtemp(prefix="ehrseq-bench-score-"))
    data = args.data or scratch
    try:
        _run(args, data, scratch, threads, train_patients)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, data: Path, scratch: Path, threads: int, train_patients: int) -> None:
    print(f"ehrseq scoring benchmark — {environment_line()}, {multiprocessing.cpu_count()} CPU core(s)")
    started = time.perf_counter()
    shard_dir = data / f"visits-{args.shard_patients}"
    paths = write_shards(shard_dir, args.patients, args.shard_patients)
    model = train_model(data, train_patients)
    print(f"data: {len(paths)} shards of {args.shard_patients:,} simulated patients (~20 visits each) in {shard_dir} "
          f"({time.perf_counter() - started:.0f} s to generate or reuse, with the model)")
    print(f"model: GRU(64) + logistic hazard (20 bins), trained 1 epoch on {train_patients:,} other patients; "
          f"{args.workers} worker process(es), {threads} torch thread(s) per process, batch {args.batch_size}, "
          f"{args.patients_per_chunk:,} patients per chunk; horizons {', '.join(f'{h:g}' for h in HORIZONS)} days")

    sizes = sorted({n for n in (args.compare, args.patients) if n > 0})
    call = _in_process if args.quick else _in_child
    rows, stages = [], {}
    for n in sizes:
        selected = [str(p) for p in paths[: -(-n // args.shard_patients)]]
        out = scratch / f"predictions-{n}"
        result = call(measure_run, str(model), selected, str(out), threads, args.workers, args.batch_size,
                           args.patients_per_chunk)
        totals = result["manifest"]["totals"]
        patients = totals["patients_scored"]
        rows.append([f"{patients:,}", f"{totals['rows_in']:,}", len(selected), f"{result['wall']:.1f}",
                     f"{patients / result['wall']:,.0f}", f"{result['cpu']:.1f}", f"{patients / result['cpu']:,.0f}",
                     f"{result['peak_rss'] / 2**20:,.0f}", f"{result['worker_peak_rss'] / 2**20:,.0f}"])
        stages = {name: sum(r["stage_seconds"][name] for r in result["manifest"]["shards"].values())
                  for name in ("read", "cohort", "predict", "write")}
        shutil.rmtree(out, ignore_errors=True)
    print(format_table(["patients", "visit rows", "shards", "wall s", "patients/s", "CPU s", "patients/CPU-s",
                        "peak RSS MiB", "worker peak MiB"], rows))
    spent = sum(stages.values())
    print("time per stage, largest run (seconds summed over shards): "
          + ", ".join(f"{name} {value:.1f} ({100 * value / spent:.0f} %)" for name, value in stages.items()))

    visits = round(totals["rows_in"] / max(totals["patients_in"], 1))
    alone = call(recurrence_rate, str(model), threads, visits, args.batch_size, 200 if args.quick else 25_000)
    processes = max(args.workers, 1)
    print(f"yardstick: the GRU layer alone ([{args.batch_size}, {visits}, 64] random inputs, {threads} thread(s)) runs "
          f"{alone:,.0f} patients/s per process, so at most {alone * processes:,.0f} patients/s with {processes} "
          f"process(es); the scorer reaches {scored_rate(rows) / (alone * processes):.0%} of that")
    if args.quick:
        print("(--quick: scored in the benchmark process, so peak RSS includes the data generation; no baseline)")
        return
    rate, n = _in_child(baseline_rate, str(model), paths[0], threads)
    print(f"baseline: estimator predict_risk + predict_survival + predict_median in memory on one shard "
          f"({n:,} patients): {rate:,.0f} patients/s")
    print(f"scorer vs baseline (patients/s, largest run): {scored_rate(rows) / rate:.1f}x")


def scored_rate(rows: list[list[Any]]) -> float:
    """Patients per second of the largest run, from the printed table's rows."""
    return float(rows[-1][4].replace(",", ""))
