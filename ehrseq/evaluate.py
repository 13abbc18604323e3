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

Competing-risks models (heads whose family is ``competing``, e.g. ``competing_pmf``) are asked for the cumulative incidence of the event
type of interest (``cause=event``); other options of ``predict_risk`` (e.g. ``{"event": "diabetes"}``
for a multi-event model, with the outcome table of that event) go in ``prediction_options``.
Metrics that are undefined for a window (no event, no comparable pair, horizon beyond the training
censoring support) are reported as null with the reason in ``note`` — never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import polars as pl

from ehrseq.data import build_cohort, read_table
from ehrseq.data.specs import clock_kind
from ehrseq.data.validation import to_days
from ehrseq.errors import ConfigError, DataError, option
from ehrseq.metrics import (
    CensoringDistribution,
    aalen_johansen,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
)
from ehrseq.progress import Progress, progress_bar


class RiskModel(Protocol):
    """Anything that predicts landmark risks: fitted :class:`~ehrseq.DynamicSurvival` models and the
    baselines of :mod:`ehrseq.baselines`."""

    def predict_risk(self, visits: Any, horizon: Any, *, landmark: Any = None, outcomes: Any = None) -> pl.DataFrame: ...


def _cohort_patients(visits: Any, outcomes: Any, model: Any, origin: str | None) -> pl.DataFrame:
    """The patient table of the cohort of these tables, read with the model's own table settings when it
    has them (so that origins and dropped rows agree with its predictions)."""
    settings = getattr(model, "cohort_settings", None)
    if settings is not None and origin is None:
        cohort = settings.build(visits, outcomes, unmatched="drop")
    else:
        cohort = build_cohort(visits, outcomes, origin=origin or "first_visit", unmatched="drop")
    return cohort.patients


def _outcomes_since_origin(visits: Any, outcomes: Any, model: Any, origin: str | None) -> pl.DataFrame:
    """patient_id, outcome time Y − origin and event (see :func:`_cohort_patients`)."""
    return _cohort_patients(visits, outcomes, model, origin).select("patient_id", "outcome_time", "event")


def _model_origin(model: Any, origin: str | None) -> str | None:
    """How ``model`` measures time since origin (``origin`` when given); ``None`` when neither says."""
    settings = getattr(model, "cohort_settings", None)
    if origin is None and settings is not None:
        return settings.origin
    return origin


def outcomes_since_origin(tables: tuple[Any, Any] | Any, model: Any = None, origin: str | None = None, *,
                          first_visits_at_zero: bool = False) -> pl.DataFrame:
    """``patient_id, outcome_time, event``: outcome times Y − origin in days since each patient's origin.

    From a ``(visits, outcomes)`` pair (tuple or list), read with ``model``'s table settings when it has
    them. From an outcome table alone (``patient_id, time, event``; any source of
    :func:`ehrseq.data.read_table`) only when the table gives those times by itself — taking Y for
    Y − origin otherwise would shift every time silently:

    * with the origin known (``origin``, or the model's): an outcome-table origin column (Y − that column),
      ``"zero"`` (Y), or ``"first_visit"`` when ``first_visits_at_zero`` says the first visits are at day 0
      of a day clock (Y); otherwise a :class:`ConfigError` asking for the visits;
    * without a model or ``origin``: the times are taken as days since origin already (precomputed tables);
    * calendar times (dates) without an origin column are always refused: they are no days since origin.
    """
    if isinstance(tables, (tuple, list)) and len(tables) == 2:
        return _outcomes_since_origin(*tables, model, origin)
    frame = read_table(tables, "training outcomes")
    missing = [c for c in ("patient_id", "time", "event") if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}", table="training outcomes", column=missing[0],
                        rule="required_columns")
    where = option("train_outcomes", flag="--train-visits FILE", python="train_outcomes=(train_visits, train_outcomes)")
    origin_name = _model_origin(model, origin)
    if origin_name is not None and origin_name in frame.columns:
        since = to_days("time", frame.schema["time"]) - to_days(origin_name, frame.schema[origin_name])
    elif clock_kind(frame.schema["time"]) == "datetime":
        raise ConfigError(f"the training outcome times are dates ({frame.schema['time']}): the censoring distribution "
                          f"needs times since each patient's origin, which the training visits give; pass {where}")
    elif origin_name in (None, "zero") or (origin_name == "first_visit" and first_visits_at_zero):
        since = to_days("time", frame.schema["time"])
    else:
        raise ConfigError(f"the model measures time from each patient's {origin_name.replace('_', ' ')}, which is "
                          f"not at day 0 for every test patient: the training outcome table alone does not give "
                          f"times since origin; pass {where}")
    return frame.select("patient_id", since.alias("outcome_time"), pl.col("event").cast(pl.Int64))


