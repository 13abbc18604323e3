"""Calibration of predicted survival distributions: D-calibration, 1-calibration, calibration slope.

**D-calibration** (Haider et al. 2020). If the predictions are right, S_i(T_i) ~ U(0, 1). The unit
interval is cut into B equal bins [k/B, (k+1)/B) (the last closed). An event adds 1 to the bin of
s = S_i(Y_i). A censored subject only tells us S_i(T_i) < s, uniform on [0, s) under the model, so its
unit mass is split as in SurvivalEVAL: (s − k/B)/s to its own bin k and 1/(B·s) to every lower bin
(s = 0: everything in the lowest bin). Pearson's χ² of the B bin totals against n/B each, B − 1
degrees of freedom.

**1-calibration** at a horizon t (D'Agostino–Nam version of Hosmer–Lemeshow): subjects sorted by
predicted risk 1 − S_i(t) (descending, stable) are split into G groups of near-equal size (sizes as
``numpy.array_split``); in group g the expected risk E_g is the mean prediction and the observed risk
O_g = 1 − KM_g(t) (Kaplan–Meier within the group, held at its last value beyond its last time).
HL = Σ_g n_g (O_g − E_g)² / (E_g (1 − E_g)), χ² with G − 1 degrees of freedom (as SurvivalEVAL for
G ≤ 15). The binomial denominator ignores the extra variance of KM_g(t) due to censoring, so with many
subjects censored before t the test rejects calibrated models more often than its nominal level.

**Calibration slope** (Avati et al., Countdown Regression §2.2): for each quantile level q the observed
frequency is the share of subjects whose event happened by their own predicted q-quantile time,
#{Δ_i = 1, F_i(Y_i) ≤ q} / #{Δ_i = 1 or F_i(Y_i) ≥ q} — censored subjects are removed from the levels
whose quantile time lies after their censoring (F_i(Y_i) < q). The least-squares line of observed on
predicted (q) has slope 1 and intercept 0 for a calibrated model.

Predictions are given as S_i at the needed time ``[n]``, as curves ``[n, T]`` on ``times`` (read with
``interpolation``), or as a :class:`~ehrseq.models.distributions.base.SurvivalDistribution`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.stats import chi2

from ehrseq.metrics._curves import per_subject_survival
from ehrseq.metrics._validation import as_float, check_outcome, check_positive_int
from ehrseq.metrics.kaplan_meier import KaplanMeier


class DCalibrationResult(NamedTuple):
    """χ² statistic, p-value (small = miscalibrated) and the B bin totals (low to high S)."""

    statistic: float
    p_value: float
    bin_counts: np.ndarray


class OneCalibrationResult(NamedTuple):
    """Hosmer–Lemeshow statistic, p-value, and per group: observed and expected risk, group size."""

    statistic: float
    p_value: float
    observed: np.ndarray
    expected: np.ndarray
    group_sizes: np.ndarray


class CalibrationSlopeResult(NamedTuple):
    """Least-squares slope and intercept of observed on predicted frequencies, and the points."""

    slope: float
    intercept: float
    levels: np.ndarray
    observed: np.ndarray
    n_used: np.ndarray


def d_calibration_histogram(survival_at_time: np.ndarray, event: np.ndarray, bins: int) -> np.ndarray:
    """Bin totals ``[bins]`` of D-calibration (events counted, censored mass split; see module docs)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    k = np.clip(np.searchsorted(edges, survival_at_time, side="right") - 1, 0, bins - 1)
    hist = np.bincount(k[event], minlength=bins).astype(np.float64)
    s, kc = survival_at_time[~event], k[~event]
    positive = s > 0
    safe = np.where(positive, s, 1.0)
    own = np.where(positive, (s - edges[kc]) / safe, 1.0)
    per_lower_bin = np.where(kc > 0, 1.0 / (bins * np.where(kc > 0, s, 1.0)), 0.0)  # s ≥ 1/B there
    hist += np.bincount(kc, weights=own, minlength=bins)
    lower = np.bincount(kc, weights=per_lower_bin, minlength=bins)
    hist[:-1] += np.cumsum(lower[::-1])[::-1][1:]  # bin j gets the share of every subject in a bin above j
    return hist


