"""Scoring one unit of work: an input shard into one output file (:func:`score_shard`), or an in-memory
partition of whole patients into a prediction frame (:func:`score_frame`).

Both are independent of any other shard, so they run unchanged on the workers of a cluster (see
:mod:`ehrseq.scoring`). A shard is read, validated and predicted ``patients_per_chunk`` patients at a
time; each chunk's predictions become one row group of the output, which is written to a hidden
temporary file next to its destination and renamed into place once complete.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from ehrseq.data import CohortReport
from ehrseq.data.reader import read_table
from ehrseq.errors import ConfigError, DataError
from ehrseq.estimator import DynamicSurvival
from ehrseq.scoring._heap import keep_large_allocations_on_the_heap
from ehrseq.scoring._manifest import ScoreSettings, fsync_file, sha256_file
from ehrseq.scoring._model import ModelIdentity, resolve_model
from ehrseq.scoring._predict import DEFAULT_BATCH_SIZE, Request, finish, output_schema, predict_cohort
from ehrseq.scoring._sources import Shard, list_shards, read_chunks, unique_ids

#: Default number of patients read, validated and predicted at a time.
DEFAULT_PATIENTS_PER_CHUNK = 20_000
_STAGES = ("read", "cohort", "predict", "write")


# ---------------------------------------------------------------------------------------------- inputs
def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def read_outcomes(outcomes: Any, null_values: tuple[str, ...] | None = None) -> pl.DataFrame | None:
    """An outcome table from any source of :func:`ehrseq.data.read_table` (``None`` stays ``None``)."""
    return None if outcomes is None else read_table(outcomes, "outcomes", null_values=null_values)


def _fingerprint(frame: pl.DataFrame | None) -> str | None:
    if frame is None:
        return None
    return Shard("outcomes", frame=frame).describe()["fingerprint"] + f"-{frame.height}"


def _needed_columns(estimator: DynamicSurvival) -> list[str]:
    """The visit-table columns the model reads (the others are not loaded)."""
    features, settings = estimator.features_, estimator.cohort_settings
    names = ["patient_id", "time", *features.numeric_columns, *features.categorical_columns]
    names += [*(settings.numeric or ()), *(settings.categorical or ())]
    names += [c for c in (features.codes_column, settings.origin) if c and c not in ("first_visit", "zero")]
    return list(dict.fromkeys(names))


def _in_shard(error: DataError, shard: Shard) -> DataError:
    """The same error, prefixed with the shard it was found in."""
    wrapped = DataError(f"input shard {shard.label}: {error}")
    wrapped.table, wrapped.column, wrapped.rule = error.table, error.column, error.rule
    wrapped.patient_ids, wrapped.n_offending = error.patient_ids, error.n_offending
    return wrapped


def _chunk_outcomes(outcomes: pl.DataFrame | None, frame: pl.DataFrame, shard: Shard) -> pl.DataFrame | None:
    """The outcome rows of the patients of a chunk."""
    if outcomes is None or "patient_id" not in outcomes.columns:
        return outcomes
    visit_ids, outcome_ids = frame.schema["patient_id"], outcomes.schema["patient_id"]
    if visit_ids.is_integer() != outcome_ids.is_integer():
        raise DataError(f"input shard {shard.label}: patient_id is {visit_ids} in the visits but {outcome_ids} in the "
                        "outcomes", table="outcomes", column="patient_id", rule="same_id_dtype")
    key = pl.Int64 if visit_ids.is_integer() else pl.String
    ids = frame.get_column("patient_id").cast(key).unique().implode()
    return outcomes.filter(pl.col("patient_id").cast(key).is_in(ids))


# ---------------------------------------------------------------------------------------------- one shard
@dataclass
class _Counts:
    rows_in: int = 0
    rows_out: int = 0
    rows_extrapolated: int = 0
    patients_in: int = 0
    patients_scored: int = 0
    visits_used: int = 0
    patients_without_prediction: int = 0
    visits_dropped: dict[str, int] = field(default_factory=dict)
    patients_dropped: dict[str, int] = field(default_factory=dict)

    def add(self, report: CohortReport, rows_in: int, scored: int) -> None:
        self.rows_in += rows_in
        self.patients_in += report.patients.n_in
        self.visits_used += report.visits.n_used
        self.patients_scored += scored
        self.patients_without_prediction += report.patients.n_used - scored
        for target, dropped in ((self.visits_dropped, report.visits.dropped),
                                (self.patients_dropped, report.patients.dropped)):
            for reason, n in dropped.items():
                if n:
                    target[reason] = target.get(reason, 0) + n


def _score_one(estimator: DynamicSurvival, identity: ModelIdentity, request: Request, settings: ScoreSettings,
               shard: Shard, out_dir: Path, outcomes: pl.DataFrame | None,
               on_chunk: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Score one shard into ``out_dir / shard.name`` atomically; return its manifest record."""
    keep_large_allocations_on_the_heap()
    started = time.perf_counter()
    stages = dict.fromkeys(_STAGES, 0.0)
    ids = unique_ids(shard)
    schema_in = shard.schema()
    if "time" not in schema_in:
        raise DataError(f"input shard {shard.label} has no time column", table="visits", column="time",
                        rule="required_columns")
    schema = output_schema(schema_in["patient_id"], schema_in["time"], request, request.causes(estimator) is not None)
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    stages["read"] += time.perf_counter() - started

    target = out_dir / shard.name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # unique across hosts
    counts = _Counts()
    writer = pq.ParquetWriter(partial, arrow_schema, compression="zstd")
    row_groups = 0
    try:
        chunks = read_chunks(shard, ids, settings.patients_per_chunk, _needed_columns(estimator))
        while True:
            clock = time.perf_counter()
            frame = next(chunks, None)
            stages["read"] += time.perf_counter() - clock
            if frame is None:
                break
            clock = time.perf_counter()
            try:
                cohort = estimator.cohort(frame, _chunk_outcomes(outcomes, frame, shard))
            except DataError as exc:
                raise _in_shard(exc, shard) from exc
            stages["cohort"] += time.perf_counter() - clock
            clock = time.perf_counter()
            try:
                predictions = predict_cohort(estimator, cohort, request, settings.batch_size)
            except DataError as exc:
                raise _in_shard(exc, shard) from exc
            stages["predict"] += time.perf_counter() - clock
            clock = time.perf_counter()
            table = finish(predictions, identity.id, identity.version, schema).to_arrow().cast(arrow_schema)
            if table.num_rows:
                writer.write_table(table)
                row_groups += 1
            counts.add(cohort.report, frame.height, predictions.get_column("patient_id").n_unique())
            counts.rows_out += table.num_rows
            counts.rows_extrapolated += int(predictions.get_column("extrapolated").sum())
            stages["write"] += time.perf_counter() - clock
            if on_chunk is not None:
                on_chunk(cohort.report.patients.n_in)
        clock = time.perf_counter()
        writer.close()
        fsync_file(partial)
        digest, size = sha256_file(partial), partial.stat().st_size
        os.replace(partial, target)
        stages["write"] += time.perf_counter() - clock
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return {
        "input": shard.name, "output": shard.name, "rows_in": counts.rows_in, "rows_out": counts.rows_out,
        "rows_extrapolated": counts.rows_extrapolated,
        "patients_in": counts.patients_in, "patients_scored": counts.patients_scored,
        "visits_used": counts.visits_used, "visits_dropped": counts.visits_dropped,
        "patients_dropped": counts.patients_dropped,
        "patients_without_prediction": counts.patients_without_prediction,
        "bytes": size, "sha256": digest, "row_groups": row_groups,
        "seconds": round(time.perf_counter() - started, 6),
        "stage_seconds": {name: round(value, 6) for name, value in stages.items()},
    }