def event_of_interest(models: Sequence[Any], event: int | None, test: pl.DataFrame, train: pl.DataFrame) -> int:
    """The event type k to evaluate: ``event``, or the type the models were fitted for (their ``cause``),
    else 1. A type that no test or training patient has, or another type than a model's ``cause``, is a
    :class:`ConfigError`: the metrics would compare risks of one type with outcomes of another."""
    causes = set()
    for model in models:
        objective = getattr(model, "objective", None)  # DynamicSurvival; the baselines have their own cause
        cause = getattr(objective, "cause", None) if objective is not None else getattr(model, "cause", None)
        if cause is not None:
            causes.add(int(cause))
    if event is None:
        event = causes.pop() if len(causes) == 1 else 1
    if isinstance(event, bool) or not isinstance(event, (int, np.integer)) or event < 1:
        raise ConfigError(f"{option('event', event)}: the event type of interest must be an int >= 1")
    other = sorted(causes - {int(event)})
    if other:
        raise ConfigError(f"{option('event', event)}: a model was fitted for event type {other[0]} (cause={other[0]}); "
                          f"its risks are not risks of type {event}")
    codes = {int(c) for c in pl.concat([test.get_column("event"), train.get_column("event")]).unique().to_list()}
    if event not in codes:
        present = ", ".join(str(c) for c in sorted(codes))
        hint = " (R's Surv() coding? ehrseq counts 0 = censored, 1..K = event types)" if 0 not in codes else ""
        raise ConfigError(f"{option('event', event)}: no test or training patient has event type {event} (event codes "
                          f"present: {present}){hint}; choose the event type with {option('event')}")
    return int(event)


def _read(table: Any, name: str, model: Any) -> pl.DataFrame:
    """A test table, read once with the model's null markers (any source of :func:`ehrseq.data.read_table`)."""
    settings = getattr(model, "cohort_settings", None)
    return read_table(table, name, null_values=getattr(settings, "null_values", None))


def evaluation_horizons(horizons: Sequence[float], ibs_points: int = 20) -> np.ndarray:
    """Every horizon a landmark table reads: the ``horizons`` and, for each horizon Δ, ``ibs_points``
    evenly spaced points in (0, Δ] for the integrated Brier score (sorted, unique)."""
    if not horizons:
        raise ConfigError("horizons must hold at least one value")
    values = sorted(float(h) for h in horizons)
    if values[0] <= 0:
        raise ConfigError("horizons must be > 0 days")
    return np.unique(np.concatenate([np.asarray(values), *[np.linspace(h / ibs_points, h, ibs_points) for h in values]]))


def windows_by_landmark(windows: Sequence[tuple[float, float]]) -> list[tuple[float, list[float]]]:
    """(landmark s, its horizons Δ) for the (s, Δ) ``windows``: landmarks increasing, each with its horizons
    increasing — the calls of :func:`landmark_predictions` / :func:`landmark_from_predictions` that score them."""
    landmarks = sorted({float(s) for s, _ in windows})
    return [(s, sorted(float(h) for landmark, h in windows if float(landmark) == s)) for s in landmarks]


