"""One in-memory partition of whole patients → prediction rows in the contract of ``data_specs/predictions.json``.

For each selected visit m of a patient (the last visit, every visit, or the last visit at or before a
landmark s) and each horizon Δ (days), with e = s − v_m for a landmark and e = 0 otherwise:

* ``survival`` = S_m(e + Δ) / S_m(e), the event-free (all-cause) probability;
* ``risk`` = 1 − ``survival``; with competing risks, one row per cause k with the conditional
  cumulative incidence (F_k(e + Δ) − F_k(e)) / S_m(e);
* ``median_remaining`` = the median of the remaining event-free time after v_m + e (all causes; +inf
  when the survival never falls to 0.5 on the model's support);
* ``extrapolated`` / ``median_extrapolated`` = whether the horizon / the median reaches beyond the
  training data (:class:`ehrseq.predict.Reach`: e + Δ > R_max or s + Δ > Y_max).

These are the quantities of :meth:`~ehrseq.DynamicSurvival.predict_risk`, ``predict_survival`` and
``predict_median``, computed by the same prediction core (:mod:`ehrseq.predict`).

Rows are ordered by patient (cohort order), visit time, horizon and cause, whatever the batching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrseq import predict
from ehrseq.data import Cohort
from ehrseq.device import select_device
from ehrseq.errors import ConfigError, option
from ehrseq.estimator import DynamicSurvival

#: Default number of patients per forward pass.
DEFAULT_BATCH_SIZE = 1024

_FLOAT_COLUMNS = ("risk", "survival", "median_remaining")


@dataclass(frozen=True)
class Request:
    """What to predict: sorted distinct ``horizons`` (days > 0), ``at``, ``landmark``, ``cause``, ``event``."""

    horizons: tuple[float, ...]
    at: str = "last"
    landmark: Any = None
    cause: int | None = None
    event: str | None = None

    @classmethod
    def make(cls, horizons: Any, at: str = "last", landmark: Any = None, cause: int | None = None,
             event: str | None = None) -> Request:
        values = np.atleast_1d(np.asarray(horizons, dtype=np.float64)) if not isinstance(horizons, str) else None
        if values is None or values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) \
                or np.any(values <= 0):
            raise ConfigError(f"horizons must be one or more finite durations > 0 (days), got {horizons!r}")
        predict.check_at(at)
        if landmark is not None and at != "last":
            raise ConfigError("a landmark prediction uses the last visit at or before the landmark; leave at='last'")
        if cause is not None and (isinstance(cause, bool) or not isinstance(cause, (int, np.integer)) or cause < 1):
            raise ConfigError(f"cause must be an event type >= 1 or None, got {cause!r}")
        return cls(tuple(float(h) for h in np.unique(values)), at, landmark,
                   None if cause is None else int(cause), event)

    def check_model(self, estimator: DynamicSurvival) -> None:
        """Refuse requests the model's head cannot answer, before any data is read."""
        head, family = estimator.model_config_.head, estimator.family_
        if not family.in_days:
            raise ConfigError(f"the {head.kind} head has no time scale in days and cannot be scored at horizons; "
                              "use predict_next_visit_risk()")
        if self.cause is not None and not family.competing:
            raise ConfigError("cause= is for competing-risks heads (competing_pmf)")
        if family.competing and self.cause is not None and self.cause > family.num_causes(head):
            raise ConfigError(f"cause must be in 1..{family.num_causes(head)}, got {self.cause}")
        if family.multi_event:
            names = list(head.event_names)
            if self.event not in names:
                raise ConfigError(f"a multi-event model is scored one event at a time: pass {option('event')} one of {names}")
        elif self.event is not None:
            raise ConfigError("event= is for multi-event heads")

    def causes(self, estimator: DynamicSurvival) -> tuple[int, ...] | None:
        """Cause of each row group for competing-risks heads (``None`` otherwise)."""
        head, family = estimator.model_config_.head, estimator.family_
        if not family.competing:
            return None
        return (self.cause,) if self.cause is not None else tuple(range(1, family.num_causes(head) + 1))


# ---------------------------------------------------------------------------------------------- schema
def clock_output_dtype(clock: pl.DataType) -> pl.DataType:
    """dtype of ``visit_time`` for a visit table whose ``time`` has dtype ``clock`` (as
    :meth:`ehrseq.data.Cohort.to_clock` returns it: datetimes and dates as they are, integer days as
    they are, float days as Float64)."""
    if isinstance(clock, pl.Datetime):
        return pl.Datetime(clock.time_unit or "us", clock.time_zone)
    if clock == pl.Date or clock.is_integer():
        return clock
    return pl.Float64


def id_output_dtype(dtype: pl.DataType) -> pl.DataType:
    """Patient ids are Int64 (integer ids) or String (string, categorical, enum ids), as in the cohort."""
    return pl.Int64 if dtype.is_integer() else pl.String


