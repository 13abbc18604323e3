"""Uncertainty of landmark metrics: percentile bootstrap intervals and paired model comparisons.

**Resampling unit.** The test *patients*: one resample draws n patients with replacement from the n
test patients (multinomial counts w, Σ w = n), and the whole landmark table is recomputed on it — every
(landmark, horizon) window sees the counts of its at-risk patients, so windows stay jointly resampled.
The censoring distribution stays the one fitted on the training patients (it is not part of the
test sample). Resamples are R weight vectors, and each metric is computed for all of them at once
(:mod:`ehrseq.metrics.resampled`): no loop of full metric recomputations.

**Interval** (:func:`landmark_intervals`, ``ehrseq.evaluate.landmark(..., ci=0.95)``): the percentile
interval, the (1 − level)/2 and (1 + level)/2 quantiles of the R resampled values of the metric.

**Paired comparison** (:func:`compare`, :func:`compare_predictions`): both models are scored on the
*same* resamples, so the difference d = metric(A) − metric(B) of each resample reflects only the
models, not which patients were drawn. Reported per window and metric: both point values, the
difference, its percentile interval, and the two-sided bootstrap p-value

    p = min(1, 2 · min((1 + #{d* ≤ 0}) / (R' + 1), (1 + #{d* ≥ 0}) / (R' + 1))),

R' the resamples where the metric is defined (the interval at level 1 − p just reaches 0; a model
compared with itself has d* = 0 everywhere and p = 1). The **overall** rows average the metric over the
windows where both models have a value, resample by resample (the mean over (landmark, horizon) windows
that the project's results tables report); :func:`paired_window_differences` gives that mean difference and its
resampled values for a given list of windows (what ``ehrseq.tune`` weighs a trial's gain by). Lower is better for
the Brier score and the IBS, higher for the others: the sign of the difference is reported as is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from ehrseq.errors import ConfigError
from ehrseq.evaluate import (
    INTERVAL_METRICS,
    RiskModel,
    Window,
    _cohort_patients,
    event_of_interest,
    landmark_predictions,
    landmark_windows,
    outcomes_since_origin,
    window_metrics,
    windows_by_landmark,
)
from ehrseq.metrics.resampled import (
    bootstrap_weight_blocks,
    bootstrap_weights,
    percentile_interval,
    resampled_auc,
    resampled_brier,
    resampled_concordance,
    resampled_integrated_brier,
)

__all__ = ["compare", "compare_predictions", "landmark_intervals", "paired_p_value", "paired_window_differences",
           "window_resamples"]

def window_resamples(window: Window, weights: np.ndarray, event: int, defined: Sequence[str]) -> dict[str, np.ndarray]:
    """The metrics of ``defined`` (those with a value in the landmark table) of one window under each of
    the weight vectors ``weights [R, n]`` (counts of the window's patients), ``[R]`` each; the other
    metrics are NaN. Definitions as in :func:`ehrseq.evaluate.landmark`."""
    h, censoring = window.horizon, window.censoring
    resamples = weights.shape[0]
    out = {name: np.full(resamples, np.nan) for name in INTERVAL_METRICS}
    if "c_index" in defined:
        out["c_index"] = resampled_concordance(np.minimum(window.time, h), window.window_type(), window.risk, weights,
                                               cause=event)
    if "uno_c" in defined:
        out["uno_c"] = resampled_concordance(window.time, window.event_type, window.risk, weights, cause=event,
                                             censoring=censoring, tau=h)
    if "auc" in defined:
        out["auc"] = resampled_auc(window.time, window.event_type, window.risk, h, censoring, weights, cause=event)
    if "brier" in defined:
        out["brier"] = resampled_brier(window.time, window.event_type, window.risk[:, None], [h], censoring, weights,
                                       cause=event)[:, 0]
    if "ibs" in defined:
        out["ibs"] = resampled_integrated_brier(window.time, window.event_type, window.incidence, window.ibs_times,
                                                censoring, weights, cause=event)
    return out


def _window_weights(weights: np.ndarray, population: pl.Series, window: Window) -> np.ndarray:
    """Columns of the population's resampling counts ``[R, N]`` for the window's patients ``[R, n]``."""
    rows = (pl.DataFrame({"patient_id": window.patient_id})
            .join(pl.DataFrame({"patient_id": population, "row": np.arange(population.len())}), on="patient_id",
                  how="left")["row"])
    if rows.null_count():
        raise ConfigError(f"patients at risk at landmark {window.landmark:g} are not in the test outcomes: "
                          f"{window.patient_id.filter(rows.is_null()).head(5).to_list()}")
    return weights[:, rows.to_numpy()]


def landmark_intervals(table: pl.DataFrame, windows: Sequence[Window], population: pl.Series, *, event: int = 1,
                       level: float = 0.95, n_bootstrap: int = 1000, seed: int = 0) -> pl.DataFrame:
    """``table`` (the landmark table of ``windows``) with ``<metric>_lower`` / ``<metric>_upper`` columns:
    percentile bootstrap intervals at ``level`` over the ``population`` of test patients (their ids; the
    resampling unit), ``n_bootstrap`` resamples drawn with ``seed``."""
    _check_level(level)
    weights = bootstrap_weights(population.len(), n_bootstrap, seed)
    bounds: dict[str, list[float | None]] = {f"{name}_{side}": [] for name in INTERVAL_METRICS
                                              for side in ("lower", "upper")}
    for window, row in zip(windows, table.iter_rows(named=True)):
        defined = [name for name in INTERVAL_METRICS if row[name] is not None]
        resamples = window_resamples(window, _window_weights(weights, population, window), event, defined) \
            if defined else {name: np.full(n_bootstrap, np.nan) for name in INTERVAL_METRICS}
        for name in INTERVAL_METRICS:
            lower, upper = percentile_interval(resamples[name][:, None], level)
            bounds[f"{name}_lower"].append(None if np.isnan(lower[0]) else float(lower[0]))
            bounds[f"{name}_upper"].append(None if np.isnan(upper[0]) else float(upper[0]))
    return table.with_columns(pl.Series(name, values, dtype=pl.Float64) for name, values in bounds.items())


def paired_p_value(differences: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of paired differences ``[R]`` (module docstring); None if none is defined."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return None
    below = (1.0 + np.sum(d <= 0)) / (d.size + 1.0)
    above = (1.0 + np.sum(d >= 0)) / (d.size + 1.0)
    return float(min(1.0, 2.0 * min(below, above)))


@dataclass(frozen=True)
class Comparison:
    """One row of a paired comparison: metric values of the two models ``a`` and ``b`` in a window (or
    overall: ``landmark`` and ``horizon`` None), their difference a − b with its percentile interval and
    two-sided p-value, and the number of resamples where the difference is defined."""

    landmark: float | None
    horizon: float | None
    metric: str
    n_at_risk: int | None
    a: float | None
    b: float | None
    difference: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    n_resamples: int = 0


_COMPARISON_SCHEMA = {
    "landmark": pl.Float64, "horizon": pl.Float64, "metric": pl.String, "n_at_risk": pl.Int64, "a": pl.Float64,
    "b": pl.Float64, "difference": pl.Float64, "lower": pl.Float64, "upper": pl.Float64, "p_value": pl.Float64,
    "n_resamples": pl.Int64,
}


def compare_predictions(predictions_a: pl.DataFrame, predictions_b: pl.DataFrame, test: Any, train: Any,
                        landmarks: Sequence[float], horizons: Sequence[float], *, event: int = 1,
                        min_at_risk: int = 10, level: float = 0.95, n_bootstrap: int = 1000, seed: int = 0,
                        names: tuple[str, str] = ("a", "b")) -> pl.DataFrame:
    """Paired bootstrap comparison of two sets of precomputed landmark risks on the same test patients.

    ``predictions_a``, ``predictions_b``: ``patient_id, landmark, horizon, risk`` (e.g. from
    :func:`ehrseq.evaluate.landmark_predictions`; the IBS integrates over the predicted horizons in
    (0, Δ]); ``test``, ``train``: outcome tables on the landmarks' clock (``patient_id, time, event``,
    days since origin) or ``(visits, outcomes)`` pairs (:func:`ehrseq.evaluate.outcomes_since_origin`).
    Both must predict for exactly the same patients at risk in every window (:class:`ConfigError`
    naming the patients otherwise).

    Returns one row per window and metric, then ``overall`` rows (``landmark`` and ``horizon`` null):
    ``metric, n_at_risk, a, b, difference (a − b), lower, upper, p_value, n_resamples`` (columns ``a``
    and ``b`` renamed to ``names``), see the module docstring.
    """
    _check_level(level)
    if len(names) != 2 or names[0] == names[1]:
        raise ConfigError(f"names must be two different labels, got {names!r}")
    test_frame, train_frame = outcomes_since_origin(test), outcomes_since_origin(train)
    windows_a = landmark_windows(predictions_a, test_frame, train_frame, landmarks, horizons)
    windows_b = landmark_windows(predictions_b, test_frame, train_frame, landmarks, horizons)
    population = test_frame["patient_id"]
    weights = bootstrap_weights(population.len(), n_bootstrap, seed)
    rows: list[Comparison] = []
    overall: dict[str, list[tuple[float, float, np.ndarray]]] = {name: [] for name in INTERVAL_METRICS}
    for window_a, window_b in zip(windows_a, windows_b):
        _check_same_patients(window_a, window_b, names)
        row_a = window_metrics(window_a, event, min_at_risk)
        row_b = window_metrics(window_b, event, min_at_risk)
        both = [name for name in row_a.defined() if name in row_b.defined()]
        window_weights = _window_weights(weights, population, window_a)
        resamples_a = window_resamples(window_a, window_weights, event, both)
        resamples_b = window_resamples(window_b, window_weights, event, both)
        for name in INTERVAL_METRICS:
            a, b = getattr(row_a, name), getattr(row_b, name)
            differences = resamples_a[name] - resamples_b[name]
            rows.append(_comparison_row(window_a.landmark, window_a.horizon, name, window_a.n, a, b, differences, level))
            if name in both:
                overall[name].append((a, b, differences))
    for name, entries in overall.items():
        if not entries:
            rows.append(_comparison_row(None, None, name, None, None, None, np.full(n_bootstrap, np.nan), level))
            continue
        a = float(np.mean([entry[0] for entry in entries]))
        b = float(np.mean([entry[1] for entry in entries]))
        differences = _mean_over_windows([entry[2] for entry in entries])
        rows.append(_comparison_row(None, None, name, None, a, b, differences, level))
    table = pl.DataFrame([asdict(row) for row in rows], schema=_COMPARISON_SCHEMA)
    return table.rename({"a": names[0], "b": names[1]})


def _mean_over_windows(differences: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over windows of resampled differences (one ``[R]`` array per window), resample by resample,
    over the windows where the resample has a value; NaN where none has."""
    stacked = np.stack(differences, axis=1)  # [R, windows]
    defined = np.isfinite(stacked)
    counts = defined.sum(axis=1)
    return np.where(counts > 0, np.where(defined, stacked, 0.0).sum(axis=1) / np.maximum(counts, 1), np.nan)


