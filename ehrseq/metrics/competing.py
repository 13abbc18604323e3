"""Competing-risks metrics for one cause k: Wolbers' time-dependent concordance and IPCW Brier score.

Outcomes are ``event`` codes 0 = censored, 1..K = cause; predictions are cumulative incidence functions
F_k (curves ``[n, T]`` on ``times``, read with ``interpolation`` and F_k(0) = 0, or a
:class:`~ehrseq.models.distributions.base.CompetingRisksDistribution`).

**Cause-specific concordance** (Wolbers et al. 2009/2014, time-dependent form as in DeepHit): a pair
(i, j) is comparable when Δ_i = k and either Y_j > Y_i, or j had a *competing* event (Δ_j ∉ {0, k})
at Y_j ≤ Y_i — such a subject can never have cause k. It is concordant when F_k,i(Y_i) > F_k,j(Y_i);
ties (within ``tied_tol``) count 0 or ½ (``ties``).

**Cause-specific Brier score** at t:

    BS_k(t) = (1/n) Σ_i w_i(t) (1{Y_i ≤ t, Δ_i = k} − F_k,i(t))²,

w_i(t) = 1/G(Y_i) if an event of any cause ended follow-up by t, 1/G(t) if Y_i > t, 0 if censored by t;
G is the censoring survival fitted on training outcomes with any cause counted as an event
(``CensoringDistribution.fit(train_time, train_event != 0)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrseq.metrics._curves import cif_complement_evaluator
from ehrseq.metrics._validation import (
    as_float,
    check_outcome,
    check_positive_int,
    check_probabilities,
    check_time_grid,
)
from ehrseq.metrics.brier import ipcw_squared_error
from ehrseq.metrics.concordance import ConcordanceResult, time_dependent_concordance
from ehrseq.metrics.ipcw import CensoringDistribution
from ehrseq.models.distributions.base import CompetingRisksDistribution


def cause_specific_concordance(
    time: Any,
    event: Any,
    cif: Any,
    times: Any = None,
    *,
    cause: int,
    interpolation: str = "linear",
    ties: str = "zero",
    tied_tol: float = 1e-8,
) -> ConcordanceResult:
    """Wolbers' cause-specific time-dependent concordance index for ``cause`` (1-based; see module docs)."""
    t, codes = check_outcome(time, event, competing=True)
    check_positive_int(cause, "cause")
    evaluator = cif_complement_evaluator(cif, times, t.size, cause, interpolation)
    competing = (codes != 0) & (codes != cause)

    def partners(idx: np.ndarray) -> np.ndarray:
        return (t[:, None] > t[idx]) | (competing[:, None] & (t[:, None] <= t[idx]))

    return time_dependent_concordance(evaluator, t, codes == cause, partners, ties, tied_tol)


def cause_specific_brier_score(
    time: Any, event: Any, cif: Any, times: Any, censoring: CensoringDistribution, *, cause: int
) -> np.ndarray:
    """IPCW Brier score of the cumulative incidence of ``cause`` at each evaluation time ``[U]``.

    Parameters
    ----------
    time, event:
        Test outcomes ``[n]``, event codes 0..K.
    cif:
        F_cause,i(t_u) ``[n, U]`` at the evaluation times, or a competing-risks distribution.
    times:
        Strictly increasing evaluation times ``[U]`` within the censoring support.
    censoring:
        Censoring distribution fitted on training outcomes with ``event != 0`` as the event.
    """
    t, codes = check_outcome(time, event, competing=True)
    check_positive_int(cause, "cause")
    grid = check_time_grid(times)
    if isinstance(cif, CompetingRisksDistribution):
        predicted = 1.0 - cif_complement_evaluator(cif, None, t.size, cause).at(grid)
    else:
        predicted = as_float(cif, "cif", (t.size, grid.size))
    predicted = check_probabilities(predicted, "cif")
    outcome = ((t[:, None] <= grid) & (codes[:, None] == cause)).astype(np.float64)
    return ipcw_squared_error(t, codes != 0, outcome, predicted, grid, censoring)
