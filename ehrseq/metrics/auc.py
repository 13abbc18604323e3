"""Cumulative/dynamic time-dependent AUC with inverse probability of censoring weights.

At time t, cases are subjects with an event by t (Y_i ≤ t, Δ_i = 1), weighted by ω_i = 1 / G(Y_i);
controls are subjects still event-free (Y_j > t). With risk scores r (higher = earlier event),

    AUC(t) = Σ_i Σ_j ω_i 1{Y_i ≤ t, Δ_i = 1} 1{Y_j > t} 1{r_j ≤ r_i}  /  (Σ_i ω_i 1{case}) (Σ_j 1{control}),

computed, as scikit-survival's ``cumulative_dynamic_auc`` does, as the area under the weighted ROC curve
in which scores within ``tied_tol`` of their neighbour in sorted order form one threshold. The summary
``mean_auc`` integrates AUC(t) against the Kaplan–Meier estimate Ŝ of the test outcomes,
Σ_k AUC(t_k) (Ŝ(t_{k−1}) − Ŝ(t_k)) / (1 − Ŝ(t_last)) with Ŝ(t_0) := 1 (a single time: AUC itself).
Values equal scikit-survival's; unlike it, every time must have at least one case and one control
(``ValueError`` otherwise) and G is only evaluated where it is used.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ehrseq.errors import ShapeError
from ehrseq.metrics._curves import survival_matrix
from ehrseq.metrics._validation import as_float, check_outcome, check_time_grid, check_tolerance
from ehrseq.metrics.ipcw import CensoringDistribution, positive_censoring_survival
from ehrseq.metrics.kaplan_meier import KaplanMeier
from ehrseq.models.distributions.base import SurvivalDistribution


class AUCResult(NamedTuple):
    """AUC(t) at each evaluation time ``[U]`` and its Kaplan–Meier-weighted mean."""

    auc: np.ndarray
    mean_auc: float


def _risk_matrix(risk: Any, times: np.ndarray, n: int) -> np.ndarray:
    if isinstance(risk, SurvivalDistribution):
        return 1.0 - survival_matrix(risk, times, n, "risk")
    r = as_float(risk, "risk")
    if r.ndim == 1 and r.shape[0] == n:
        return np.broadcast_to(r[:, None], (n, times.size))
    if r.shape != (n, times.size):
        raise ShapeError(f"risk must have shape [{n}] or [{n}, {times.size}], got {list(r.shape)}")
    return r


def weighted_roc_auc(scores: np.ndarray, case_weight: np.ndarray, control_weight: np.ndarray, grid: np.ndarray,
                     tol: float) -> np.ndarray:
    """Area under the weighted ROC curve at each time ``[U]``: true-positive fraction Σ case weights, and
    false-positive fraction Σ control weights, above each threshold (``scores``, ``case_weight`` and
    ``control_weight`` ``[n, U]``); scores within ``tol`` of their sorted neighbour form one threshold."""
    total_case = case_weight.sum(axis=0)
    total_control = control_weight.sum(axis=0)
    empty = (total_control <= 0) | (total_case <= 0)
    if np.any(empty):
        raise ValueError(
            f"AUC(t) needs at least one case (event by t) and one control (event-free after t); "
            f"none at times {grid[empty][:5].tolist()}"
        )
    order = np.argsort(-scores, axis=0, kind="stable")
    sorted_scores = np.take_along_axis(scores, order, axis=0)
    tp = np.cumsum(np.take_along_axis(case_weight, order, axis=0), axis=0) / total_case
    fp = np.cumsum(np.take_along_axis(control_weight, order, axis=0), axis=0) / total_control
    # A threshold sits after the last score of each run of scores tied to their predecessor.
    tied_to_next = np.zeros_like(tp, dtype=bool)
    tied_to_next[:-1] = np.abs(np.diff(sorted_scores, axis=0)) <= tol
    rows = np.arange(scores.shape[0])[:, None]
    last_threshold = np.maximum.accumulate(np.where(~tied_to_next, rows, -1), axis=0)
    has_threshold = last_threshold >= 0
    safe = np.maximum(last_threshold, 0)
    tp_curve = np.where(has_threshold, np.take_along_axis(tp, safe, axis=0), 0.0)
    fp_curve = np.where(has_threshold, np.take_along_axis(fp, safe, axis=0), 0.0)
    tp_curve = np.vstack((np.zeros(grid.size), tp_curve))
    fp_curve = np.vstack((np.zeros(grid.size), fp_curve))
    return np.trapezoid(tp_curve, fp_curve, axis=0)


def cumulative_dynamic_auc(
    time: Any,
    event: Any,
    risk: Any,
    times: Any,
    censoring: CensoringDistribution,
    *,
    tied_tol: float = 1e-8,
) -> AUCResult:
    """Cumulative/dynamic AUC(t) with IPCW; equal to ``sksurv.metrics.cumulative_dynamic_auc``.

    Parameters
    ----------
    time, event:
        Test outcomes ``[n]``.
    risk:
        Risk scores ``[n]`` (one per subject), ``[n, U]`` (time-dependent, e.g. 1 − S_i(t_u)) or a
        :class:`~ehrseq.models.distributions.base.SurvivalDistribution` (risk 1 − S_i(t)).
    times:
        Strictly increasing evaluation times ``[U]``; each needs ≥ 1 case and ≥ 1 control, and case
        times must lie in the censoring support.
    censoring:
        :class:`~ehrseq.metrics.CensoringDistribution` fitted on the training outcomes.
    tied_tol:
        Neighbouring sorted scores closer than this share a threshold.
    """
    t, e = check_outcome(time, event)
    grid = check_time_grid(times)
    tol = check_tolerance(tied_tol)
    scores = _risk_matrix(risk, grid, t.size)

    is_case = (t[:, None] <= grid) & e[:, None]  # [n, U]
    is_control = t[:, None] > grid
    weight = np.zeros(t.size)
    needed = e & (t <= grid[-1])
    weight[needed] = 1.0 / positive_censoring_survival(censoring, t[needed], "case time")
    auc = weighted_roc_auc(scores, is_case * weight[:, None], is_control, grid, tol)

    if grid.size == 1:
        return AUCResult(auc, float(auc[0]))
    km = KaplanMeier.fit(t, e).survival(grid)
    drops = -np.diff(np.concatenate(([1.0], km)))
    return AUCResult(auc, float(np.sum(auc * drops) / (1.0 - km[-1])))