def paired_window_differences(predictions_a: pl.DataFrame, predictions_b: pl.DataFrame, test: pl.DataFrame,
                              train: pl.DataFrame, windows: Sequence[tuple[float, float]], metric: str, *,
                              event: int = 1, min_at_risk: int = 10, n_bootstrap: int = 1000,
                              seed: int = 0) -> tuple[float | None, np.ndarray]:
    """``metric`` of the risks ``predictions_a`` minus that of ``predictions_b``, averaged over the (landmark s,
    horizon Δ) ``windows`` where both have a value, and the same difference on ``n_bootstrap`` paired resamples
    of the test patients, ``[R]`` (NaN where no window has a value): the overall row of :func:`compare_predictions`
    for a list of windows instead of every landmark × horizon.

    ``test``, ``train``: ``patient_id, outcome_time, event`` since origin
    (:func:`ehrseq.evaluate.outcomes_since_origin`); both sets of risks must be for the same patients at risk in
    every window. Returns (None, all-NaN) when no
    window has a value for both.
    """
    if metric not in INTERVAL_METRICS:
        raise ConfigError(f"metric must be one of {', '.join(INTERVAL_METRICS)}, got {metric!r}")
    population = test["patient_id"]
    points, pairs = [], []
    for s, horizons in windows_by_landmark(windows):
        for window_a, window_b in zip(landmark_windows(predictions_a, test, train, [s], horizons),
                                      landmark_windows(predictions_b, test, train, [s], horizons)):
            _check_same_patients(window_a, window_b, ("a", "b"))
            a = getattr(window_metrics(window_a, event, min_at_risk), metric)
            b = getattr(window_metrics(window_b, event, min_at_risk), metric)
            if a is not None and b is not None:
                points.append(a - b)
                pairs.append((window_a, window_b))
    if not points:
        return None, np.full(n_bootstrap, np.nan)
    blocks = []
    for weights in bootstrap_weight_blocks(population.len(), n_bootstrap, seed, max_elements=1 << 21):  # bounded memory
        differences = []
        for window_a, window_b in pairs:
            window_weights = _window_weights(weights, population, window_a)
            differences.append(window_resamples(window_a, window_weights, event, [metric])[metric]
                               - window_resamples(window_b, window_weights, event, [metric])[metric])
        blocks.append(_mean_over_windows(differences))
    return float(np.mean(points)), np.concatenate(blocks)