def d_calibration(
    time: Any, event: Any, surv: Any, times: Any = None, *, bins: int = 10, interpolation: str = "linear"
) -> DCalibrationResult:
    """D-calibration χ² test of S_i(Y_i) against U(0, 1) (see module docs).

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    surv:
        S_i(Y_i) ``[n]``, curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]``.
    bins:
        Number of equal-width bins B (≥ 2).
    """
    t, e = check_outcome(time, event)
    check_positive_int(bins, "bins", 2)
    if t.size == 0:
        raise ValueError("D-calibration needs at least one subject")
    s = per_subject_survival(surv, t, times, interpolation, "surv")
    hist = d_calibration_histogram(s, e, bins)
    expected = t.size / bins
    statistic = float(np.sum((hist - expected) ** 2) / expected)
    return DCalibrationResult(statistic, float(chi2.sf(statistic, bins - 1)), hist)


def one_calibration(
    time: Any,
    event: Any,
    surv: Any,
    horizon: float,
    times: Any = None,
    *,
    groups: int = 10,
    interpolation: str = "linear",
) -> OneCalibrationResult:
    """1-calibration (Hosmer–Lemeshow, D'Agostino–Nam) of the predicted risk 1 − S_i(t) at ``horizon``.

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    surv:
        S_i(horizon) ``[n]``, curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]``.
    horizon:
        The time t (> 0).
    groups:
        Number of risk groups G (≥ 2, at most n); every group's mean risk must lie strictly in (0, 1).
    """
    t, e = check_outcome(time, event)
    check_positive_int(groups, "groups", 2)
    if not (np.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a finite time > 0, got {horizon!r}")
    if t.size < groups:
        raise ValueError(f"1-calibration with {groups} groups needs at least {groups} subjects, got {t.size}")
    risk = 1.0 - per_subject_survival(surv, np.full(t.size, float(horizon)), times, interpolation, "surv")
    order = np.argsort(-risk, kind="stable")
    sizes = np.full(groups, t.size // groups)
    sizes[: t.size % groups] += 1
    group = np.empty(t.size, dtype=np.int64)
    group[order] = np.repeat(np.arange(groups), sizes)
    expected = np.bincount(group, weights=risk, minlength=groups) / sizes
    if np.any((expected <= 0) | (expected >= 1)):
        bad = np.flatnonzero((expected <= 0) | (expected >= 1))
        raise ValueError(f"1-calibration is undefined: mean predicted risk is 0 or 1 in groups {bad.tolist()}")
    observed = np.array(
        [1.0 - KaplanMeier.fit(t[group == g], e[group == g]).survival(horizon) for g in range(groups)]
    )
    statistic = float(np.sum(sizes * (observed - expected) ** 2 / (expected * (1.0 - expected))))
    return OneCalibrationResult(statistic, float(chi2.sf(statistic, groups - 1)), observed, expected, sizes)


def calibration_slope(
    time: Any,
    event: Any,
    surv: Any,
    times: Any = None,
    *,
    levels: Any = None,
    interpolation: str = "linear",
) -> CalibrationSlopeResult:
    """Countdown-Regression calibration slope over quantile levels (see module docs).

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    surv:
        S_i(Y_i) ``[n]``, curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]``.
    levels:
        Strictly increasing quantile levels in (0, 1) (default 0.1, 0.2, …, 0.9; at least two).
    """
    t, e = check_outcome(time, event)
    q = np.arange(1, 10) / 10 if levels is None else as_float(levels, "levels", (None,))
    if q.size < 2 or np.any((q <= 0) | (q >= 1)) or np.any(np.diff(q) <= 0):
        raise ValueError("levels must be at least two strictly increasing values in (0, 1)")
    cdf = 1.0 - per_subject_survival(surv, t, times, interpolation, "surv")
    used = e[:, None] | (cdf[:, None] >= q)
    hits = e[:, None] & (cdf[:, None] <= q)
    n_used = used.sum(axis=0)
    if np.any(n_used == 0):
        raise ValueError(f"no subject informs quantile levels {q[n_used == 0].tolist()}")
    observed = hits.sum(axis=0) / n_used
    centred = q - q.mean()
    slope = float(np.sum(centred * (observed - observed.mean())) / np.sum(centred**2))
    intercept = float(observed.mean() - slope * q.mean())
    return CalibrationSlopeResult(slope, intercept, q, observed, n_used)