@dataclass(frozen=True)
class ScoreOptions:
    """What a scoring run predicts and how it batches: the options that :func:`score`, :func:`plan`,
    :func:`score_shard` and :func:`score_frame` share (documented in :func:`score`), checked when made."""

    horizons: Any
    at: str = "last"
    landmark: Any = None
    cause: int | None = None
    event: str | None = None
    outcomes: Any = None
    batch_size: int = DEFAULT_BATCH_SIZE
    patients_per_chunk: int = DEFAULT_PATIENTS_PER_CHUNK
    model_version: str | None = None

    def __post_init__(self) -> None:
        _positive_int(self.batch_size, "batch_size")
        _positive_int(self.patients_per_chunk, "patients_per_chunk")
        if self.model_version is not None and (not isinstance(self.model_version, str) or not self.model_version):
            raise ConfigError(f"model_version must be a non-empty string, got {self.model_version!r}")
        self.request()

    def request(self) -> Request:
        """What to predict (the horizons sorted and unique)."""
        return Request.make(self.horizons, self.at, self.landmark, self.cause, self.event)

    def keywords(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`score_shard`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _prepare(model: Any, options: ScoreOptions, saved_model: str | None = None,
             ) -> tuple[DynamicSurvival, ModelIdentity, Request, ScoreSettings, pl.DataFrame | None]:
    request = options.request()
    estimator, identity = resolve_model(model, options.model_version, saved_model)
    request.check_model(estimator)
    outcome_table = read_outcomes(options.outcomes, estimator.cohort_settings.null_values)
    settings = ScoreSettings(request.horizons, request.at, request.landmark, request.cause, request.event,
                             options.batch_size, options.patients_per_chunk, _fingerprint(outcome_table))
    return estimator, identity, request, settings, outcome_table


def score_shard(
    model: Any,
    shard: str | os.PathLike[str] | Shard | pl.DataFrame,
    out_dir: str | os.PathLike[str],
    horizons: float | list[float],
    *,
    at: str = "last",
    landmark: Any = None,
    cause: int | None = None,
    event: str | None = None,
    outcomes: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    patients_per_chunk: int = DEFAULT_PATIENTS_PER_CHUNK,
    model_version: str | None = None,
) -> dict[str, Any]:
    """Score one input shard into ``out_dir`` and return its manifest record (a JSON-ready dict).

    The unit of work of :func:`score`, for running inside a distributed engine: ``model`` is best
    given as the path of a saved model (each process loads it once and caches it). ``shard`` is a
    Parquet or CSV file (its output is ``out_dir / <file name>.parquet``), a :class:`Shard` from
    :func:`list_shards` (output ``out_dir / shard.name``) or an in-memory table. The output is
    written to a temporary file and renamed into place; no manifest is written (the driver passes the
    record to :meth:`ScorePlan.record`, see :func:`plan`). Other parameters as in :func:`score`.
    """
    estimator, identity, request, settings, outcome_table = _prepare(model, ScoreOptions(
        horizons, at, landmark, cause, event, outcomes, batch_size, patients_per_chunk, model_version))
    null_values = estimator.cohort_settings.null_values
    if isinstance(shard, Shard):
        item = shard
    elif isinstance(shard, (str, os.PathLike)):
        item = Shard.from_path(shard, null_values=null_values)
    else:
        (item,) = list_shards(shard, null_values)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _score_one(estimator, identity, request, settings, item, out, outcome_table)


def score_frame(
    model: Any,
    visits: Any,
    horizons: float | list[float],
    *,
    at: str = "last",
    landmark: Any = None,
    cause: int | None = None,
    event: str | None = None,
    outcomes: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model_version: str | None = None,
) -> pl.DataFrame:
    """Predictions for an in-memory table of whole patients, in the prediction-output contract.

    The function to map over the partitions of a distributed data frame when every partition holds all
    the visits of its patients (:func:`ehrseq.scoring.score_partitions` does it for a Dask data frame).
    Parameters as in :func:`score`.
    """
    estimator, identity, request, _, outcome_table = _prepare(model, ScoreOptions(
        horizons, at, landmark, cause, event, outcomes, batch_size, model_version=model_version))
    keep_large_allocations_on_the_heap()
    frame = read_table(visits, "visits", null_values=estimator.cohort_settings.null_values)
    cohort = estimator.cohort(frame, outcome_table)
    schema = output_schema(cohort.patients.schema["patient_id"], cohort.clock_dtype, request,
                           request.causes(estimator) is not None)
    return finish(predict_cohort(estimator, cohort, request, batch_size), identity.id, identity.version, schema)
