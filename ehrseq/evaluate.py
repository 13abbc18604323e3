"""Landmark evaluation of dynamic predictions (docs/reference.md §B, docs/design.md §6).

For a landmark s (days since each patient's origin) and a horizon Δ (days):

* **at-risk set** — test patients with Y > s and at least one visit at or before s;
* **prediction** — the model's risk 1 − P(T > s + Δ | T > s, history ≤ s), from the last visit ≤ s;
* **outcome from s** — time t = Y − s and the event type; the event of interest is k (``event``) and
  any other type is a *competing* event, which ends follow-up and can never be followed by k;
* **metrics** — the competing-risks versions (:mod:`ehrseq.metrics.competing`), which are the usual
  ones when no competing event occurs: ``c_index`` is Wolbers' concordance in the window (events after
  s + Δ censored at Δ; a patient with a competing event is known to stay free of k longer than any
  case — without competing events, Harrell's C); ``uno_c`` its IPCW version truncated at Δ (Uno's C);
  ``auc`` the cumulative/dynamic AUC at Δ (cases: k by Δ; controls: free of k at Δ, competing events
  included, Blanche et al. 2013); ``brier`` the IPCW Brier score of the predicted incidence of k at Δ
  (a competing event by Δ is an observed 0); ``ibs`` its integral over ``ibs_points`` horizons in
  (0, Δ]. Treating competing events as censored instead would score the models against a world
  without competing events.
* **censoring weights** — a Kaplan–Meier of the censoring distribution (an event of any type ends
  follow-up uncensored) fitted on the *training* patients at risk at s, on the same time-from-s
  scale, frozen (never refitted on the test set).

Reported per (landmark, horizon): ``n_at_risk``, ``n_events`` (of type k in the window), the metrics
above, and calibration-in-the-large: ``mean_risk`` (mean predicted) vs ``observed_risk``, the
Aalen–Johansen cumulative incidence of k at Δ in the at-risk set, F_k(Δ) = Σ_{t_j ≤ Δ} Ŝ(t_j−) d_kj / n_j
with Ŝ the all-cause Kaplan–Meier (1 − Kaplan–Meier without competing events; 1 − KM with the other
types censored would overstate it).

Competing-risks models (``competing_pmf`` heads) are asked for the cumulative incidence of the event
type of interest (``cause=event``); other options of ``predict_risk`` (e.g. ``{"event": "diabetes"}``
for a multi-event model, with the outcome table of that event) go in ``prediction_options``.
Metrics that are undefined for a window (no event, no comparable pair, horizon beyond the training
censoring support) are reported as null with the reason in ``note`` — never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl

from ehrseq.data import build_cohort
from ehrseq.errors import ConfigError
from ehrseq.metrics import (
    CensoringDistribution,
    aalen_johansen,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
)


class RiskModel(Protocol):
    """Anything that predicts landmark risks: fitted :class:`~ehrseq.DynamicSurvival` models and the
    baselines of :mod:`ehrseq.baselines`."""

    def predict_risk(self, visits: Any, horizon: Any, *, landmark: Any = None, outcomes: Any = None) -> pl.DataFrame: ...


def _outcomes_since_origin(visits: Any, outcomes: Any, model: Any, origin: str | None) -> pl.DataFrame:
    """patient_id, outcome time Y − origin and event, read with the model's own table settings when it
    has them (so that origins and dropped rows agree with its predictions)."""
    settings = getattr(model, "cohort_settings", None)
    if settings is not None and origin is None:
        cohort = settings.build(visits, outcomes, unmatched="drop")
    else:
        cohort = build_cohort(visits, outcomes, origin=origin or "first_visit", unmatched="drop")
    return cohort.patients.select("patient_id", "outcome_time", "event")


def landmark(
    model: RiskModel,
    visits: Any,
    outcomes: Any,
    landmarks: Sequence[float],
    horizons: Sequence[float],
    train_outcomes: tuple[Any, Any] | Any,
    *,
    event: int = 1,
    origin: str | None = None,
    min_at_risk: int = 10,
    ibs_points: int = 20,
    prediction_options: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """Evaluate ``model`` at every (landmark, horizon): one row each (see the module docstring).

    Parameters
    ----------
    model: has ``predict_risk(visits, horizon, landmark=s, outcomes=...)``.
    visits, outcomes: the test tables (same contract as for fitting).
    landmarks, horizons: days since origin, and days after the landmark.
    train_outcomes: the training ``(visits, outcomes)`` pair (tuple or list), or the training outcome table when the
        origin is the first visit's time 0 of a day clock (then Y − origin = Y); used only to fit the
        censoring distribution.
    event: the event type of interest k (other types are competing events, see the module docstring).
    origin: how times since origin are measured; defaults to the model's own table settings
        (``model.cohort_settings``) or, for models without them, ``"first_visit"``.
    min_at_risk: windows with fewer patients at risk are reported with null metrics.
    prediction_options: further keyword arguments of ``model.predict_risk`` (``cause`` defaults to
        ``event`` for competing-risks models).
    """
    if not landmarks or not horizons:
        raise ConfigError("landmarks and horizons must each hold at least one value")
    horizons = sorted(float(h) for h in horizons)
    if horizons[0] <= 0:
        raise ConfigError("horizons must be > 0 days")
    test = _outcomes_since_origin(visits, outcomes, model, origin)
    if isinstance(train_outcomes, (tuple, list)) and len(train_outcomes) == 2:
        train = _outcomes_since_origin(*train_outcomes, model, origin)
    else:
        train = pl.DataFrame(train_outcomes).select(
            "patient_id", pl.col("time").cast(pl.Float64).alias("outcome_time"), pl.col("event").cast(pl.Int64)
        )
    options = dict(prediction_options or {})
    head = getattr(getattr(model, "model_config_", None), "head", None)
    if getattr(head, "kind", None) == "competing_pmf":
        options.setdefault("cause", event)
    rows = []
    for s in landmarks:
        s = float(s)
        at_risk_train = train.filter(pl.col("outcome_time") > s)
        censoring = None
        if at_risk_train.height:
            train_time = at_risk_train["outcome_time"].to_numpy() - s
            train_event = at_risk_train["event"].to_numpy() != 0
            censoring = CensoringDistribution.fit(train_time, train_event)
        grid = np.unique(np.concatenate([np.asarray(horizons),
                                         *[np.linspace(h / ibs_points, h, ibs_points) for h in horizons]]))
        predictions = model.predict_risk(visits, grid, landmark=s, outcomes=outcomes, **options)
        wide = (
            predictions.pivot(on="horizon", index="patient_id", values="risk")
            .join(test, on="patient_id", how="inner")
            .filter(pl.col("outcome_time") > s)
        )
        risk_columns = [_column(wide, h) for h in grid]
        for h in horizons:
            rows.append(_window_metrics(wide, risk_columns, grid, s, h, event, censoring, min_at_risk, ibs_points))
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


_SCHEMA = {
    "landmark": pl.Float64, "horizon": pl.Float64, "n_at_risk": pl.Int64, "n_events": pl.Int64,
    "c_index": pl.Float64, "uno_c": pl.Float64, "auc": pl.Float64, "brier": pl.Float64, "ibs": pl.Float64,
    "mean_risk": pl.Float64, "observed_risk": pl.Float64, "note": pl.String,
}


def _column(frame: pl.DataFrame, value: float) -> str:
    """The pivoted column holding horizon ``value`` (pivot names floats by their string form)."""
    for name in frame.columns:
        try:
            if float(name) == value:
                return name
        except ValueError:
            continue
    raise KeyError(value)


def _window_metrics(wide: pl.DataFrame, risk_columns: list[str], grid: np.ndarray, s: float, h: float, event: int,
                    censoring: CensoringDistribution | None, min_at_risk: int, ibs_points: int) -> tuple:
    """One row of the landmark table. The metrics are the competing-risks versions (see the module
    docstring); without competing events in the window they are Harrell's and Uno's C, the
    cumulative/dynamic AUC, the Brier score and 1 − Kaplan–Meier."""
    n = wide.height
    time = wide["outcome_time"].to_numpy() - s
    event_type = wide["event"].to_numpy()
    window_type = np.where(time <= h, event_type, 0)
    n_events = int(np.sum(window_type == event))
    risk = wide[risk_columns[int(np.searchsorted(grid, h))]].to_numpy()
    mean_risk = float(risk.mean()) if n else None
    if n < min_at_risk:
        return (s, h, n, n_events, None, None, None, None, None, mean_risk, None,
                f"fewer than {min_at_risk} patients at risk")
    notes: list[str] = []
    values: dict[str, float | None] = dict.fromkeys(("c_index", "uno_c", "auc", "brier", "ibs"))
    observed_risk = cumulative_incidence(time, event_type, event, h)
    if n_events == 0:
        notes.append("no event in the window")
    else:
        _try(values, "c_index", notes,
             lambda: cause_specific_harrell_c(np.minimum(time, h), window_type, risk, cause=event).cindex)
    if censoring is None:
        notes.append("no training patient at risk at the landmark")
    else:
        if n_events:
            _try(values, "uno_c", notes,
                 lambda: cause_specific_uno_c(time, event_type, risk, censoring, cause=event, tau=h).cindex)
            _try(values, "auc", notes, lambda: cause_specific_auc(time, event_type, risk, np.array([h]), censoring,
                                                                 cause=event).auc[0])
        _try(values, "brier", notes, lambda: cause_specific_brier_score(time, event_type, risk[:, None],
                                                                       np.array([h]), censoring, cause=event)[0])
        inside = grid[(grid > 0) & (grid <= h)]
        if inside.size >= 2:
            incidence = wide.select([risk_columns[int(np.searchsorted(grid, t))] for t in inside]).to_numpy()
            _try(values, "ibs", notes, lambda: cause_specific_integrated_brier_score(
                time, event_type, incidence, inside, censoring, cause=event))
    return (s, h, n, n_events, values["c_index"], values["uno_c"], values["auc"], values["brier"], values["ibs"],
            mean_risk, observed_risk, "; ".join(notes) or None)


def cumulative_incidence(time: np.ndarray, event_type: np.ndarray, event: int, horizon: float) -> float:
    """Aalen–Johansen cumulative incidence of type ``event`` at ``horizon``
    (:func:`ehrseq.metrics.aalen_johansen`; ``event_type`` 0 = censored)."""
    return float(aalen_johansen(time, event_type, event, [horizon])[0])


def _try(values: dict[str, float | None], key: str, notes: list[str], compute) -> None:
    try:
        values[key] = float(compute())
    except ValueError as exc:  # undefined for this window (documented): keep the reason
        notes.append(f"{key}: {str(exc).splitlines()[0]}")
