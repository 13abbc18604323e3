"""Sharpness of predicted distributions: the coefficient of variation (Countdown Regression §2.2).

CoV = sd / mean of the predicted remaining-time distribution — scale-free, so a one-day and a one-year
prediction are held to the same standard. Lower is sharper; it is only meaningful for calibrated models.

From curves (or a distribution read on a grid) the moments are those of the *restricted* time
min(R, τ), τ = the last grid time: E = ∫_0^τ S(z) dz and E[min(R, τ)²] = ∫_0^τ 2z S(z) dz, integrated
exactly for the chosen interpolation. Use a grid that reaches far into the tail for the unrestricted
value; for log-normal predictions :func:`coefficient_of_variation_lognormal` gives it in closed form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrseq.metrics._curves import curves_on_grid
from ehrseq.metrics._validation import apply_reduction, as_float


def coefficient_of_variation(
    surv: Any, times: Any, *, interpolation: str = "linear", reduction: str = "mean"
) -> float | np.ndarray:
    """CoV of min(R, τ) per subject, reduced by ``reduction`` (``"mean"``, ``"sum"`` or ``"none"`` → ``[n]``).

    Parameters
    ----------
    surv:
        Survival curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]`` (read on
        ``times``).
    times:
        Strictly increasing grid ``[T]``; τ = ``times[-1]`` must be > 0.
    """
    curves = curves_on_grid(surv, times, interpolation)
    if curves.horizon <= 0:
        raise ValueError("the grid must extend beyond 0")
    zeros = np.zeros(curves.n)
    mean = curves.integrate(lambda z, s: s, zeros, curves.horizon)
    second = curves.integrate(lambda z, s: 2.0 * z * s, zeros, curves.horizon)
    variance = np.maximum(second - mean**2, 0.0)
    return apply_reduction(np.sqrt(variance) / mean, reduction)


def coefficient_of_variation_lognormal(sigma: Any, *, reduction: str = "mean") -> float | np.ndarray:
    """CoV of LogNormal(μ, σ²) = sqrt(exp(σ²) − 1), independent of μ; ``sigma`` ``[n]`` (> 0)."""
    s = as_float(sigma, "sigma", (None,))
    if np.any(s <= 0):
        raise ValueError("sigma must be > 0")
    return apply_reduction(np.sqrt(np.expm1(s**2)), reduction)
