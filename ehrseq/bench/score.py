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
spawned process, by three engines, every process on ``--threads`` torch threads (default 1) and as many Polars
threads (``POLARS_MAX_THREADS``, unless set already):

* **in-process**: ``ehrseq.score`` in the scoring process itself;
* **Dask**: ``ehrseq.score(num_workers=W)``, a ``LocalCluster`` of W worker processes started by the run
  (its start-up is part of the wall time);
* **process pool**: the engine ``ehrseq.score`` used before Dask, for comparison —
  ``ehrseq.scoring.plan``, a ``concurrent.futures`` pool of W spawned processes that load the model
  at start-up, ``score_shard`` per shard, records in completion order.

Peak resident memory (``VmHWM``) is read in the scoring process, and for the workers from the resource
usage of its finished descendants (the largest worker). CPU seconds are those of the scoring process
and all its descendants.

The baseline is the in-memory estimator API on one shard: ``predict_risk``, ``predict_survival`` and
``predict_median`` on a DataFrame holding the shard, which gives the same numbers as one pass of the
scorer but materialises the whole table and its predictions.

The yardstick is the model's GRU layer alone, run on random inputs of the cohort's mean length in
the same batches and threads: the recurrence that scoring cannot skip, whatever the data handling.
``nn.GRU`` is also timed in each run's own scoring process right after the run (the machine's speed
drifts over a benchmark of minutes; the shares against this adjacent yardstick drift least).
It is timed two ways, batch after batch in alternation (so that both see the same load of the
machine): as ``nn.GRU`` (the layer as torch runs it) and as the scorer runs it
(:func:`ehrseq.models.encoders.recurrent.gru_inference`, the same states, faster). The second is
the stricter bound: no data handling can make scoring faster than its own recurrence. It is
measured per process; W processes allow W times as much. The share of it a run reaches is given by
wall-clock time (patients/s over W times the yardstick's) and by CPU time (patients per CPU-second
of all the run's processes — scheduler, nannies and driver included — over the yardstick's per
CPU-second of its process): on a machine shared with other work, the wall-clock shares fall with the
load of the moment, the CPU-time shares much less.

A third measurement, timed in turn with those two, splits the gap between the scorer and the recurrence: the
model alone, its forward pass as the scorer makes it (visit embedding, recurrence, head at the last visit) on
the batches the scorer builds from the first shard, built before the timing. Its share of ``nn.GRU`` is what
scoring would reach if reading, encoding, batching and writing cost nothing; the run's share of it is what the
data path leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ehrseq.bench._timing import environment_line, format_table
from ehrseq.data._parallel import POLARS_THREADS
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
                                n_models=1, batch_size=256, progress=False, device="cpu")
        model.fit(visits, outcomes, validation=None).save(path)
    return path


# ---------------------------------------------------------------------------------------------- measured runs
ENGINES = ("in-process", "dask", "process pool")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _load_in_worker(threads: int, model: str) -> None:
    """Process-pool worker start-up: its torch threads, and the model loaded into the process cache."""
    from ehrseq.scoring._model import resolve_model

    torch.set_num_threads(threads)
    resolve_model(model)


def pool_score(model: str, shards: list[str], out_dir: str, workers: int, threads: int, batch_size: int,
               patients_per_chunk: int) -> dict[str, Any]:
    """The former engine of ``ehrseq.score(num_workers=W)``: a plan, a pool of ``workers`` spawned
    processes that load the model at start-up, ``score_shard`` per shard; returns the manifest."""
    from ehrseq.scoring import plan, score_shard

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_load_in_worker,
                             initargs=(threads, model)) as pool:
        for _ in range(workers):  # start the processes while the driver plans
            pool.submit(int)
        run = plan(model, shards, out_dir, list(HORIZONS), batch_size=batch_size,
                   patients_per_chunk=patients_per_chunk)
        work = functools.partial(score_shard, model, out_dir=out_dir, **run.options)
        for future in as_completed([pool.submit(work, shard) for shard in run.pending]):
            run.record(future.result())
    return run.manifest


