"""Survival-CRPS of predictions (Avati et al., Countdown Regression §2.1), right-censored form.

    CRPS_i = ∫_0^{y_i} F_i(z)² dz + Δ_i ∫_{y_i}^∞ S_i(z)² dz          (lower is better),

evaluated on curves over the prediction grid: both integrals are restricted to [0, τ], τ = the last
grid time (y_i is replaced by min(y_i, τ)), and computed exactly for the chosen interpolation. Choose a
grid covering the follow-up of interest; for parametric heads the training loss module has tail-exact
forms. The right-censored Survival-CRPS is not a strictly proper score (Rindt et al. 2022): report the
held-out NLL alongside it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrseq.errors import ShapeError
from ehrseq.metrics._curves import curves_on_grid
from ehrseq.metrics._validation import apply_reduction, check_outcome


def survival_crps(
    time: Any, event: Any, surv: Any, times: Any, *, interpolation: str = "linear", reduction: str = "mean"
) -> float | np.ndarray:
    """Right-censored Survival-CRPS restricted to the grid horizon, reduced by ``reduction``.

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    surv:
        Survival curves ``[n, T]`` on ``times``, or a distribution with batch shape ``[n]`` (read on
        ``times``).
    times:
        Strictly increasing grid ``[T]``; integrals run over [0, times[-1]].
    reduction:
        ``"mean"``, ``"sum"`` or ``"none"`` (per subject, ``[n]``).
    """
    t, e = check_outcome(time, event)
    curves = curves_on_grid(surv, times, interpolation)
    if curves.n != t.size:
        raise ShapeError(f"surv describes {curves.n} subjects but time has {t.size}")
    cut = np.minimum(t, curves.horizon)
    before = curves.integrate(lambda z, s: (1.0 - s) ** 2, np.zeros(t.size), cut)
    after = curves.integrate(lambda z, s: s**2, cut, curves.horizon)
    return apply_reduction(before + e * after, reduction)
