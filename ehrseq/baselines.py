"""Baselines for dynamic prediction (scikit-survival): Kaplan–Meier, landmark Cox, landmark random survival forest.

They read tables with the same rules as :class:`~ehrseq.DynamicSurvival` (:class:`~ehrseq.settings.CohortSettings`:
same origins, dropped visits and ids) and predict with its interface, so
:func:`ehrseq.evaluate.landmark` evaluates them unchanged::

    cox = LandmarkCox().fit(visits, outcomes)
    cox.predict_risk(visits, horizon=365, landmark=730)    # patient_id, landmark, visit_time, horizon, risk

**Time.** As in the estimator: a landmark s is in days since each patient's origin, durations Δ in days
after it. A prediction at s uses the history up to s (visits with elapsed time ≤ s; patients without one
get no row) and is P(T > s + Δ | T > s, history ≤ s). Without a landmark, s is each patient's last visit
(``at="last"``) or every visit (``at="all"``, in :meth:`predict_survival`).

**Landmark features** (:class:`LandmarkCox`, :class:`LandmarkRandomForest`), computed at s from the visits
up to s with one as-of join (no loop over patients): the last observed value of every numeric and
categorical feature (last observation carried forward), its missingness when never observed (indicator
columns and the training mean, or the training mean only), categorical levels one-hot against the first
training level (a level unseen in training counts as the first), with ``history=True`` (the default) s − (last
visit) and the number of visits so far, counts of the ``n_codes`` most frequent training codes so far, and s
itself. ``history=False`` leaves out the two visit-history columns: the classical landmark model on the last
observed covariates only.

**Fitting: a landmark super-model** (van Houwelingen 2007). Every training patient at risk at a fitting
landmark s_j (Y > s_j, ≥ 1 visit ≤ s_j) contributes one row: features at s_j, time Y − s_j and the
event, administratively censored at s_j + ``window``. One model over the stacked rows, with s as a
covariate, predicts at any landmark (not only the fitted ones) and borrows strength across landmarks,
which per-landmark models on a few hundred patients (PBC) cannot. Rows of one patient are correlated;
that affects standard errors, not the point predictions used here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import kaplan_meier_estimator

from ehrseq.data import Cohort
from ehrseq.errors import ConfigError, DataError, option
from ehrseq.predict import Reach
from ehrseq.settings import CohortSettings

__all__ = ["BASELINES", "KaplanMeier", "LandmarkCox", "LandmarkRandomForest", "landmark_features", "reading_like"]


# ---------------------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class _Queries:
    """Prediction points: one row per (patient, s) with s ≥ the patient's first kept visit."""

    patient_index: np.ndarray  # [n] row in the cohort's patient table
    s: np.ndarray  # [n] days since origin
    visit_days: np.ndarray  # [n] internal clock of the last visit ≤ s