def measure_run(engine: str, model: str, shards: list[str], out_dir: str, threads: int, workers: int,
                batch_size: int, patients_per_chunk: int) -> dict[str, Any]:
    """Score ``shards`` with ``engine`` (in a fresh process); return wall and CPU seconds, peak RSS of the
    scoring process and of its largest worker, and the manifest."""
    from ehrseq.scoring import score

    torch.set_num_threads(threads)
    cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if engine == "process pool":
        manifest = pool_score(model, shards, out_dir, workers, threads, batch_size, patients_per_chunk)
    else:
        manifest = score(model, shards, out_dir, list(HORIZONS), batch_size=batch_size,
                         patients_per_chunk=patients_per_chunk, num_workers=workers if engine == "dask" else 0,
                         progress=False).manifest
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    peak_rss = _peak_rss_bytes()
    totals = manifest["totals"]
    visits = round(totals["rows_in"] / max(totals["patients_in"], 1))
    adjacent = recurrence_rate(model, threads, visits, batch_size, min(25_000, totals["patients_in"]))["nn.GRU"]
    return {
        "wall": wall,
        "cpu": cpu,
        "peak_rss": peak_rss,
        "worker_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 if engine != "in-process" else 0,
        "manifest": manifest,
        "adjacent": adjacent,
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


def prepared_batches(estimator: Any, shard: Path, batch_size: int) -> list[tuple[Any, tuple[torch.Tensor, torch.Tensor]]]:
    """The batches the scorer builds from ``shard`` (its cohort, encoded, and
    :func:`ehrseq.predict.length_ordered_batches`), each with the index of its patients' last visits
    (:func:`ehrseq.predict.select_visits`)."""
    from ehrseq.data import tensorize
    from ehrseq.predict import length_ordered_batches, select_visits

    data = tensorize(estimator.cohort(pl.read_parquet(shard)), estimator.features_, None)
    batches = []
    for _, batch in length_ordered_batches(data, batch_size):
        rows, positions = select_visits(batch.mask.numpy(), "last")
        batches.append((batch, (torch.as_tensor(rows), torch.as_tensor(positions))))
    return batches


def recurrence_rate(model: str, threads: int, visits: int, batch_size: int,
                    n_patients: int = 25_000, shard: Path | None = None) -> dict[str, dict[str, float]]:
    """Patients per second of the model's recurrent layer alone, ``{"nn.GRU": …, "gru_inference": …}``,
    each ``{"wall": …, "cpu": …}`` (per second of wall-clock time and of CPU time of the process): its
    forward pass on random visit embeddings ``[batch_size, visits, d_model]`` as ``nn.GRU`` and as the
    scorer's :func:`~ehrseq.models.encoders.recurrent.gru_inference`, one batch of each in turn, for
    ``n_patients`` patients each. No data handling can make scoring faster than this (a yardstick,
    like the losses' fused BCE).

    With a ``shard``, a third entry ``"model"``: the whole model's forward pass as the scorer makes it (visit
    embedding, recurrence, head at the last visit: :func:`ehrseq.predict.distribution_at`) on the batches the
    scorer builds from the shard (:func:`prepared_batches`, built before the timing), in turn with the other
    two: what scoring would reach if reading, encoding, batching and writing cost nothing."""
    import ehrseq
    from ehrseq.models.encoders.recurrent import gru_inference
    from ehrseq.predict import distribution_at

    torch.set_num_threads(threads)
    estimator = ehrseq.load(model)
    net = estimator.model_.eval()
    rnn = net.encoder.rnn
    inputs = torch.randn(batch_size, visits, rnn.input_size)
    runs = {"nn.GRU": lambda _: rnn(inputs), "gru_inference": lambda _: gru_inference(rnn, inputs)}
    prepared = prepared_batches(estimator, shard, batch_size) if shard is not None else []
    if prepared:
        runs["model"] = lambda i: distribution_at(net, prepared[i][0], prepared[i][1],
                                                  torch.zeros(len(prepared[i][1][0])), check_values=False)
    spent = {name: {"wall": 0.0, "cpu": 0.0} for name in runs}
    scored = dict.fromkeys(runs, 0)
    batches = -(-n_patients // batch_size)
    with torch.inference_mode():
        for run in runs.values():
            run(0)
        for step in range(batches):
            for name, run in runs.items():
                i = step % len(prepared) if name == "model" else 0
                wall, cpu = time.perf_counter(), time.process_time()
                run(i)
                spent[name]["wall"] += time.perf_counter() - wall
                spent[name]["cpu"] += time.process_time() - cpu
                scored[name] += len(prepared[i][1][0]) if name == "model" else batch_size
    return {name: {clock: scored[name] / seconds for clock, seconds in clocks.items()}
            for name, clocks in spent.items()}


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Generate the shards, train the model, score two cohort sizes with each engine and print speed and memory."""
    parser = argparse.ArgumentParser(prog="python -m ehrseq.bench score", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000, help="patients of the larger cohort")
    parser.add_argument("--compare", type=int, default=100_000, help="patients of the smaller cohort (0: none)")
    parser.add_argument("--shard-patients", type=int, default=25_000, help="patients per input shard")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the Dask and pool engines")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process (default: 1)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="engines to run")
    parser.add_argument("--batch-size", type=int, default=1024, help="patients per forward pass")
    parser.add_argument("--patients-per-chunk", type=int, default=25_000, help="patients read and predicted at a time")
    parser.add_argument("--data", type=Path, default=None, help="folder to keep (and reuse) the shards and the model")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny cohort scored from this process, no baseline (smoke test)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be >= 1")
    train_patients = 2_000
    if args.quick:
        args.patients, args.compare, args.shard_patients = 400, 200, 100
        args.patients_per_chunk, train_patients = 50, 100

    scratch = Path(tempfile.mkdtemp(prefix="ehrseq-bench-score-"))
    data = args.data or scratch
    try:
        with contextlib.nullcontext() if args.quick else _polars_threads(args.threads):
            _run(args, data, scratch, train_patients)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _polars_threads(threads: int) -> Iterator[None]:
    """Within the block, the processes spawned get ``POLARS_MAX_THREADS`` = ``threads`` (unless it is set already):
    every process of the benchmark then runs on ``threads`` threads, its reading and encoding as its torch work."""
    if POLARS_THREADS in os.environ:
        yield
        return
    os.environ[POLARS_THREADS] = str(threads)
    try:
        yield
    finally:
        del os.environ[POLARS_THREADS]


def _run(args: argparse.Namespace, data: Path, scratch: Path, train_patients: int) -> None:
    print(f"ehrseq scoring benchmark — {environment_line()}, {multiprocessing.cpu_count()} CPU core(s)")
    started = time.perf_counter()
    shard_dir = data / f"visits-{args.shard_patients}"
    paths = write_shards(shard_dir, args.patients, args.shard_patients)
    model = train_model(data, train_patients)
    print(f"data: {len(paths)} shards of {args.shard_patients:,} simulated patients (~20 visits each) in {shard_dir} "
          f"({time.perf_counter() - started:.0f} s to generate or reuse, with the model)")
    print(f"model: GRU(64) + logistic hazard (20 bins), trained 1 epoch on {train_patients:,} other patients; "
          f"{args.threads} torch thread(s) per process and {os.environ.get(POLARS_THREADS, 'all cores as')} Polars "
          f"thread(s), batch {args.batch_size}, {args.patients_per_chunk:,} patients "
          f"per chunk; horizons {', '.join(f'{h:g}' for h in HORIZONS)} days")

    sizes = sorted({n for n in (args.compare, args.patients) if n > 0})
    call = _in_process if args.quick else _in_child
    rows, results = [], {}
    for n in sizes:
        selected = [str(p) for p in paths[: -(-n // args.shard_patients)]]
        for engine in args.engines:
            out = scratch / f"predictions-{n}-{engine.replace(' ', '-')}"
            workers = 0 if engine == "in-process" else args.workers
            result = call(measure_run, engine, str(model), selected, str(out), args.threads, workers,
                          args.batch_size, args.patients_per_chunk)
            shutil.rmtree(out, ignore_errors=True)
            results[n, engine] = result
            totals = result["manifest"]["totals"]
            patients = totals["patients_scored"]
            label = engine if engine == "in-process" else f"{engine}, {workers} workers"
            rows.append([f"{patients:,}", label, f"{totals['rows_in']:,}", len(selected), f"{result['wall']:.1f}",
                         f"{patients / result['wall']:,.0f}", f"{result['cpu']:.1f}",
                         f"{patients / result['cpu']:,.0f}", f"{result['peak_rss'] / 2**20:,.0f}",
                         f"{result['worker_peak_rss'] / 2**20:,.0f}" if workers else "-"])
    print(format_table(["patients", "engine", "visit rows", "shards", "wall s", "patients/s", "CPU s",
                        "patients/CPU-s", "peak RSS MiB", "worker peak MiB"], rows))
    largest = sizes[-1]
    first = results[largest, args.engines[0]]
    stages = {name: sum(r["stage_seconds"][name] for r in first["manifest"]["shards"].values())
              for name in ("read", "cohort", "predict", "write")}
    spent = sum(stages.values())
    print(f"time per stage, {args.engines[0]}, {largest:,} patients (seconds summed over shards): "
          + ", ".join(f"{name} {value:.1f} ({100 * value / spent:.0f} %)" for name, value in stages.items()))

    def rate(n: int, engine: str) -> float:
        result = results[n, engine]
        return result["manifest"]["totals"]["patients_scored"] / result["wall"]

    if {"dask", "process pool"} <= set(args.engines):
        print(f"Dask vs process pool, {args.workers} workers: "
              + ", ".join(f"{rate(n, 'dask') / rate(n, 'process pool'):.2f}x at {n:,} patients" for n in sizes))
    if len(sizes) > 1:
        print("memory from {:,} to {:,} patients: ".format(*sizes[::len(sizes) - 1]) + "; ".join(
            f"{engine} {results[sizes[0], engine]['peak_rss'] / 2**20:,.0f} -> "
            f"{results[largest, engine]['peak_rss'] / 2**20:,.0f} MiB"
            + (f" (workers {results[sizes[0], engine]['worker_peak_rss'] / 2**20:,.0f} -> "
               f"{results[largest, engine]['worker_peak_rss'] / 2**20:,.0f} MiB)" if engine != "in-process" else "")
            for engine in args.engines))

    totals = first["manifest"]["totals"]
    visits = round(totals["rows_in"] / max(totals["patients_in"], 1))
    alone = call(recurrence_rate, str(model), args.threads, visits, args.batch_size, 200 if args.quick else 25_000,
                 paths[0])
    forward = alone.pop("model")
    def cpu_rate(n: int, engine: str) -> float:
        result = results[n, engine]
        return result["manifest"]["totals"]["patients_scored"] / result["cpu"]

    for name, per_process in alone.items():
        reached = []
        for engine in args.engines:
            processes = 1 if engine == "in-process" else args.workers
            reached.append(f"{engine} {rate(largest, engine) / (per_process['wall'] * processes):.0%} / "
                           f"{cpu_rate(largest, engine) / per_process['cpu']:.0%}")
        scorer = " (the scorer's recurrence)" if name == "gru_inference" else ""
        print(f"yardstick: the GRU layer alone as {name}{scorer} ([{args.batch_size}, {visits}, 64] random inputs, "
              f"{args.threads} thread(s)) runs {per_process['wall']:,.0f} patients/s per process "
              f"({per_process['cpu']:,.0f} per CPU-s); share of it reached per process at {largest:,} patients, "
              "by wall-clock time / by CPU time (all the run's processes): " + ", ".join(reached))
    print("the same yardstick (nn.GRU) timed in each run's scoring process right after the run, where the machine's "
          "speed has had the least time to change; share of it reached per process by wall-clock time / by CPU time: "
          + "; ".join(f"{n:,} patients: " + ", ".join(
              f"{engine} {rate(n, engine) / (results[n, engine]['adjacent']['wall'] * (1 if engine == 'in-process' else args.workers)):.0%}"
              f" / {cpu_rate(n, engine) / results[n, engine]['adjacent']['cpu']:.0%}" for engine in args.engines)
              for n in sizes))
    gru = alone["nn.GRU"]
    print(f"the model alone: its forward pass as the scorer makes it (embedding, recurrence, head at the last visit) on "
          f"the batches the scorer builds from one shard, built before the timing, runs {forward['wall']:,.0f} "
          f"patients/s per process ({forward['cpu']:,.0f} per CPU-s) = {forward['wall'] / gru['wall']:.0%} / "
          f"{forward['cpu'] / gru['cpu']:.0%} of nn.GRU by wall-clock / CPU time: the share scoring would reach if "
          "reading, encoding, batching and writing cost nothing; share of it reached per process at "
          f"{largest:,} patients: " + ", ".join(
              f"{engine} {rate(largest, engine) / (forward['wall'] * (1 if engine == 'in-process' else args.workers)):.0%}"
              f" / {cpu_rate(largest, engine) / forward['cpu']:.0%}" for engine in args.engines))
    if args.quick:
        print("(--quick: scored from the benchmark process, so peak RSS includes the data generation; no baseline)")
        return
    baseline, n = _in_child(baseline_rate, str(model), paths[0], args.threads)
    print(f"baseline: estimator predict_risk + predict_survival + predict_median in memory on one shard "
          f"({n:,} patients): {baseline:,.0f} patients/s")
    if "in-process" in args.engines:
        print(f"in-process scorer vs baseline (patients/s, {largest:,} patients): "
              f"{rate(largest, 'in-process') / baseline:.1f}x")