def _comparison_row(s: float | None, h: float | None, name: str, n: int | None, a: float | None, b: float | None,
                    differences: np.ndarray, level: float) -> Comparison:
    if a is None or b is None:
        return Comparison(s, h, name, n, a, b)
    lower, upper = percentile_interval(differences[:, None], level)
    return Comparison(s, h, name, n, a, b, difference=a - b, lower=_value(lower[0]), upper=_value(upper[0]),
                      p_value=paired_p_value(differences), n_resamples=int(np.isfinite(differences).sum()))


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _check_same_patients(window_a: Window, window_b: Window, names: tuple[str, str]) -> None:
    ids_a, ids_b = window_a.patient_id, window_b.patient_id
    if ids_a.len() == ids_b.len() and ids_a.equals(ids_b):
        return
    only_a = ids_a.filter(~ids_a.is_in(ids_b.implode())).head(5).to_list()
    only_b = ids_b.filter(~ids_b.is_in(ids_a.implode())).head(5).to_list()
    raise ConfigError(
        f"the two models predict for different patients at risk at landmark {window_a.landmark:g}: "
        f"only {names[0]}: {only_a}, only {names[1]}: {only_b} (a paired comparison needs the same patients; "
        "check that both read the tables with the same origin)")


def _check_level(level: float) -> None:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise ConfigError(f"the interval level must be in (0, 1) (e.g. 0.95), got {level!r}")


