"""Whole scoring runs: :func:`plan` (inputs, partition check, output directory, resume, manifest) and
:func:`score` (a plan run shard by shard, in this process or on a Dask cluster)."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ehrseq.errors import ConfigError, option
from ehrseq.extras import require
from ehrseq.progress import Progress, progress_bar
from ehrseq.scoring._manifest import (
    MANIFEST,
    check_resumable,
    new_manifest,
    read_manifest,
    sha256_file,
    totals,
    write_json_atomic,
)
from ehrseq.scoring._model import check_model
from ehrseq.scoring._predict import DEFAULT_BATCH_SIZE
from ehrseq.scoring._shard import (
    DEFAULT_PATIENTS_PER_CHUNK,
    ScoreOptions,
    _positive_int,
    _prepare,
    _score_one,
)
from ehrseq.scoring._sources import Shard, check_partitioned, list_shards


@dataclass(frozen=True)
class ScoreSummary:
    """What :func:`score` produced: the output files (in input order), the manifest, and what this call did
    (``scored`` shards, ``resumed`` shards that were already complete, wall-clock ``seconds``)."""

    out_dir: Path
    files: tuple[Path, ...]
    manifest: dict[str, Any]
    scored: int
    resumed: int
    seconds: float

    @property
    def totals(self) -> dict[str, Any]:
        return self.manifest["totals"]

    def scan(self) -> pl.LazyFrame:
        """All predictions as one lazy frame."""
        return pl.scan_parquet(list(self.files))

    def __str__(self) -> str:
        t = self.totals
        dropped = ", ".join(f"{n:,} {reason}" for reason, n in t["visits_dropped"].items()) or "none"
        lines = [
            f"scored {t['patients_scored']:,} patients ({t['rows_in']:,} visit rows; dropped: {dropped}) -> "
            f"{t['rows_out']:,} prediction rows in {len(self.files)} file(s) under {self.out_dir}",
            f"model {self.manifest['model']['id']} (version {self.manifest['model']['version']}); "
            f"{self.scored} shard(s) scored in {self.seconds:.1f} s, {self.resumed} already complete",
        ]
        if t["patients_without_prediction"]:
            lines.append(f"{t['patients_without_prediction']:,} patients have no visit at or before the landmark")
        if t["rows_extrapolated"]:
            lines.append(f"{t['rows_extrapolated']:,} of the {t['rows_out']:,} rows reach beyond the training data "
                         "(column extrapolated: the horizon passes the longest training follow-up or the grid)")
        return "\n".join(lines)


@dataclass
class ScorePlan:
    """A prepared scoring run (see :func:`plan`).

    ``pending`` are the shards still to score; ``options`` the keyword arguments of
    :func:`score_shard` that reproduce the run's settings (model version and outcome table included).
    Pass each record :func:`score_shard` returns to :meth:`record`: it is added to the manifest, which
    is rewritten atomically.
    """

    out_dir: Path
    shards: list[Shard]
    pending: list[Shard]
    patients: dict[str, int] | None
    manifest: dict[str, Any]
    options: dict[str, Any]

    def record(self, entry: dict[str, Any]) -> None:
        outputs = {shard.name for shard in self.shards}
        if entry.get("output") not in outputs:
            raise ConfigError(f"{entry.get('output')!r} is not an output of this run")
        self.manifest["shards"][entry["output"]] = entry
        _write(self.out_dir, self.manifest)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.out_dir / shard.name for shard in self.shards)


def _write(out_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["totals"] = totals(manifest["shards"].values())
    manifest["complete"] = all(entry["output"] in manifest["shards"] for entry in manifest["inputs"])
    write_json_atomic(out_dir / MANIFEST, manifest)


def _prepare_directory(out: Path, manifest: dict[str, Any], shards: list[Shard], resume: bool,
                       overwrite: bool) -> dict[str, Any]:
    """Check the output directory against the run, clean it up, and return the records of the outputs
    that are complete (resume only: listed in the manifest and matching their checksum)."""
    existing = read_manifest(out) if out.is_dir() else None
    outputs = {shard.name for shard in shards}
    if existing is not None and resume:
        check_resumable(existing, manifest)
    elif existing is not None and not overwrite:
        raise ConfigError(f"{out} already holds predictions ({MANIFEST}); pass {option('resume', True)} to complete "
                          f"that run or {option('overwrite', True)} to replace it")
    elif existing is None and out.is_dir() and not overwrite \
            and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no {MANIFEST}; choose a new or empty output directory")
    if overwrite and out.is_dir():
        for name in outputs | set(existing["shards"] if existing is not None else ()):
            (out / name).unlink(missing_ok=True)
        (out / MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    if existing is None or not resume:
        return {}
    return {name: entry for name, entry in existing["shards"].items()
            if name in outputs and (out / name).is_file() and sha256_file(out / name) == entry["sha256"]}


def _check_locations(source: Any, shards: list[Shard], out: Path) -> None:
    target = out.resolve()
    for shard in shards:
        if shard.path is not None and shard.path.resolve().is_relative_to(target):
            raise ConfigError(f"input shard {shard.path} is inside the output directory {out}")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir() and target.is_relative_to(Path(source).resolve()):
        raise ConfigError(f"the output directory {out} is inside the input directory {source}; its predictions "
                          "would be read as visits by the next run")


def plan(
    model: Any,
    visits: Any,
    out_dir: str | os.PathLike[str],
    horizons: float | list[float],
    *,
    at: str = "last",
    landmark: Any = None,
    cause: int | None = None,
    event: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    patients_per_chunk: int = DEFAULT_PATIENTS_PER_CHUNK,
    outcomes: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    model_version: str | None = None,
    check_partitioning: bool = True,
) -> ScorePlan:
    """Prepare a scoring run without scoring: list the input shards, check that no patient is in two of
    them, check (or resume, or clear) the output directory and write the initial manifest.

    The driver side of a distributed run: hand ``plan.pending`` to the workers, have each run
    ``score_shard(model_path, shard, out_dir, **plan.options)``, and pass the records back to
    ``plan.record``. Parameters as in :func:`score`.
    """
    options = ScoreOptions(horizons, at, landmark, cause, event, outcomes, batch_size, patients_per_chunk,
                           model_version)
    return _plan(model, visits, out_dir, options, resume=resume, overwrite=overwrite,
                 check_partitioning=check_partitioning)[0]


def _plan(model: Any, visits: Any, out_dir: str | os.PathLike[str], options: ScoreOptions, *, resume: bool,
          overwrite: bool, check_partitioning: bool, saved_model: str | None = None) -> tuple[ScorePlan, tuple]:
    """:func:`plan`, and the prepared model, identity, request, settings and outcome table (``saved_model``:
    where an in-memory estimator has been saved already, see :func:`resolve_model`)."""
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other")
    prepared = _prepare(model, options, saved_model)
    _, identity, request, settings, outcome_table = prepared
    out = Path(out_dir)
    shards = list_shards(visits, prepared[0].cohort_settings.null_values)
    _check_locations(visits, shards, out)
    counts = check_partitioned(shards) if check_partitioning else None
    inputs = [{**shard.describe(), "output": shard.name} for shard in shards]
    manifest = new_manifest({"id": identity.id, "version": identity.version, "path": identity.path}, settings, inputs)
    manifest["shards"] = _prepare_directory(out, manifest, shards, resume, overwrite)
    _write(out, manifest)
    resolved = replace(options, horizons=list(request.horizons), outcomes=outcome_table, model_version=identity.version)
    return ScorePlan(
        out_dir=out, shards=shards, pending=[s for s in shards if s.name not in manifest["shards"]],
        patients=None if counts is None else {s.name: n for s, n in zip(shards, counts)},
        manifest=manifest, options=resolved.keywords(),
    ), prepared


def score(
    model: Any,
    visits: Any,
    out_dir: str | os.PathLike[str],
    horizons: float | list[float],
    *,
    at: str = "last",
    landmark: Any = None,
    cause: int | None = None,
    event: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    patients_per_chunk: int = DEFAULT_PATIENTS_PER_CHUNK,
    outcomes: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = "auto",
    num_workers: int = 0,
    scheduler: Any = None,
    model_version: str | None = None,
    check_partitioning: bool = True,
) -> ScoreSummary:
    """Score every patient of ``visits`` into Parquet prediction shards under ``out_dir``.

    See :mod:`ehrseq.scoring` for the input, output, memory, atomicity and resume rules. Every process
    that scores (this one, or the workers) keeps tensors of up to 32 MiB on the heap and up to 64 MiB of
    freed heap (glibc's thresholds, :mod:`ehrseq.scoring._heap`).

    Parameters
    ----------
    model: a fitted :class:`~ehrseq.DynamicSurvival` or the path of a saved model.
    visits: a DataFrame / LazyFrame, a Parquet file, a glob pattern, a directory of Parquet files or a
        list of Parquet files; every patient's visits in one file.
    out_dir: the output directory (created; it must be new or empty unless ``resume`` or ``overwrite``).
    horizons: days after the visit (or after the landmark), > 0.
    at: ``"last"`` (each patient's last visit) or ``"all"`` (every visit).
    landmark: predict at landmark s (days since origin, or a date/datetime on datetime clocks) from the
        last visit at or before s, given survival to s; patients without such a visit get no row.
    cause: competing-risks heads: only this cause (default: one row per cause).
    event: multi-event heads: the event to score (required for them).
    batch_size: patients per forward pass.
    patients_per_chunk: patients read, validated and predicted at a time (bounds memory).
    outcomes: optional outcome table (DataFrame, or Parquet/CSV path): visits at or after a patient's
        outcome are dropped, and an outcome-table origin column is used.
    resume: complete an interrupted run in ``out_dir`` (same model, settings and completed inputs),
        skipping the shards whose output is complete and matches its checksum.
    overwrite: replace the predictions already in ``out_dir``.
    progress: a progress bar (patients): ``"auto"`` (on a terminal only), ``True`` or ``False``.
    num_workers: score the shards on a Dask ``LocalCluster`` of this many worker processes started for
        the run (0: in this process; needs the ``dask`` extra). Worker processes are spawned, so scripts
        must call ``score`` under ``if __name__ == "__main__":``.
    scheduler: score the shards on an existing Dask cluster: its scheduler address
        (``"tcp://host:8786"``) or a ``distributed.Client``. ``model`` must then be the path of a saved
        model, and the model, the input files and ``out_dir`` paths every worker can read (and write).
    model_version: label written in ``model_version`` (default: the ehrseq version that saved the model).
    check_partitioning: verify that no patient is in two shards (12 bytes per patient); turn it off only
        when the shards are partitioned by patient by construction.
    """
    started = time.perf_counter()
    _positive_int(num_workers, "num_workers", minimum=0)
    on_dask = bool(num_workers) or scheduler is not None
    if on_dask:
        from ehrseq.scoring._engine import check_engine

        check_engine(num_workers, scheduler)
        require("dask", what=option("num_workers", num_workers, flag="--workers") if num_workers
                else option("scheduler", flag="--scheduler"))
    options = ScoreOptions(horizons, at, landmark, cause, event, outcomes, batch_size, patients_per_chunk,
                           model_version)
    with contextlib.ExitStack() as stack:
        model_path = _model_path(model, scheduler, stack) if on_dask else None
        # the cluster starts (its workers import ehrseq and load the model) while this process plans the run
        engine = _start_engine(num_workers, scheduler, model_path, stack) if on_dask else None
        prepared, (estimator, identity, request, settings, outcome_table) = _plan(
            model, visits, out_dir, options, resume=resume, overwrite=overwrite, check_partitioning=check_partitioning,
            saved_model=model_path if on_dask and not isinstance(model, (str, os.PathLike)) else None)
        pending = prepared.pending
        total = None if prepared.patients is None else sum(prepared.patients[s.name] for s in pending)
        bar = stack.enter_context(progress_bar(progress, total=total, unit="patient", desc="scoring"))
        if engine is None:
            for shard in pending:
                prepared.record(_score_one(estimator, identity, request, settings, shard, prepared.out_dir,
                                           outcome_table, on_chunk=bar.update))
        elif pending:
            from ehrseq.scoring._distributed import run_plan

            run_plan(engine.result(), prepared, str(model_path), identity.id, bar)
    return ScoreSummary(prepared.out_dir, prepared.files, prepared.manifest, len(pending),
                        len(prepared.shards) - len(pending), time.perf_counter() - started)


def _model_path(model: Any, scheduler: Any, stack: contextlib.ExitStack) -> str:
    """The saved model the workers load: ``model`` itself when it is a path, else the estimator saved to a
    temporary directory removed by ``stack`` (local clusters only: a remote worker could not read it)."""
    check_model(model)  # refuse an unfitted estimator before saving it
    if isinstance(model, (str, os.PathLike)):
        return str(Path(model).resolve())
    if scheduler is not None:
        raise ConfigError(f"{option('scheduler', flag='--scheduler')} runs the shards on workers that load the model "
                          "from disk: save it (model.save(path)) where every worker can read it and pass that path")
    staged = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ehrseq-model-")))
    return str(model.save(staged / "model"))


def _start_engine(num_workers: int, scheduler: Any, model_path: str, stack: contextlib.ExitStack) -> Future:
    """The run's Dask client, connected (and the model loaded on every worker) in a background thread;
    the cluster is closed by ``stack``, after the start completes, whatever happened meanwhile."""
    from ehrseq.scoring._engine import LoadModel, connect

    engine = contextlib.ExitStack()
    scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ehrseq-dask-")))
    threads = max(1, torch.get_num_threads() // num_workers) if num_workers else None

    def start() -> Any:
        client = engine.enter_context(connect(num_workers, scheduler, scratch, threads))
        client.register_plugin(LoadModel(model_path, threads))
        return client

    starter = ThreadPoolExecutor(1, thread_name_prefix="ehrseq-dask-start")
    future = starter.submit(start)
    stack.callback(_close_engine, future, engine, starter.shutdown)
    return future


def _close_engine(future: Future, engine: contextlib.ExitStack, shutdown: Callable[..., None]) -> None:
    """Wait for the start to finish (successfully or not), then close what it opened."""
    with contextlib.suppress(BaseException):
        future.result()
    shutdown(wait=True)
    engine.close()