def quantile_windows(times: np.ndarray, landmarks: Sequence[float] = (0.25, 0.5),
                     ends: Sequence[float] = (0.5, 0.75)) -> tuple[tuple[float, float], ...]:
    """(s, Δ) for s = the ``landmarks`` quantiles of ``times`` and every window end (``ends`` quantiles)
    after s; sorted, without repeats (tied quantiles give one window)."""
    windows = set()
    for p in landmarks:
        s = float(np.quantile(times, p))
        for q in ends:
            end = float(np.quantile(times, q))
            if end > s:
                windows.add((s, end - s))
    return tuple(sorted(windows))


def landmark_predictions(model: RiskModel, visits: Any, landmarks: Sequence[float], horizons: Sequence[float], *,
                         outcomes: Any = None, event: int = 1, ibs_points: int = 20,
                         prediction_options: Mapping[str, Any] | None = None,
                         on_landmark: Callable[[], Any] | None = None) -> pl.DataFrame:
    """``patient_id, landmark, horizon, risk``: the model's landmark risks at every landmark and every
    horizon of :func:`evaluation_horizons` — what :func:`landmark` scores (and what
    :func:`landmark_from_predictions` and :func:`compare_predictions` take precomputed).
    ``on_landmark()`` is called after each landmark (e.g. a progress bar's ``update``)."""
    grid = evaluation_horizons(horizons, ibs_points)
    options = dict(prediction_options or {})
    if getattr(getattr(model, "family_", None), "competing", False):
        options.setdefault("cause", event)
    frames = []
    for s in landmarks:
        predictions = model.predict_risk(visits, grid, landmark=float(s), outcomes=outcomes, **options)
        frames.append(predictions.select("patient_id", pl.lit(float(s)).alias("landmark"),
                                         pl.col("horizon").cast(pl.Float64), pl.col("risk").cast(pl.Float64)))
        if on_landmark is not None:
            on_landmark()
    return pl.concat(frames)


@dataclass(frozen=True)
class Window:
    """The test patients at risk in one (landmark s, horizon Δ) window and their predictions.

    ``patient_id [n]``; ``time [n]`` = Y − s; ``event_type [n]`` (0 censored); ``risk [n]`` the predicted
    risk at Δ; ``ibs_times [P]`` the predicted horizons in (0, Δ] and ``incidence [n, P]`` the risks there;
    ``censoring`` the censoring distribution of the training patients at risk at s (None if there is none).
    """

    landmark: float
    horizon: float
    patient_id: pl.Series
    time: np.ndarray
    event_type: np.ndarray
    risk: np.ndarray
    ibs_times: np.ndarray
    incidence: np.ndarray
    censoring: CensoringDistribution | None

    @property
    def n(self) -> int:
        return self.time.size

    def window_type(self) -> np.ndarray:
        """Event types within the window (events after s + Δ are censored at Δ)."""
        return np.where(self.time <= self.horizon, self.event_type, 0)