def compare(model_a: RiskModel, model_b: RiskModel, visits: Any, outcomes: Any, landmarks: Sequence[float],
            horizons: Sequence[float], train_outcomes: tuple[Any, Any] | Any, *, event: int | None = None,
            origin: str | None = None, min_at_risk: int = 10, ibs_points: int = 20,
            prediction_options: Mapping[str, Any] | None = None, level: float = 0.95, n_bootstrap: int = 1000,
            seed: int = 0, names: tuple[str, str] = ("a", "b")) -> pl.DataFrame:
    """Paired bootstrap comparison of two models (fitted :class:`~ehrseq.DynamicSurvival` models or
    baselines of :mod:`ehrseq.baselines`, in any combination) on the same test patients: arguments as
    for :func:`ehrseq.evaluate.landmark`, result as for :func:`compare_predictions`.

    Test times are read with ``model_a``'s table settings (or ``origin``); ``model_b`` must read them the
    same way (same origin), otherwise :class:`ConfigError`.
    """
    if not landmarks or not horizons:
        raise ConfigError("landmarks and horizons must each hold at least one value")
    patients = _cohort_patients(visits, outcomes, model_a, origin)
    test = patients.select("patient_id", "outcome_time", "event")
    test_b = outcomes_since_origin((visits, outcomes), model_b, origin)
    if not test.sort("patient_id").equals(test_b.sort("patient_id")):
        raise ConfigError("the two models read the test tables differently (different origin or dropped visits); "
                          "a paired comparison needs the same clock: pass origin=")
    train = outcomes_since_origin(train_outcomes, model_a, origin,
                                  first_visits_at_zero=bool((patients["origin"] == 0).all()))
    event = event_of_interest([model_a, model_b], event, test, train)
    predictions = [landmark_predictions(model, visits, landmarks, horizons, outcomes=outcomes, event=event,
                                        ibs_points=ibs_points, prediction_options=prediction_options)
                   for model in (model_a, model_b)]
    return compare_predictions(*predictions, _as_outcome_table(test), _as_outcome_table(train), landmarks, horizons,
                               event=event, min_at_risk=min_at_risk, level=level, n_bootstrap=n_bootstrap, seed=seed,
                               names=names)


def _as_outcome_table(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("patient_id", pl.col("outcome_time").alias("time"), "event")
