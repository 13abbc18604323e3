"""The prediction core: which visits predict, the landmark view, and what every head's prediction means.

One path serves :class:`~ehrseq.DynamicSurvival`'s ``predict_*`` methods, batch scoring
(:mod:`ehrseq.scoring`) and, through ``predict_risk``, landmark evaluation (:mod:`ehrseq.evaluate`):

1. **Visits** (:func:`select_visits`). ``at="last"``: each patient's last visit; ``at="all"``: every
   visit; a landmark s (days since the patient's origin, or a calendar date: :func:`landmark_days`):
   the last visit m with v_m ≤ s — patients without one get no prediction.
2. **The model** (:func:`predictions`). Patients are taken in order of history length, ``batch_size``
   at a time; the encoder reads every visit (the recurrence needs them), the head runs on the
   selected visits only (:meth:`~ehrseq.models.model.DynamicSurvivalModel.distribution_at`). Each
   batch gives a :class:`Selection`: the head's distribution and the offset e = s − v_m of the
   prediction time (0 without a landmark). A model with an elapsed-time input (``any_time``) reads e
   and gives the distribution at the prediction time itself (:func:`distribution_at`).
3. **The landmark view** (:meth:`Selection.marginals`, :meth:`Selection.competing_risk`). For a model
   without the elapsed-time input, the prediction at time s = v_m + e is the visit's distribution
   conditioned on survival to s: P(T > s + Δ | T > s, history ≤ s) = S_m(e + Δ) / S_m(e); with
   competing risks the incidence of cause k is (F_k(e + Δ) − F_k(e)) / S_m(e). These two methods are
   the only place that turns a visit's distribution into the distribution at the prediction time
   (for an ``any_time`` model they condition on nothing: its distribution is already there).
4. **Marginals** (:func:`marginals`). A single-event head has one; a competing-risks head the
   all-cause survival S = 1 − Σ_k F_k; a multi-event head one per event.
5. **Extrapolation** (:class:`Reach`, :meth:`Selection.extrapolated`). A prediction made at time
   s = v_m + e (days since the origin; s = v_m without a landmark) for a duration u after s reads the
   visit's distribution at e + u days after the visit and speaks of day s + u since the origin. It is
   *extrapolated* when either lies beyond what the model was trained on:

       e + u > R_max   or   s + u > Y_max,

   where R_max is the longest time from a training visit to its patient's outcome or censoring
   (for grid heads at most the grid's last point τ_L: beyond it the head's tail is an assumption, not
   a fit) and Y_max the longest training follow-up since the origin. Such predictions are not
   refused: the estimator's ``predict_*`` methods and batch scoring mark them, in the column
   ``extrapolated`` for the horizon's risk and survival and ``median_extrapolated`` for the median.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from ehrseq.data import Cohort, FeaturePipeline, SequenceData, TimeGrid, tensorize
from ehrseq.data.batch import SequenceBatch
from ehrseq.data.specs import clock_kind
from ehrseq.errors import ConfigError, option
from ehrseq.models.distributions import CompetingRisksDistribution, MultiEvent, SurvivalDistribution
from ehrseq.models.families import Prediction
from ehrseq.models.model import DynamicSurvivalModel

#: Where predictions are made without a landmark.
AT = ("last", "all")


def check_at(at: str) -> None:
    if at not in AT:
        raise ConfigError(f"at must be 'last' or 'all', got {at!r}")


def landmark_days(landmark: Any, origin_days: np.ndarray, clock: pl.DataType | None = None) -> np.ndarray:
    """The landmark s in days since each patient's origin ``[N]``: a number is already on that clock;
    a date or datetime (naive = UTC) is a calendar time, converted with each patient's ``origin_days``
    (the origin in days since the Unix epoch, as in :attr:`ehrseq.data.Cohort.patients`).

    A date on a day ``clock`` (the dtype of the visit times) is refused: the days since 1970 it would be
    read as are no time on the patients' own clocks (2001-01-01 would be a landmark 11,323 days after
    every origin)."""
    if isinstance(landmark, (dt.date, dt.datetime)):
        if clock is not None and clock_kind(clock) != "datetime":
            raise ConfigError(f"{option('landmark', landmark.isoformat())} is a date, but the visit times are days "
                              f"({clock}), not dates: give the landmark in days since each patient's origin")
        moment = landmark if isinstance(landmark, dt.datetime) else dt.datetime.combine(landmark, dt.time())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        days = moment.timestamp() / 86_400.0
        return days - origin_days
    value = float(landmark)
    if not math.isfinite(value):
        raise ConfigError(f"landmark must be finite, got {landmark!r}")
    return np.full(origin_days.shape, value)


def select_visits(mask: np.ndarray, at: str = "last", visit_days: np.ndarray | None = None,
                  landmark: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(patient row, visit position) of every prediction of a padded batch, patient-major.

    ``mask`` ``[B, M]`` marks real visits. With a ``landmark`` ``[B]`` (days since origin) and the
    visits' ``visit_days`` ``[B, M]`` on the same clock, the last visit at or before it (patients with
    none are left out); otherwise the last visit (``at="last"``) or every visit (``at="all"``).
    """
    lengths = mask.sum(axis=1)
    if landmark is not None:
        position = (np.where(mask, visit_days, np.inf) <= landmark[:, None]).sum(axis=1) - 1
        rows = np.flatnonzero(position >= 0)
        return rows, position[rows]
    if at == "last":
        return np.arange(len(lengths)), lengths - 1
    return np.nonzero(mask)