def landmark_windows(predictions: pl.DataFrame, test: pl.DataFrame, train: pl.DataFrame,
                     landmarks: Sequence[float], horizons: Sequence[float]) -> list[Window]:
    """One :class:`Window` per (landmark, horizon), landmarks in the given order, horizons increasing.

    ``predictions``: ``patient_id, landmark, horizon, risk`` (one risk per patient, landmark and horizon);
    ``test`` and ``train``: ``patient_id, outcome_time, event`` on the clock of the landmarks
    (:func:`outcomes_since_origin`). The at-risk set of s: test patients with a prediction at s and
    Y > s. Raises :class:`ConfigError` when a horizon of ``horizons`` was not predicted.
    """
    missing = {"patient_id", "landmark", "horizon", "risk"} - set(predictions.columns)
    if missing:
        raise ConfigError(f"predictions lack the column(s) {sorted(missing)} (need patient_id, landmark, horizon, risk)")
    duplicated = predictions.filter(pl.struct("patient_id", "landmark", "horizon").is_duplicated())
    if duplicated.height:
        raise ConfigError("predictions must hold one risk per (patient_id, landmark, horizon); duplicated for "
                          f"patient(s) {duplicated['patient_id'].unique().head(5).to_list()}")
    windows = []
    for s in landmarks:
        s = float(s)
        at_s = predictions.filter(pl.col("landmark") == s)
        grid = np.unique(at_s["horizon"].to_numpy())
        censoring = None
        at_risk_train = train.filter(pl.col("outcome_time") > s)
        if at_risk_train.height:
            censoring = CensoringDistribution.fit(at_risk_train["outcome_time"].to_numpy() - s,
                                                  at_risk_train["event"].to_numpy() != 0)
        wide = (
            at_s.pivot(on="horizon", index="patient_id", values="risk", sort_columns=True)
            .join(test, on="patient_id", how="inner")
            .filter(pl.col("outcome_time") > s)
            .sort("patient_id")
        )
        columns = {float(name): name for name in wide.columns if name not in ("patient_id", "outcome_time", "event")}
        for h in sorted(float(h) for h in horizons):
            if h not in columns:
                raise ConfigError(f"predictions at landmark {s:g} have no risk at horizon {h:g}")
            inside = grid[(grid > 0) & (grid <= h)]
            windows.append(Window(
                landmark=s, horizon=h, patient_id=wide["patient_id"],
                time=wide["outcome_time"].to_numpy() - s, event_type=wide["event"].to_numpy(),
                risk=wide[columns[h]].to_numpy().astype(np.float64),
                ibs_times=inside, incidence=wide.select([columns[t] for t in inside]).to_numpy().astype(np.float64),
                censoring=censoring,
            ))
    return windows


def landmark(
    model: RiskModel,
    visits: Any,
    outcomes: Any,
    landmarks: Sequence[float],
    horizons: Sequence[float],
    train_outcomes: tuple[Any, Any] | Any,
    *,
    event: int | None = None,
    origin: str | None = None,
    min_at_risk: int = 10,
    ibs_points: int = 20,
    prediction_options: Mapping[str, Any] | None = None,
    ci: float | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    progress: Progress = "auto",
) -> pl.DataFrame:
    """Evaluate ``model`` at every (landmark, horizon): one row each (see the module docstring).

    Parameters
    ----------
    model: has ``predict_risk(visits, horizon, landmark=s, outcomes=...)``.
    visits, outcomes: the test tables (same contract as for fitting; any source of
        :func:`ehrseq.data.read_table`, read once).
    landmarks, horizons: days since origin, and days after the landmark.
    train_outcomes: the training ``(visits, outcomes)`` pair (tuple or list), used only to fit the censoring
        distribution on times since each patient's origin. The training outcome table alone is accepted when
        it gives those times by itself (:func:`outcomes_since_origin`: an outcome-table origin column,
        ``origin="zero"``, or first visits at day 0 of a day clock, checked on the test patients); calendar
        times without the training visits are a ConfigError.
    event: the event type of interest k (other types are competing events, see the module docstring); default
        the type the model was fitted for (its ``cause``), else 1 (see :func:`event_of_interest`).
    origin: how times since origin are measured; defaults to the model's own table settings
        (``model.cohort_settings``) or, for models without them, ``"first_visit"``.
    min_at_risk: windows with fewer patients at risk are reported with null metrics.
    prediction_options: further keyword arguments of ``model.predict_risk`` (``cause`` defaults to
        ``event`` for competing-risks models).
    ci: with a level (e.g. 0.95), percentile bootstrap intervals over the test patients for the C-index,
        Uno's C, AUC, Brier score and IBS of every window (columns ``<metric>_lower``, ``<metric>_upper``;
        :mod:`ehrseq.bootstrap`), from ``n_bootstrap`` resamples drawn with ``seed``.
    progress: a progress bar over the landmarks (``"auto"``: on a terminal only).
    """
    with progress_bar(progress, total=len(landmarks), desc="evaluating", unit="landmark") as bar:
        return _landmark(model, visits, outcomes, landmarks, horizons, train_outcomes, event=event, origin=origin,
                         min_at_risk=min_at_risk, ibs_points=ibs_points, prediction_options=prediction_options, ci=ci,
                         n_bootstrap=n_bootstrap, seed=seed, on_landmark=bar.update)


