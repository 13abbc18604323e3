"""Time-dependent Brier score with IPCW (Graf et al. 1999) and the integrated Brier score.

    BS(t) = (1/n) Σ_i [ S_i(t)² 1{Y_i ≤ t, Δ_i = 1} / G(Y_i) + (1 − S_i(t))² 1{Y_i > t} / G(t) ],

G the censoring survival fitted on the training outcomes (subjects censored before t contribute 0).
IBS = ∫_{t_1}^{t_U} BS(t) dt / (t_U − t_1) by the trapezoidal rule over the evaluation times.
Values equal scikit-survival's ``brier_score`` / ``integrated_brier_score``. Differences, by design:
G is evaluated only where it is used (scikit-survival also evaluates it at censored test times and
fails beyond the training support), evaluation times need not lie inside the test follow-up, and
G = 0 where a weight is needed raises ``ValueError`` instead of silently dropping the term.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrseq.metrics._curves import survival_matrix
from ehrseq.metrics._validation import check_outcome, check_time_grid
from ehrseq.metrics.ipcw import CensoringDistribution, positive_censoring_survival


def ipcw_squared_error_terms(
    time: np.ndarray,
    ended: np.ndarray,
    outcome: np.ndarray,
    predicted: np.ndarray,
    grid: np.ndarray,
    censoring: CensoringDistribution,
) -> np.ndarray:
    """Per-subject IPCW squared errors ``[n, U]``, w_i(t) (outcome − predicted)² (the Brier score is their
    mean over subjects).

    ``ended [n]`` marks subjects whose follow-up ended by an event (of any cause); ``outcome [n, U]`` is
    the observed indicator being predicted by ``predicted [n, U]``. Subjects with an event by t weigh
    1/G(Y_i), subjects still followed after t weigh 1/G(t), subjects censored by t weigh 0.
    """
    by_t = (time[:, None] <= grid) & ended[:, None]
    after_t = time[:, None] > grid
    weight_own = np.zeros(time.size)
    needed = ended & (time <= grid[-1])
    weight_own[needed] = 1.0 / positive_censoring_survival(censoring, time[needed], "event time")
    weight_t = 1.0 / positive_censoring_survival(censoring, grid, "evaluation time")
    weights = by_t * weight_own[:, None] + after_t * weight_t
    return weights * (outcome - predicted) ** 2


def brier_score(
    time: Any, event: Any, surv: Any, times: Any, censoring: CensoringDistribution
) -> np.ndarray:
    """IPCW Brier score at each evaluation time, ``[U]``; equal to ``sksurv.metrics.brier_score``.

    Parameters
    ----------
    time, event:
        Test outcomes ``[n]``.
    surv:
        Predicted survival probabilities S_i(t_u) ``[n, U]``, or a
        :class:`~ehrseq.models.distributions.base.SurvivalDistribution` with batch shape ``[n]``.
    times:
        Strictly increasing evaluation times ``[U]`` within the censoring support.
    censoring:
        :class:`~ehrseq.metrics.CensoringDistribution` fitted on the training outcomes.
    """
    t, e = check_outcome(time, event)
    grid = check_time_grid(times)
    s = survival_matrix(surv, grid, t.size)
    alive = (t[:, None] > grid).astype(np.float64)
    return np.mean(ipcw_squared_error_terms(t, e, alive, s, grid, censoring), axis=0)


def integrated_brier_score(
    time: Any, event: Any, surv: Any, times: Any, censoring: CensoringDistribution
) -> float:
    """Integrated Brier score over ``[times[0], times[-1]]`` (trapezoidal rule, ≥ 2 times);
    equal to ``sksurv.metrics.integrated_brier_score``. Arguments as for :func:`brier_score`."""
    grid = check_time_grid(times)
    if grid.size < 2:
        raise ValueError("the integrated Brier score needs at least two evaluation times")
    scores = brier_score(time, event, surv, grid, censoring)
    return float(np.trapezoid(scores, grid) / (grid[-1] - grid[0]))