def padded_visit_days(elapsed: np.ndarray, offsets: np.ndarray, patients: np.ndarray, width: int) -> np.ndarray:
    """The visits' days since origin of ``patients`` as a padded ``[B, width]`` array (``elapsed``: per
    cohort visit row; ``offsets``: the cohort's patient offsets; anything at padded positions)."""
    position = offsets[patients][:, None] + np.arange(width)[None, :]
    return elapsed[np.minimum(position, elapsed.size - 1)]


@dataclass(frozen=True)
class Reach:
    """How far the training data reach (days): ``remaining`` R_max, the longest time from a training
    visit to its patient's outcome or censoring (at most the grid's last point for grid heads), and
    ``follow_up`` Y_max, the longest training follow-up since the origin. A prediction beyond either
    is extrapolated (module docstring, step 5); ``inf`` where the model does not know (models saved
    before ehrseq recorded its reach know only their grid)."""

    remaining: float = math.inf
    follow_up: float = math.inf

    @classmethod
    def of(cls, cohort: Cohort, grid: TimeGrid | None = None) -> Reach:
        """The reach of a model trained on the labelled ``cohort`` with horizon ``grid`` (``None``: no grid).

        Follow-up ends at the outcome or censoring time, or at the upper end of an interval-censored
        event (``time_upper``), whichever is later."""
        remaining = _largest(cohort.visits, "remaining", "upper")
        follow_up = _largest(cohort.patients, "outcome_time", "time_upper")
        if grid is not None:
            remaining = min(remaining, float(grid.cuts[-1]))
        return cls(remaining, follow_up)

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None, grid: TimeGrid | None = None) -> Reach:
        """The reach saved with a model (:meth:`to_dict`); without one, the grid's last point only."""
        if saved:
            return cls(*(math.inf if saved[name] is None else float(saved[name]) for name in ("remaining", "follow_up")))
        return cls(math.inf if grid is None else float(grid.cuts[-1]))

    def beyond(self, offset: np.ndarray, time: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """Whether predictions at times s ``time`` ``[n]`` (days since the origin), ``offset`` e = s − v
        ``[n]`` days after the visit they are made from, for ``durations`` u after s are extrapolated:
        e + u > R_max or s + u > Y_max. ``durations`` ``[U]`` (the same for every row) gives ``[n, U]``;
        ``[n, 1]`` (one per row, e.g. the median) gives ``[n, 1]``."""
        u = np.asarray(durations, dtype=np.float64)
        e = np.asarray(offset, dtype=np.float64)[:, None]
        s = np.asarray(time, dtype=np.float64)[:, None]
        return (e + u > self.remaining) | (s + u > self.follow_up)

    def __str__(self) -> str:
        limits = [f"{value:,.0f} days {where}" for value, where in
                  ((self.remaining, "after the visit they are made from"), (self.follow_up, "after the origin"))
                  if math.isfinite(value)]
        if not limits:
            return "no reach recorded: no prediction is marked extrapolated"
        return f"predictions reaching more than {' or '.join(limits)} are marked extrapolated"

    def to_dict(self) -> dict[str, float | None]:
        """JSON: days, ``None`` for ``inf``."""
        return {"remaining": _finite_or_none(self.remaining), "follow_up": _finite_or_none(self.follow_up)}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _largest(frame: pl.DataFrame, column: str, upper: str) -> float:
    """The largest finite value of ``column`` and ``upper`` in ``frame`` (``inf`` when it has neither)."""
    values = [frame.get_column(name).to_numpy() for name in (column, upper) if name in frame.columns]
    finite = [v[np.isfinite(v)] for v in values]
    finite = [v for v in finite if v.size]
    return float(max(v.max() for v in finite)) if finite else math.inf


@dataclass
class Selection:
    """Predictions at the chosen visits of one batch: one row per (patient, visit).

    ``patient_index`` ``[n]`` rows in ``cohort.patients``; ``visit_row`` ``[n]`` rows in
    ``cohort.visits``; ``offset`` ``[n]`` e = s − v_m of landmark predictions (0 otherwise);
    ``distribution`` the head's distribution, batch shape ``[n]``: at the visit, or at the prediction
    time v_m + e when ``at_prediction_time`` (models with an elapsed-time input); ``elapsed`` ``[n]``
    the visit time v_m in days since the patient's origin.
    """

    patient_index: np.ndarray
    visit_row: np.ndarray
    offset: np.ndarray
    distribution: Prediction
    elapsed: np.ndarray
    at_prediction_time: bool = False

    @property
    def unconditioned(self) -> np.ndarray:
        """The offsets still to condition the distribution on ``[n]`` (0 when it is at the prediction time)."""
        return np.zeros_like(self.offset) if self.at_prediction_time else self.offset

    def extrapolated(self, reach: Reach, durations: np.ndarray) -> np.ndarray:
        """Whether the predictions for ``durations`` u after the prediction time s = v_m + e are
        extrapolated (:meth:`Reach.beyond`; module docstring, step 5): ``[n, U]`` or ``[n, 1]``."""
        return reach.beyond(self.offset, self.elapsed + self.offset, durations)

    def marginals(self, event: str | None = None) -> list[tuple[str | None, SurvivalDistribution]]:
        """The remaining-time distributions after the prediction time v_m + e, given survival to it:
        ``[(event name or None, distribution)]`` (see :func:`marginals`)."""
        return [(name, conditional(marginal, self.unconditioned))
                for name, marginal in marginals(self.distribution, event)]

    def competing_risk(self, horizons: np.ndarray, cause: int | None) -> torch.Tensor:
        """Competing-risks heads: P(event (of ``cause``; ``None``: any) in (s, s + Δ] | T > s) ``[n, H]``."""
        return competing_risk(self.distribution, self.unconditioned, horizons, cause)


def distribution_at(model: DynamicSurvivalModel, batch: Any, index: tuple[torch.Tensor, torch.Tensor],
                    offset: np.ndarray | torch.Tensor, *, check_values: bool = True) -> tuple[Prediction, bool]:
    """The model's distribution for predictions ``offset`` e ``[n]`` days after the visits ``index`` of
    ``batch``, and whether it is at the prediction time: a model with an elapsed-time input reads e
    (True); any other gives the visit's distribution, to be conditioned on survival to e (False)."""
    if not getattr(model, "any_time", False):
        return model.distribution_at(batch, index, check_values=check_values), False
    elapsed = torch.as_tensor(offset, dtype=torch.float32, device=index[0].device)
    return model.distribution_at(batch, index, elapsed=elapsed, check_values=check_values), True


def length_ordered_batches(data: SequenceData, batch_size: int) -> Iterator[tuple[np.ndarray, SequenceBatch]]:
    """``(patients, batch)``: the patients of ``data`` in order of history length (stable), ``batch_size`` at a
    time, padded (:meth:`SequenceData.batch`) — how :func:`predictions` batches them."""
    order = np.argsort(data.lengths.numpy(), kind="stable")
    for start in range(0, len(order), batch_size):
        patients = order[start:start + batch_size]
        yield patients, data.batch(patients)


def predictions(model: DynamicSurvivalModel, features: FeaturePipeline, cohort: Cohort, *, at: str = "last",
                landmark: Any = None, batch_size: int = 512,
                device: torch.device | str = "cpu") -> Iterator[Selection]:
    """The model's predictions for ``cohort`` (prepared with the fitted ``features``), batch by batch.

    Patients are batched in order of history length (stable), ``batch_size`` at a time, on ``device``
    in eval mode without gradients; see the module docstring for the visits chosen by ``at`` and
    ``landmark``. Distributions stay on ``device``.
    """
    check_at(at)
    data = tensorize(cohort, features, None)
    offsets = cohort.offsets
    elapsed = cohort.visits.get_column("elapsed").to_numpy()
    landmark_elapsed = None
    if landmark is not None:
        landmark_elapsed = landmark_days(landmark, cohort.patients.get_column("origin").to_numpy(), cohort.clock_dtype)
    net = model.to(device).eval()
    with torch.no_grad():
        for patients, batch in length_ordered_batches(data, batch_size):
            mask = batch.mask.numpy()
            visit_days = None
            if landmark_elapsed is not None:
                visit_days = padded_visit_days(elapsed, offsets, patients, mask.shape[1])
            b, m = select_visits(mask, at, visit_days, None if landmark_elapsed is None else landmark_elapsed[patients])
            if b.size == 0:
                continue
            rows = offsets[patients[b]] + m
            index = (torch.as_tensor(b, device=device), torch.as_tensor(m, device=device))
            offset = np.zeros(b.size) if landmark_elapsed is None else landmark_elapsed[patients[b]] - elapsed[rows]
            distribution, at_time = distribution_at(net, batch.to(device), index, offset, check_values=False)
            yield Selection(patients[b], rows, offset, distribution, elapsed[rows], at_time)


def marginals(distribution: Prediction, event: str | None = None) -> list[tuple[str | None, SurvivalDistribution]]:
    """``[(event name or None, marginal)]``: one per event of a multi-event head (only ``event`` when
    given), the all-cause survival of a competing-risks head, the distribution itself otherwise."""
    if isinstance(distribution, MultiEvent):
        if event is not None:
            return [(event, distribution[event])]
        return [(name, distribution[name]) for name in distribution.names]
    if isinstance(distribution, CompetingRisksDistribution):
        return [(None, distribution.overall())]
    return [(None, distribution)]


def conditional(distribution: SurvivalDistribution, offset: np.ndarray) -> SurvivalDistribution:
    """The landmark view: the distribution of R − e given R > e (``distribution`` itself when every
    offset e is 0, so that closed-form quantiles stay closed-form)."""
    if not np.any(offset > 0):
        return distribution
    return distribution.conditional(torch.as_tensor(offset, dtype=distribution.dtype, device=distribution.device))


def competing_risk(distribution: CompetingRisksDistribution, offset: np.ndarray, horizons: np.ndarray,
                   cause: int | None) -> torch.Tensor:
    """P(event (of ``cause``) in (s, s + Δ] | T > s) = (F_k(e + Δ) − F_k(e)) / S(e), e = s − v ``[n, H]``;
    ``cause=None``: any cause, 1 − S(e + Δ) / S(e)."""
    overall = distribution.overall()
    e = torch.as_tensor(offset, dtype=overall.dtype, device=overall.device).unsqueeze(-1)
    durations = torch.as_tensor(horizons, dtype=overall.dtype, device=overall.device)
    at_end = e + durations
    survival_start = overall.survival(e)
    if cause is None:
        return 1.0 - overall.survival(at_end) / survival_start
    if not 1 <= cause <= distribution.num_causes:
        raise ConfigError(f"cause must be in 1..{distribution.num_causes}, got {cause}")
    cif = distribution.cif(at_end)[..., cause - 1, :] - distribution.cif(e)[..., cause - 1, :]
    return cif / survival_start