def _durations(values: Any, name: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ConfigError(f"{name} must be one or more finite durations >= 0 (days), got {values!r}")
    return array


def _landmark_value(landmark: Any) -> float:
    if isinstance(landmark, bool) or not isinstance(landmark, (int, float, np.integer, np.floating)):
        raise ConfigError(f"baselines take a numeric landmark (days since origin), got {landmark!r}")
    value = float(landmark)
    if not math.isfinite(value):
        raise ConfigError(f"landmark must be finite, got {landmark!r}")
    return value


def _queries(cohort: Cohort, at: str, landmark: Any) -> _Queries:
    visits = cohort.visits
    if landmark is not None:
        s = _landmark_value(landmark)
        last = (visits.filter(pl.col("elapsed") <= s).group_by("patient_index", maintain_order=True)
                .agg(pl.col("time").last()))
        return _Queries(last["patient_index"].to_numpy(), np.full(last.height, s), last["time"].to_numpy())
    if at == "last":
        rows = cohort.offsets[1:] - 1
    elif at == "all":
        rows = np.arange(visits.height)
    else:
        raise ConfigError(f"at must be 'last' or 'all', got {at!r}")
    return _Queries(visits["patient_index"].to_numpy()[rows], visits["elapsed"].to_numpy()[rows],
                    visits["time"].to_numpy()[rows])


def landmark_features(cohort: Cohort, patient_index: np.ndarray, s: np.ndarray, codes: Sequence[str] = ()) -> pl.DataFrame:
    """Raw landmark features of patient ``patient_index[i]`` at ``s[i]`` days since origin, ``[n]`` rows in
    query order: ``patient_index, s``, the last observed value of every numeric and categorical feature
    at a visit ≤ s (null if never observed), ``since_last_visit`` (s − last visit ≤ s), ``n_visits`` (visits
    ≤ s) and ``code:<c>`` (visits ≤ s recording code c) for each of ``codes``. Every query needs a visit ≤ s.
    """
    columns = [*cohort.numeric, *cohort.categorical]
    carried = [pl.col(c).forward_fill().over("patient_index") for c in columns]
    code_counts = []
    if codes and cohort.codes is not None:
        as_text = pl.col(cohort.codes).cast(pl.List(pl.String))
        recorded = [(as_text.list.count_matches(c) > 0).fill_null(False) for c in codes]  # a null list: no codes
        code_counts = [flag.cast(pl.Int64).cum_sum().over("patient_index").alias(f"code:{c}")
                       for flag, c in zip(recorded, codes)]
    history = cohort.visits.select(
        "patient_index", "elapsed", *carried,
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("patient_index").alias("n_visits"),
        *code_counts,
    ).sort("elapsed")
    queries = pl.DataFrame({"row": np.arange(len(s)), "patient_index": np.asarray(patient_index, dtype=np.int64),
                            "s": np.asarray(s, dtype=np.float64)})
    joined = queries.sort("s").join_asof(history, left_on="s", right_on="elapsed", by="patient_index",
                                         strategy="backward", check_sortedness=False).sort("row")
    if joined["elapsed"].null_count():
        raise ConfigError("every landmark query needs a visit at or before its landmark")
    return joined.select(
        "patient_index", "s", *columns, (pl.col("s") - pl.col("elapsed")).alias("since_last_visit"), "n_visits",
        *[c.meta.output_name() for c in code_counts],
    )


# ---------------------------------------------------------------------------------------------- base
class _Baseline:
    """Cohort handling and the prediction interface shared by the baselines."""

    def __init__(self, *, numeric: Sequence[str] | None, categorical: Sequence[str] | None, codes: str | None,
                 origin: str, duplicates: str, unmatched: str, max_visits: int | None, cause: int) -> None:
        self.cohort_settings = CohortSettings(
            numeric=tuple(numeric) if numeric is not None else None,
            categorical=tuple(categorical) if categorical is not None else None,
            codes=codes, origin=origin, duplicates=duplicates, unmatched=unmatched, max_visits=max_visits,
        )
        if not isinstance(cause, int) or cause < 1:
            raise ConfigError(f"cause must be an event type >= 1, got {cause!r}")
        self.cause = cause

    # subclasses: fit state and the conditional survival of queries, [n, U]
    def _conditional_survival(self, cohort: Cohort, queries: _Queries, durations: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit()")

    def _train_cohort(self, visits: Any, outcomes: Any) -> Cohort:
        cohort = self.cohort_settings.build(visits, outcomes)
        if cohort.n_patients == 0:
            raise DataError("no training patient has a visit before the outcome")
        self.n_train_ = cohort.n_patients
        # landmark models read no visit-relative time: only the follow-up rule of ehrseq.predict applies
        self.reach_ = Reach(follow_up=Reach.of(cohort).follow_up)
        return cohort

    def _cohort(self, visits: Any, outcomes: Any) -> Cohort:
        self._check_fitted()
        if outcomes is None and self.cohort_settings.origin not in ("first_visit", "zero"):
            raise ConfigError(f"the model measures time from the outcome-table column {self.cohort_settings.origin!r}; "
                              f"pass {option('outcomes')} to predict")
        return self.cohort_settings.build(visits, outcomes, unmatched="drop" if outcomes is not None else None)

    def _long(self, cohort: Cohort, queries: _Queries, durations: np.ndarray, values: np.ndarray,
              value_name: str, landmark: Any) -> pl.DataFrame:
        n, u = values.shape
        repeat = np.repeat(np.arange(n), u)
        frame: dict[str, Any] = {"patient_id": cohort.patients["patient_id"].gather(queries.patient_index[repeat])}
        if landmark is not None:
            frame["landmark"] = pl.Series(np.full(n * u, float(landmark)), dtype=pl.Float64)
        frame["visit_time"] = cohort.to_clock(queries.visit_days[repeat])
        frame["horizon"] = np.tile(durations, n)
        frame[value_name] = values.reshape(-1)
        frame["extrapolated"] = self.reach_.beyond(np.zeros(n), queries.s, durations).reshape(-1)
        return pl.DataFrame(frame)

    def predict_survival(self, visits: Any, times: float | Sequence[float], *, at: str = "last", landmark: Any = None,
                         outcomes: Any = None) -> pl.DataFrame:
        """P(T > s + u | T > s, history ≤ s) for u in ``times`` (days): ``patient_id, [landmark,] visit_time,
        horizon, survival, extrapolated`` (s = the landmark, the last visit or every visit; see the module
        docstring; ``extrapolated``: s + u beyond the longest training follow-up)."""
        durations = _durations(times, "times")
        cohort = self._cohort(visits, outcomes)
        queries = _queries(cohort, at, landmark)
        survival = self._conditional_survival(cohort, queries, durations)
        return self._long(cohort, queries, durations, survival, "survival", landmark)

    def predict_risk(self, visits: Any, horizon: float | Sequence[float], *, landmark: Any = None, at: str = "last",
                     outcomes: Any = None) -> pl.DataFrame:
        """P(T ≤ s + Δ | T > s, history ≤ s) for Δ in ``horizon`` (days): ``patient_id, [landmark,] visit_time,
        horizon, risk, extrapolated``."""
        horizons = _durations(horizon, "horizon")
        cohort = self._cohort(visits, outcomes)
        queries = _queries(cohort, at, landmark)
        risk = 1.0 - self._conditional_survival(cohort, queries, horizons)
        return self._long(cohort, queries, horizons, risk, "risk", landmark)


def _step(grid: np.ndarray, values: np.ndarray, t: np.ndarray, before: float) -> np.ndarray:
    """Right-continuous step function with value ``before`` left of ``grid[0]``, at ``t`` (any shape)."""
    index = np.searchsorted(grid, t, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], before)


# ---------------------------------------------------------------------------------------------- Kaplan–Meier
class KaplanMeier(_Baseline):
    """No covariates: the landmark-conditional Kaplan–Meier of the training outcomes,
    P(T > s + Δ | T > s) = S(s + Δ) / S(s), times since origin (the same for every patient at risk).

    Where S(s) = 0 (s beyond the last training event with no survivor) the risk is 1.
    """

    def __init__(self, *, origin: str = "first_visit", duplicates: str = "error", unmatched: str = "error",
                 cause: int = 1) -> None:
        super().__init__(numeric=(), categorical=(), codes=None, origin=origin, duplicates=duplicates,
                         unmatched=unmatched, max_visits=None, cause=cause)

    def fit(self, visits: Any, outcomes: Any) -> KaplanMeier:
        """Fit S on the training patients' outcome times since origin (other event types censored)."""
        patients = self._train_cohort(visits, outcomes).patients
        event = patients["event"].to_numpy() == self.cause
        self.times_, self.survival_ = kaplan_meier_estimator(event, patients["outcome_time"].to_numpy())
        return self

    def survival(self, t: Any) -> np.ndarray:
        """The fitted S(t), t in days since origin (any shape)."""
        self._check_fitted()
        return _step(self.times_, self.survival_, np.asarray(t, dtype=np.float64), 1.0)

    def _conditional_survival(self, cohort: Cohort, queries: _Queries, durations: np.ndarray) -> np.ndarray:
        at_s = self.survival(queries.s)[:, None]
        later = self.survival(queries.s[:, None] + durations[None, :])
        return np.divide(later, at_s, out=np.zeros(later.shape), where=at_s > 0)


# ---------------------------------------------------------------------------------------------- landmark models
class _LandmarkModel(_Baseline):
    """Landmark features, the stacked training design and the design matrix (see the module docstring)."""

    def __init__(self, *, landmarks: Sequence[float] | None, window: float | None, missing: str, n_codes: int,
                 history: bool,
                 numeric: Sequence[str] | None, categorical: Sequence[str] | None, codes: str | None, origin: str,
                 duplicates: str, unmatched: str, max_visits: int | None, cause: int) -> None:
        super().__init__(numeric=numeric, categorical=categorical, codes=codes, origin=origin, duplicates=duplicates,
                         unmatched=unmatched, max_visits=max_visits, cause=cause)
        if missing not in ("indicator", "mean"):
            raise ConfigError(f"missing must be 'indicator' or 'mean', got {missing!r}")
        if window is not None and not (math.isfinite(window) and window > 0):
            raise ConfigError(f"window must be a positive number of days or None, got {window!r}")
        if not isinstance(n_codes, int) or n_codes < 0:
            raise ConfigError(f"n_codes must be an int >= 0, got {n_codes!r}")
        self.landmarks = None if landmarks is None else tuple(_landmark_value(s) for s in landmarks)
        self.window = window
        self.missing = missing
        self.n_codes = n_codes
        self.history = history

    # --- stacked design
    def _fit_landmarks(self, cohort: Cohort) -> np.ndarray:
        if self.landmarks is not None:
            if not self.landmarks:
                raise ConfigError("landmarks must hold at least one value")
            return np.asarray(sorted(set(self.landmarks)))
        patients = cohort.patients
        start = max(0.0, float(np.median(patients["first_visit"].to_numpy())))
        stop = float(np.quantile(patients["outcome_time"].to_numpy(), 0.75))
        return np.unique(np.linspace(start, max(stop, start), 10))

    def stacked_design(self, visits: Any, outcomes: Any) -> pl.DataFrame:
        """The stacked training rows: raw landmark features (:func:`landmark_features`) of every patient at
        risk at every fitting landmark, with ``time`` (Y − s, capped at ``window``) and ``event``. Code
        counts are those of the codes chosen at fit time (none before fitting)."""
        return self._stack(self.cohort_settings.build(visits, outcomes))

    def _stack(self, cohort: Cohort) -> pl.DataFrame:
        patients = cohort.patients
        y = patients["outcome_time"].to_numpy()
        event = patients["event"].to_numpy() == self.cause
        first = patients["first_visit"].to_numpy()
        marks = self._fit_landmarks(cohort)
        at_risk = (y[None, :] > marks[:, None]) & (first[None, :] <= marks[:, None])
        mark_index, patient_index = np.nonzero(at_risk)
        if patient_index.size == 0:
            raise DataError("no training patient is at risk at any fitting landmark", table="outcomes")
        s = marks[mark_index]
        remaining = y[patient_index] - s
        window = np.inf if self.window is None else float(self.window)
        features = landmark_features(cohort, patient_index, s, self.codes_ if hasattr(self, "codes_") else ())
        return features.with_columns(pl.Series("time", np.minimum(remaining, window)),
                                     pl.Series("event", event[patient_index] & (remaining <= window)))

    def _fit_design(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.codes_: tuple[str, ...] = ()
        if self.n_codes and cohort.codes is not None:
            counts = (cohort.visits.select(pl.col(cohort.codes).cast(pl.List(pl.String)).list.unique().explode())
                      .drop_nulls().to_series().value_counts(sort=True))
            self.codes_ = tuple(counts[:, 0].head(self.n_codes).to_list())
        stacked = self._stack(cohort)
        self.fit_landmarks_ = self._fit_landmarks(cohort)
        self.numeric_ = cohort.numeric
        self.categorical_ = cohort.categorical
        self.means_ = {c: (float(stacked[c].mean()) if stacked[c].null_count() < stacked.height else 0.0)
                       for c in self.numeric_}
        self.levels_ = {c: sorted(stacked[c].drop_nulls().unique().to_list()) for c in self.categorical_}
        raw, names = self._matrix(stacked)
        centre, scale = raw.mean(axis=0), raw.std(axis=0)
        keep = scale > 0
        self.feature_names_ = tuple(n for n, k in zip(names, keep) if k)
        self._keep, self._centre, self._scale = keep, centre[keep], scale[keep]
        if not self.feature_names_:
            raise DataError("every landmark feature is constant in the training rows", table="visits")
        x = (raw[:, keep] - self._centre) / self._scale
        return x, stacked["time"].to_numpy(), stacked["event"].to_numpy()

    def _matrix(self, features: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Design columns (before dropping constants and standardising) and their names."""
        columns, names = [], []
        for c in self.numeric_:
            missing = features[c].is_null()
            columns.append(features[c].fill_null(self.means_[c]).to_numpy().astype(np.float64))
            names.append(c)
            if self.missing == "indicator":
                columns.append(missing.to_numpy().astype(np.float64))
                names.append(f"{c}:missing")
        for c in self.categorical_:
            values = features[c]
            for level in self.levels_[c][1:]:
                columns.append((values == level).fill_null(False).to_numpy().astype(np.float64))
                names.append(f"{c}={level}")
            if self.missing == "indicator":
                columns.append(values.is_null().to_numpy().astype(np.float64))
                names.append(f"{c}:missing")
        visit_history = ("since_last_visit", "n_visits") if self.history else ()
        for c in (*visit_history, *[f"code:{code}" for code in self.codes_], "s"):
            columns.append(features[c].to_numpy().astype(np.float64))
            names.append("landmark" if c == "s" else c)
        return np.column_stack(columns), names

    def _design(self, cohort: Cohort, queries: _Queries) -> np.ndarray:
        """Standardised design matrix ``[n, P]`` of the queries."""
        features = landmark_features(cohort, queries.patient_index, queries.s, self.codes_)
        missing = [c for c in (*self.numeric_, *self.categorical_) if c not in features.columns]
        if missing:
            raise DataError(f"the visit table lacks the training feature columns {missing}", table="visits")
        raw, _ = self._matrix(features)
        return (raw[:, self._keep] - self._centre) / self._scale

    def _check_durations(self, durations: np.ndarray) -> None:
        if self.window is not None and durations.max() > self.window:
            raise ConfigError(f"durations up to {durations.max():g} days exceed the fitted window of {self.window:g} days")


class LandmarkCox(_LandmarkModel):
    """Landmark Cox super-model: :class:`sksurv.linear_model.CoxPHSurvivalAnalysis` (Breslow ties and
    baseline hazard) on the stacked landmark rows, features standardised on them.

    Parameters
    ----------
    alpha: ridge penalty ½·alpha·‖β‖² on the standardised coefficients (scikit-survival's ``alpha``); a small
        value keeps the fit stable with rare categories or collinear features.
    landmarks: fitting landmarks (days since origin); default 10 evenly spaced from the origin (or the median
        first visit, when later) to the 75th percentile of the training outcome times.
    window: administrative censoring at s_j + window days (predictions up to ``window`` days after s);
        ``None`` uses all follow-up after s_j.
    missing: ``"indicator"`` (training mean + a missingness column per feature) or ``"mean"``.
    n_codes: counts of this many most frequent training codes up to s (when the tables have codes).
    history: include s − (last visit) and the number of visits up to s as features (``False``: the last observed
        covariates only, the classical landmark model).
    numeric, categorical, codes, origin, duplicates, unmatched, max_visits: how the tables are read
        (:func:`ehrseq.data.build_cohort`, as in :class:`~ehrseq.DynamicSurvival`).
    cause: the event type modelled (other types censored).
    """

    def __init__(self, *, alpha: float = 0.01, landmarks: Sequence[float] | None = None, window: float | None = None,
                 missing: str = "indicator", n_codes: int = 10, history: bool = True,
                 numeric: Sequence[str] | None = None, categorical: Sequence[str] | None = None,
                 codes: str | None = "codes", origin: str = "first_visit",
                 duplicates: str = "error", unmatched: str = "error", max_visits: int | None = None,
                 cause: int = 1) -> None:
        super().__init__(landmarks=landmarks, window=window, missing=missing, n_codes=n_codes, history=history,
                         numeric=numeric, categorical=categorical, codes=codes, origin=origin, duplicates=duplicates,
                         unmatched=unmatched, max_visits=max_visits, cause=cause)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = alpha

    def fit(self, visits: Any, outcomes: Any) -> LandmarkCox:
        """Fit the super-model on the stacked rows of the training tables."""
        x, time, event = self._fit_design(self._train_cohort(visits, outcomes))
        if not event.any():
            raise DataError("no event in the stacked training rows", table="outcomes")
        self.model_ = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="breslow").fit(x, _target(time, event))
        return self

    @property
    def coef_(self) -> dict[str, float]:
        """Coefficients per standardised feature."""
        self._check_fitted()
        return dict(zip(self.feature_names_, self.model_.coef_.tolist()))

    def _conditional_survival(self, cohort: Cohort, queries: _Queries, durations: np.ndarray) -> np.ndarray:
        self._check_durations(durations)
        if queries.s.size == 0:
            return np.zeros((0, durations.size))
        baseline = self.model_._baseline_model.cum_baseline_hazard_
        hazard = _step(baseline.x, baseline.y, durations, 0.0)
        risk_score = np.exp(self.model_.predict(self._design(cohort, queries)))
        return np.exp(-risk_score[:, None] * hazard[None, :])


class LandmarkRandomForest(_LandmarkModel):
    """Landmark random survival forest super-model: :class:`sksurv.ensemble.RandomSurvivalForest` on the
    stacked landmark rows (same features and parameters as :class:`LandmarkCox`, plus the forest's:
    ``n_estimators``, ``min_samples_leaf``, ``max_features``, ``max_depth``, ``max_samples`` (bootstrap
    sample size per tree: fewer rows make large stacked designs faster; a count above the number of stacked
    rows means all of them), ``n_jobs``, ``seed``)."""

    def __init__(self, *, n_estimators: int = 100, min_samples_leaf: int = 15, max_features: str | float = "sqrt",
                 max_depth: int | None = None, max_samples: int | float | None = None, n_jobs: int | None = 1,
                 seed: int = 0,
                 landmarks: Sequence[float] | None = None, window: float | None = None, missing: str = "indicator",
                 n_codes: int = 10, history: bool = True, numeric: Sequence[str] | None = None,
                 categorical: Sequence[str] | None = None,
                 codes: str | None = "codes", origin: str = "first_visit", duplicates: str = "error",
                 unmatched: str = "error", max_visits: int | None = None, cause: int = 1) -> None:
        super().__init__(landmarks=landmarks, window=window, missing=missing, n_codes=n_codes, history=history,
                         numeric=numeric, categorical=categorical, codes=codes, origin=origin, duplicates=duplicates,
                         unmatched=unmatched, max_visits=max_visits, cause=cause)
        self.forest_params = {"n_estimators": n_estimators, "min_samples_leaf": min_samples_leaf,
                              "max_features": max_features, "max_depth": max_depth, "max_samples": max_samples,
                              "n_jobs": n_jobs, "random_state": seed}

    def fit(self, visits: Any, outcomes: Any) -> LandmarkRandomForest:
        """Grow the forest on the stacked rows of the training tables."""
        x, time, event = self._fit_design(self._train_cohort(visits, outcomes))
        if not event.any():
            raise DataError("no event in the stacked training rows", table="outcomes")
        params = dict(self.forest_params)
        if isinstance(params["max_samples"], int) and params["max_samples"] >= len(x):
            params["max_samples"] = None
        self.model_ = RandomSurvivalForest(**params).fit(x, _target(time, event))
        return self

    def _conditional_survival(self, cohort: Cohort, queries: _Queries, durations: np.ndarray) -> np.ndarray:
        self._check_durations(durations)
        if queries.s.size == 0:
            return np.zeros((0, durations.size))
        curves = self.model_.predict_survival_function(self._design(cohort, queries), return_array=True)
        index = np.searchsorted(self.model_.unique_times_, durations, side="right") - 1
        return np.where(index[None, :] >= 0, curves[:, np.maximum(index, 0)], 1.0)


def _target(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    target = np.empty(time.size, dtype=[("event", bool), ("time", np.float64)])
    target["event"], target["time"] = event, time
    return target


#: The baselines by their short names (``ehrseq evaluate --baselines km,cox,rsf``).
BASELINES: dict[str, type[_Baseline]] = {"km": KaplanMeier, "cox": LandmarkCox, "rsf": LandmarkRandomForest}


def reading_like(name: str, model: Any, *, cause: int = 1, **options: Any) -> _Baseline:
    """An unfitted baseline (a name of :data:`BASELINES`) that reads tables as the fitted ``model`` does:
    its feature columns (the roles it learnt), codes column, origin, and duplicate, unmatched and
    visit-count rules — so that both see the same patients and the same history. ``options`` go to the
    baseline (e.g. ``alpha`` for ``"cox"``)."""
    if name not in BASELINES:
        raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    settings = model.cohort_settings
    table = {"origin": settings.origin, "duplicates": settings.duplicates, "unmatched": settings.unmatched,
             "cause": cause}
    if name != "km":
        features = model.features_
        table.update(numeric=features.numeric_columns, categorical=features.categorical_columns,
                     codes=features.codes_column, max_visits=settings.max_visits)
    return BASELINES[name](**table, **options)