def landmark_models(models: Mapping[str, RiskModel], visits: Any, outcomes: Any, landmarks: Sequence[float],
                    horizons: Sequence[float], train_outcomes: tuple[Any, Any] | Any, *, progress: Progress = "auto",
                    **options: Any) -> pl.DataFrame:
    """:func:`landmark` of several models on the same tables (read once), stacked, with their name in a first
    column ``model`` (in the order given), under one progress bar over every (model, landmark). ``options``
    are those of :func:`landmark`."""
    if not models:
        raise ConfigError("landmark_models needs at least one model")
    first = next(iter(models.values()))
    visits, outcomes = _read(visits, "visits", first), _read(outcomes, "outcomes", first)
    tables = []
    with progress_bar(progress, total=len(models) * len(landmarks), desc="evaluating", unit="landmark") as bar:
        for name, model in models.items():
            table = _landmark(model, visits, outcomes, landmarks, horizons, train_outcomes, on_landmark=bar.update,
                              **options)
            tables.append(table.select(pl.lit(name, dtype=pl.String).alias("model"), pl.all()))
    return pl.concat(tables)


def _landmark(model: RiskModel, visits: Any, outcomes: Any, landmarks: Sequence[float], horizons: Sequence[float],
              train_outcomes: Any, *, event: int | None = None, origin: str | None = None, min_at_risk: int = 10,
              ibs_points: int = 20, prediction_options: Mapping[str, Any] | None = None, ci: float | None = None,
              n_bootstrap: int = 1000, seed: int = 0, on_landmark: Callable[[], Any] | None = None) -> pl.DataFrame:
    """:func:`landmark` (``on_landmark()`` after each landmark)."""
    if not landmarks or not horizons:
        raise ConfigError("landmarks and horizons must each hold at least one value")
    visits, outcomes = _read(visits, "visits", model), _read(outcomes, "outcomes", model)
    patients = _cohort_patients(visits, outcomes, model, origin)
    test = patients.select("patient_id", "outcome_time", "event")
    train = outcomes_since_origin(train_outcomes, model, origin,
                                  first_visits_at_zero=bool((patients["origin"] == 0).all()))
    event = event_of_interest([model], event, test, train)
    predictions = landmark_predictions(model, visits, landmarks, horizons, outcomes=outcomes, event=event,
                                       ibs_points=ibs_points, prediction_options=prediction_options,
                                       on_landmark=on_landmark)
    return landmark_from_predictions(predictions, test, train, landmarks, horizons, event=event,
                                     min_at_risk=min_at_risk, ci=ci, n_bootstrap=n_bootstrap, seed=seed)


def landmark_from_predictions(predictions: pl.DataFrame, test: pl.DataFrame, train: pl.DataFrame,
                              landmarks: Sequence[float], horizons: Sequence[float], *, event: int = 1,
                              min_at_risk: int = 10, ci: float | None = None, n_bootstrap: int = 1000,
                              seed: int = 0) -> pl.DataFrame:
    """The table of :func:`landmark` from precomputed risks (arguments as for :func:`landmark_windows`;
    the integrated Brier score integrates over the predicted horizons in (0, Δ])."""
    windows = landmark_windows(predictions, test, train, landmarks, horizons)
    table = metrics_table([window_metrics(w, event, min_at_risk) for w in windows])
    if ci is None:
        return table
    from ehrseq.bootstrap import landmark_intervals

    return landmark_intervals(table, windows, test["patient_id"], event=event, level=ci, n_bootstrap=n_bootstrap,
                              seed=seed)