def output_schema(id_dtype: pl.DataType, clock: pl.DataType, request: Request, competing: bool) -> pl.Schema:
    """Columns of the prediction table: the contract's, plus ``landmark`` after ``patient_id`` when the
    predictions are made at a landmark, and ``cause`` for competing-risks heads."""
    columns: dict[str, pl.DataType] = {"patient_id": id_output_dtype(id_dtype)}
    if request.landmark is not None:
        columns["landmark"] = pl.Float64 if isinstance(request.landmark, (int, float)) else clock_output_dtype(clock)
    columns["visit_time"] = clock_output_dtype(clock)
    columns["horizon"] = pl.Float64
    if competing:
        columns["cause"] = pl.Int64
    columns.update({name: pl.Float64 for name in _FLOAT_COLUMNS})
    columns.update(extrapolated=pl.Boolean, median_extrapolated=pl.Boolean)
    columns.update(model_id=pl.String, model_version=pl.String)
    return pl.Schema(columns)


# ---------------------------------------------------------------------------------------------- prediction
def _evaluate(selection: predict.Selection, horizons: torch.Tensor, request: Request,
              causes: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """risk ``[n, H, K]`` (K = 1 without competing risks), survival ``[n, H]`` and median ``[n]``."""
    ((_, overall),) = selection.marginals(request.event)
    log_survival = overall.log_survival(horizons)
    if causes is not None:
        durations = np.asarray(horizons.tolist())
        risk = torch.stack([selection.competing_risk(durations, k) for k in causes], dim=-1)
    else:
        risk = (-torch.expm1(log_survival)).unsqueeze(-1)
    return risk, log_survival.exp(), overall.median()


def predict_cohort(estimator: DynamicSurvival, cohort: Cohort, request: Request,
                   batch_size: int = DEFAULT_BATCH_SIZE) -> pl.DataFrame:
    """Prediction rows (without the model columns) for every patient of ``cohort``."""
    causes = request.causes(estimator)
    device = select_device(estimator.trainer_config.device)
    horizons = torch.tensor(request.horizons, dtype=torch.float32, device=device)
    durations = np.asarray(request.horizons)
    rows, risks, survivals, medians, beyond, median_beyond = [], [], [], [], [], []
    with torch.inference_mode():
        for selection in predict.predictions(estimator.model_, estimator.features_, cohort, at=request.at,
                                             landmark=request.landmark, batch_size=batch_size, device=device):
            risk, survival, median = _evaluate(selection, horizons, request, causes)
            rows.append(selection.visit_row)
            risks.append(risk.double().cpu().numpy())
            survivals.append(survival.double().cpu().numpy())
            medians.append(median.double().cpu().numpy())
            beyond.append(selection.extrapolated(estimator.reach_, durations))
            median_beyond.append(selection.extrapolated(estimator.reach_, medians[-1][:, None])[:, 0])
    return _frame(cohort, request, causes, rows, risks, survivals, medians, beyond, median_beyond)


def _frame(cohort: Cohort, request: Request, causes: tuple[int, ...] | None, rows: list[np.ndarray],
           risks: list[np.ndarray], survivals: list[np.ndarray], medians: list[np.ndarray],
           beyond: list[np.ndarray], median_beyond: list[np.ndarray]) -> pl.DataFrame:
    """Long frame, one row per (visit, horizon, cause), ordered by visit row, horizon and cause."""
    n_h, n_k = len(request.horizons), len(causes) if causes is not None else 1
    flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    order = np.argsort(flat, kind="stable")
    flat = flat[order]
    per_visit = n_h * n_k
    patient = cohort.visits.get_column("patient_index").to_numpy()[flat]
    repeat = np.repeat(np.arange(flat.size), per_visit)
    columns: dict[str, Any] = {
        "patient_id": cohort.patients.get_column("patient_id").gather(patient[repeat]),
        "visit_time": cohort.to_clock(cohort.visits.get_column("time").to_numpy()[flat][repeat]).alias("visit_time"),
        "horizon": np.tile(np.repeat(np.asarray(request.horizons), n_k), flat.size),
    }
    if causes is not None:
        columns["cause"] = np.tile(np.asarray(causes, dtype=np.int64), flat.size * n_h)
    empty = np.zeros((0, n_h, n_k))
    columns["risk"] = (np.concatenate(risks) if risks else empty)[order].reshape(-1)
    survival = (np.concatenate(survivals) if survivals else empty[..., 0])[order]
    columns["survival"] = np.repeat(survival, n_k, axis=1).reshape(-1)
    columns["median_remaining"] = np.repeat((np.concatenate(medians) if medians else np.zeros(0))[order], per_visit)
    flags = (np.concatenate(beyond) if beyond else np.zeros((0, n_h), dtype=bool))[order]
    columns["extrapolated"] = np.repeat(flags, n_k, axis=1).reshape(-1)
    median_flags = np.concatenate(median_beyond) if median_beyond else np.zeros(0, dtype=bool)
    columns["median_extrapolated"] = np.repeat(median_flags[order], per_visit)
    frame = pl.DataFrame(columns)
    if request.landmark is not None:
        frame = frame.select("patient_id", pl.lit(request.landmark).alias("landmark"), pl.exclude("patient_id"))
    return frame


def finish(frame: pl.DataFrame, model_id: str, model_version: str, schema: pl.Schema) -> pl.DataFrame:
    """Add the model columns and cast to the output ``schema`` (column order included)."""
    frame = frame.with_columns(pl.lit(model_id).alias("model_id"), pl.lit(model_version).alias("model_version"))
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())
