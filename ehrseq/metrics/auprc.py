"""Survival-AUPRC (Avati et al., Countdown Regression §2.3 and appendices D–F).

For one predicted CDF F and outcome, the precision window of level t ∈ (0, 1] around an event at y is
[y t, y / t]; its "recall" is the predicted mass inside. Averaging over t:

* event at y:                        ∫_0^1 [F(y/t) − F(y t)] dt = y ∫_y^∞ F(z)/z² dz − (1/y) ∫_0^y F(z) dz;
* censored at y (right):             ∫_0^1 [1 − F(y t)] dt     = 1 − (1/y) ∫_0^y F(z) dz;
* censored in (y, U] (``upper``):    ∫_0^1 [F(U/t) − F(y t)] dt = U ∫_U^∞ F(z)/z² dz − (1/y) ∫_0^y F(z) dz.

1 means all mass at the outcome; higher is better. Closed forms for log-normal predictions are in
:func:`survival_auprc_lognormal`. :func:`survival_auprc` integrates any prediction exactly on its
interpolated curve: curves ``[n, T]`` are read as documented in :mod:`ehrseq.metrics._curves` (held at
the last value beyond the grid, so mass beyond the grid never counts as captured); a distribution is
read on a per-subject grid y·r with ``points`` geometric ratios r ∈ [1e-4, 1e4] and linear
interpolation (absolute error ~1e-5 for smooth distributions at the default 2049 points).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr

from ehrseq.metrics._curves import DistributionSurvival, SurvivalCurves, check_distribution_batch, survival_evaluator
from ehrseq.metrics._validation import (
    apply_reduction,
    as_float,
    check_outcome,
    check_positive_int,
    check_probabilities,
)
from ehrseq.models.distributions.base import SurvivalDistribution

_RATIO_RANGE = (1e-4, 1e4)


def _outcomes(time: Any, event: Any, upper: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, e = check_outcome(time, event)
    if np.any(t <= 0):
        raise ValueError("Survival-AUPRC needs observed times > 0")
    if upper is None:
        return t, e, np.full(t.size, np.inf)
    u = as_float(upper, "upper", (t.size,), finite=False)
    if np.any(np.isnan(u)) or np.any(~e & (u <= t)):
        raise ValueError("upper must be > time for censored subjects (inf when the event time is unbounded)")
    return t, e, u


def _from_curves(curves: SurvivalCurves, y: np.ndarray, upper: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Per-subject Survival-AUPRC on curves expressed in the same time unit as ``y`` and ``upper``."""
    tau, last = curves.horizon, curves.values[:, -1]
    area = curves.integrate(lambda z, s: s, np.zeros(curves.n), np.minimum(y, tau)) + last * np.maximum(y - tau, 0.0)
    mass_below = 1.0 - area / y  # (1/y) ∫_0^y F

    def captured_above(a: np.ndarray) -> np.ndarray:  # a ∫_a^∞ F(z)/z² dz, = 1 at a = inf
        finite = np.isfinite(a)
        safe = np.where(finite, a, 1.0)
        tail = curves.inverse_square_integral(safe) + last / np.maximum(safe, tau)
        return np.where(finite, 1.0 - safe * tail, 1.0)

    return captured_above(np.where(event, y, upper)) - mass_below


def survival_auprc(
    time: Any,
    event: Any,
    surv: Any,
    times: Any = None,
    *,
    upper: Any = None,
    interpolation: str = "linear",
    points: int = 2049,
    reduction: str = "mean",
) -> float | np.ndarray:
    """Survival-AUPRC of each subject, reduced by ``reduction`` (``"mean"``, ``"sum"``, ``"none"`` → ``[n]``).

    Parameters
    ----------
    time, event:
        Outcomes ``[n]`` with times > 0.
    surv:
        Survival curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]``.
    upper:
        Optional ``[n]`` upper bounds U of the event time of censored subjects (interval censoring,
        ``inf`` = none); ignored for events.
    points:
        Size of the per-subject ratio grid used for a distribution.
    """
    y, e, u = _outcomes(time, event, upper)
    if not isinstance(surv, SurvivalDistribution):
        curves = survival_evaluator(surv, times, y.size, interpolation)
        return apply_reduction(_from_curves(curves, y, u, e), reduction)
    check_positive_int(points, "points", 2)
    ratios = np.geomspace(*_RATIO_RANGE, points)
    check_distribution_batch(surv, y.size, "surv")
    scores = np.empty(y.size)
    block = max(1, (1 << 21) // points)
    for start in range(0, y.size, block):
        rows = slice(start, start + block)
        part = DistributionSurvival(surv[rows], y[rows].size, "surv")
        values = check_probabilities(part.at_each(y[rows, None] * ratios), "surv")
        curves = SurvivalCurves.from_grid(values, ratios, "linear")
        scores[rows] = _from_curves(curves, np.ones(values.shape[0]), u[rows] / y[rows], e[rows])
    return apply_reduction(scores, reduction)


def survival_auprc_lognormal(
    time: Any, event: Any, mu: Any, sigma: Any, *, upper: Any = None, reduction: str = "mean"
) -> float | np.ndarray:
    """Closed-form Survival-AUPRC of LogNormal(μ, σ²) predictions (log T ~ N(μ, σ²)); with z = (log y − μ)/σ:

    * event:            e^{σ²/2 − σz} Φ(z − σ) + e^{σ²/2 + σz} Φ(−z − σ);
    * right-censored:   Φ(−z) + e^{σ²/2 − σz} Φ(z − σ);
    * censored in (y, U], z_U = (log U − μ)/σ:
      Φ(z_U) − Φ(z) + e^{σ²/2 − σz} Φ(z − σ) + e^{σ²/2 + σz_U} Φ(−z_U − σ).

    Exponentials are combined with log Φ, so extreme z neither overflow nor lose precision.
    """
    y, e, u = _outcomes(time, event, upper)
    m = as_float(mu, "mu", (y.size,))
    s = as_float(sigma, "sigma", (y.size,))
    if np.any(s <= 0):
        raise ValueError("sigma must be > 0")
    z = (np.log(y) - m) / s
    below = np.exp(0.5 * s**2 - s * z + log_ndtr(z - s))  # e^{μ+σ²/2}/y Φ(z − σ)

    def above(zz: np.ndarray) -> np.ndarray:  # U e^{−μ+σ²/2} Φ(−z_U − σ)
        return np.exp(0.5 * s**2 + s * zz + log_ndtr(-zz - s))

    bounded = np.isfinite(u)
    z_upper = (np.log(np.where(bounded, u, 1.0)) - m) / s
    interval = ndtr(z_upper) - ndtr(z) + below + above(z_upper)
    censored = np.where(bounded, interval, ndtr(-z) + below)
    scores = np.where(e, below + above(z), censored)
    return apply_reduction(scores, reduction)