#: The metrics of a landmark window that have bootstrap intervals.
INTERVAL_METRICS = ("c_index", "uno_c", "auc", "brier", "ibs")


@dataclass(frozen=True)
class WindowMetrics:
    """One row of the landmark table (see the module docstring); metrics undefined for the window are
    ``None``, with the reason in ``note``."""

    landmark: float
    horizon: float
    n_at_risk: int
    n_events: int
    c_index: float | None = None
    uno_c: float | None = None
    auc: float | None = None
    brier: float | None = None
    ibs: float | None = None
    mean_risk: float | None = None
    observed_risk: float | None = None
    note: str | None = None

    def defined(self) -> list[str]:
        """The metrics of :data:`INTERVAL_METRICS` that have a value."""
        return [name for name in INTERVAL_METRICS if getattr(self, name) is not None]


_SCHEMA = {
    "landmark": pl.Float64, "horizon": pl.Float64, "n_at_risk": pl.Int64, "n_events": pl.Int64,
    **dict.fromkeys(("c_index", "uno_c", "auc", "brier", "ibs", "mean_risk", "observed_risk"), pl.Float64),
    "note": pl.String,
}


def metrics_table(rows: Sequence[WindowMetrics]) -> pl.DataFrame:
    """The landmark table of ``rows``, one row each, columns in the order of :class:`WindowMetrics`."""
    return pl.DataFrame([asdict(row) for row in rows], schema=_SCHEMA)


def window_metrics(window: Window, event: int, min_at_risk: int) -> WindowMetrics:
    """One row of the landmark table. The metrics are the competing-risks versions (see the module
    docstring); without competing events in the window they are Harrell's and Uno's C, the
    cumulative/dynamic AUC, the Brier score and 1 − Kaplan–Meier."""
    n, s, h = window.n, window.landmark, window.horizon
    time, event_type, risk, censoring = window.time, window.event_type, window.risk, window.censoring
    window_type = window.window_type()
    n_events = int(np.sum(window_type == event))
    mean_risk = float(risk.mean()) if n else None
    if n < min_at_risk:
        return WindowMetrics(s, h, n, n_events, mean_risk=mean_risk, note=f"fewer than {min_at_risk} patients at risk")
    notes: list[str] = []
    values: dict[str, float | None] = dict.fromkeys(INTERVAL_METRICS)
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
        if window.ibs_times.size >= 2:
            _try(values, "ibs", notes, lambda: cause_specific_integrated_brier_score(
                time, event_type, window.incidence, window.ibs_times, censoring, cause=event))
    return WindowMetrics(s, h, n, n_events, **values, mean_risk=mean_risk, observed_risk=observed_risk,
                         note="; ".join(notes) or None)


def cumulative_incidence(time: np.ndarray, event_type: np.ndarray, event: int, horizon: float) -> float:
    """Aalen–Johansen cumulative incidence of type ``event`` at ``horizon``
    (:func:`ehrseq.metrics.aalen_johansen`; ``event_type`` 0 = censored)."""
    return float(aalen_johansen(time, event_type, event, [horizon])[0])


def _try(values: dict[str, float | None], key: str, notes: list[str], compute) -> None:
    try:
        values[key] = float(compute())
    except ValueError as exc:  # undefined for this window (documented): keep the reason
        notes.append(f"{key}: {str(exc).splitlines()[0]}")


def __getattr__(name: str) -> Any:
    """:func:`compare` and :func:`compare_predictions` live in :mod:`ehrseq.bootstrap`."""
    if name in ("compare", "compare_predictions"):
        from ehrseq import bootstrap

        return getattr(bootstrap, name)
    raise AttributeError(f"module 'ehrseq.evaluate' has no attribute {name!r}")
