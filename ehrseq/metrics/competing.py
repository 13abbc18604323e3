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

**Concordance of fixed risk scores** (one score per subject, e.g. the predicted incidence at a
horizon; Wolbers et al. 2014): a pair (i, j) with Δ_i = k (and Y_i < τ when truncated) is comparable
when j is known to be free of cause k longer than i: Y_j > Y_i, or Y_j = Y_i with Δ_j = 0 (as in
Harrell's C), or a competing event of j at any time. Concordant when r_i − r_j > tol, tied (½) when
|r_i − r_j| ≤ tol. The IPCW version weighs a pair by 1/G(Y_i)² when j is still followed after Y_i
and by 1/(G(Y_i) G(Y_j)) when j's competing event came first (at Y_j ≤ Y_i). Without competing events
these are Harrell's and Uno's C.

**Cumulative/dynamic AUC** (Blanche et al. 2013, definition 2): at t, cases have cause k by t (weight
1/G(Y_i)); controls are every subject free of cause k at t — still followed (weight 1/G(t)) or with a
competing event by t (weight 1/G(Y_j)); AUC(t) is the area under the weighted ROC curve.

The censoring distribution G is fitted on training outcomes with any cause counted as an event
(``CensoringDistribution.fit(train_time, train_event != 0)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ehrseq.metrics._curves import BLOCK_ELEMENTS, cif_complement_evaluator
from ehrseq.metrics._pairs import comparable_pair_counts
from ehrseq.metrics._validation import (
    NoComparablePairsError,
    as_float,
    check_outcome,
    check_positive_int,
    check_probabilities,
    check_time_grid,
    check_tolerance,
)
from ehrseq.metrics.auc import AUCResult, weighted_roc_auc
from ehrseq.metrics.brier import ipcw_squared_error_terms
from ehrseq.metrics.concordance import ConcordanceResult, time_dependent_concordance, weighted_pair_totals
from ehrseq.metrics.ipcw import CensoringDistribution, positive_censoring_survival
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
    return np.mean(cause_specific_brier_terms(time, event, cif, times, censoring, cause=cause), axis=0)


def cause_specific_brier_terms(
    time: Any, event: Any, cif: Any, times: Any, censoring: CensoringDistribution, *, cause: int
) -> np.ndarray:
    """The per-subject terms ``[n, U]`` whose mean over subjects is :func:`cause_specific_brier_score`
    (same arguments): w_i(t) (1{Y_i ≤ t, Δ_i = k} − F_k,i(t))²."""
    t, codes = check_outcome(time, event, competing=True)
    check_positive_int(cause, "cause")
    grid = check_time_grid(times)
    predicted = check_probabilities(_cif_matrix(cif, grid, t.size, cause, "cif"), "cif")
    outcome = ((t[:, None] <= grid) & (codes[:, None] == cause)).astype(np.float64)
    return ipcw_squared_error_terms(t, codes != 0, outcome, predicted, grid, censoring)


def _cif_matrix(cif: Any, grid: np.ndarray, n: int, cause: int, name: str) -> np.ndarray:
    """F_cause,i(t_u) ``[n, U]`` from a competing-risks distribution or an ``[n, U]`` array."""
    if isinstance(cif, CompetingRisksDistribution):
        return 1.0 - cif_complement_evaluator(cif, None, n, cause).at(grid)
    return as_float(cif, name, (n, grid.size))


def cause_specific_integrated_brier_score(
    time: Any, event: Any, cif: Any, times: Any, censoring: CensoringDistribution, *, cause: int
) -> float:
    """:func:`cause_specific_brier_score` integrated over ``[times[0], times[-1]]`` (trapezoidal rule,
    ≥ 2 times, divided by the span), as :func:`~ehrseq.metrics.integrated_brier_score`."""
    grid = check_time_grid(times)
    if grid.size < 2:
        raise ValueError("the integrated Brier score needs at least two evaluation times")
    scores = cause_specific_brier_score(time, event, cif, grid, censoring, cause=cause)
    return float(np.trapezoid(scores, grid) / (grid[-1] - grid[0]))


@dataclass(frozen=True)
class RiskConcordanceSetup:
    """Validated inputs of Wolbers' concordance of fixed risk scores and the pieces both the plain and the
    resampled computations use (module docstring)."""

    time: np.ndarray  # [n]
    codes: np.ndarray  # [n] 0 censored, 1..K cause
    risk: np.ndarray  # [n]
    tol: float
    case: np.ndarray  # [n] event of the cause
    competing: np.ndarray  # [n] event of another cause
    inside: np.ndarray  # [n] cases before tau (the anchors that count)
    inverse_g: np.ndarray  # [n] 1/G(Y) where needed, 1 elsewhere (all 1 without censoring weights)

    @classmethod
    def build(cls, time: Any, event: Any, risk: Any, cause: int, censoring: CensoringDistribution | None,
              tau: float | None, tied_tol: float) -> RiskConcordanceSetup:
        t, codes = check_outcome(time, event, competing=True)
        check_positive_int(cause, "cause")
        r = as_float(risk, "risk", (t.size,))
        tol = check_tolerance(tied_tol)
        if tau is not None and not (np.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a finite time > 0, got {tau!r}")
        case = codes == cause
        if not np.any(case):
            raise NoComparablePairsError(f"no event of cause {cause}: no comparable pairs")
        competing = (codes != 0) & ~case
        inside = case if tau is None else case & (t < tau)
        inverse_g = np.ones(t.size)
        if censoring is not None:
            needed = inside | (competing & (t <= t[inside].max(initial=-np.inf)))
            inverse_g[needed] = 1.0 / positive_censoring_survival(censoring, t[needed], "event time")
        return cls(t, codes, r, tol, case, competing, inside, inverse_g)

    @property
    def others(self) -> np.ndarray:
        """Censored subjects and events of the cause: their pairs are counted in O(n log n)."""
        return ~self.competing

    def anchor_weights(self, case_index: np.ndarray) -> np.ndarray:
        """Weight of the pairs of each case in ``case_index`` with partners still followed: 1/G(Y_i)², 0 after τ."""
        return np.where(self.inside[case_index], self.inverse_g[case_index] ** 2, 0.0)

    def rival_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pairs of a case with a competing event, blocked over cases: (case indices ``[b]``, pair weights
        ``[b, Q]``, pair scores ``[b, Q]`` = 1 concordant, ½ tied, 0 discordant) against every competing
        event ``[Q]`` (:attr:`rivals`)."""
        rivals = self.rivals
        anchors = np.flatnonzero(self.inside)
        block = max(1, BLOCK_ELEMENTS // max(1, rivals.size))
        t, r, inverse_g = self.time, self.risk, self.inverse_g
        for start in range(0, anchors.size if rivals.size else 0, block):
            i = anchors[start:start + block, None]  # [b, 1] cases against every competing event [Q]
            still_followed = t[rivals] > t[i]
            pair_weight = inverse_g[i] * np.where(still_followed, inverse_g[i], inverse_g[rivals])
            gap = r[i] - r[rivals]
            score = (gap > self.tol) + 0.5 * (np.abs(gap) <= self.tol)
            yield i[:, 0], pair_weight, score

    @property
    def rivals(self) -> np.ndarray:
        return np.flatnonzero(self.competing)


def _risk_concordance(time: Any, event: Any, risk: Any, cause: int, censoring: CensoringDistribution | None,
                      tau: float | None, tied_tol: float) -> ConcordanceResult:
    """Wolbers' concordance of fixed risk scores (module docstring): pairs with a partner that is not a
    competing event are counted in O(n log n) as in Harrell's C; pairs with a competing event, blocked."""
    setup = RiskConcordanceSetup.build(time, event, risk, cause, censoring, tau, tied_tol)
    others = setup.others
    counts = comparable_pair_counts(setup.time[others], setup.case[others], setup.risk[others], setup.tol)
    cases = np.flatnonzero(others)[counts.event_index]
    numerator, denominator, concordant, discordant, tied, tied_time = weighted_pair_totals(
        counts, setup.anchor_weights(cases))
    for _, pair_weight, score in setup.rival_blocks():
        numerator += float(np.sum(pair_weight * score))
        denominator += float(pair_weight.sum())
        concordant += int(np.sum(score == 1.0))
        tied += int(np.sum(score == 0.5))
        discordant += int(np.sum(score == 0.0))
    if denominator <= 0:
        raise NoComparablePairsError(
            f"no comparable pairs: no event of cause {cause} has a subject known to stay free of it longer")
    return ConcordanceResult(numerator / denominator, concordant, discordant, tied, tied_time)


def cause_specific_harrell_c(time: Any, event: Any, risk: Any, *, cause: int, tau: float | None = None,
                             tied_tol: float = 1e-8) -> ConcordanceResult:
    """Harrell-type concordance of fixed risk scores ``[n]`` (higher = earlier event) for ``cause`` with
    competing events (Wolbers; see the module docstring): every pair weighs 1; events of the cause at
    or after ``tau`` are not compared. Equals :func:`~ehrseq.metrics.harrell_c` without competing events."""
    return _risk_concordance(time, event, risk, cause, None, tau, tied_tol)


def cause_specific_uno_c(time: Any, event: Any, risk: Any, censoring: CensoringDistribution, *, cause: int,
                         tau: float | None = None, tied_tol: float = 1e-8) -> ConcordanceResult:
    """IPCW concordance of fixed risk scores ``[n]`` for ``cause`` with competing events, truncated at
    ``tau`` (Wolbers et al. 2014; see the module docstring). Equals :func:`~ehrseq.metrics.uno_c`
    without competing events. Times where G is needed must lie in the censoring support."""
    return _risk_concordance(time, event, risk, cause, censoring, tau, tied_tol)


def cause_specific_auc(time: Any, event: Any, risk: Any, times: Any, censoring: CensoringDistribution, *,
                       cause: int, tied_tol: float = 1e-8) -> AUCResult:
    """Cumulative/dynamic AUC(t) of ``cause`` with competing events (Blanche et al. 2013, definition 2;
    module docstring) at each time ``[U]``.

    ``risk`` is F_cause,i(t_u) ``[n, U]``, a fixed score ``[n]`` or a competing-risks distribution.
    ``mean_auc`` weighs AUC(t_u) by the increments of the Aalen–Johansen incidence of the cause over the
    times (F(t_0) := 0), as :func:`~ehrseq.metrics.cumulative_dynamic_auc` weighs by the Kaplan–Meier.
    Equals :func:`~ehrseq.metrics.cumulative_dynamic_auc` (up to rounding) without competing events.
    """
    t, codes = check_outcome(time, event, competing=True)
    check_positive_int(cause, "cause")
    grid = check_time_grid(times)
    tol = check_tolerance(tied_tol)
    if not isinstance(risk, CompetingRisksDistribution) and np.ndim(risk) == 1:  # a fixed score per subject
        scores = np.broadcast_to(as_float(risk, "risk", (t.size,))[:, None], (t.size, grid.size))
    else:
        scores = _cif_matrix(risk, grid, t.size, cause, "risk")
    case_weight, control_weight = auc_weights(t, codes, grid, censoring, cause)
    auc = weighted_roc_auc(scores, case_weight, control_weight, grid, tol)
    if grid.size == 1:
        return AUCResult(auc, float(auc[0]))
    incidence = aalen_johansen(t, codes, cause, grid)
    steps = np.diff(np.concatenate(([0.0], incidence)))
    return AUCResult(auc, float(np.sum(auc * steps) / incidence[-1]))


def auc_weights(time: np.ndarray, codes: np.ndarray, grid: np.ndarray, censoring: CensoringDistribution,
                cause: int) -> tuple[np.ndarray, np.ndarray]:
    """Case and control weights ``[n, U]`` of :func:`cause_specific_auc` (validated inputs): cases have the
    cause by t (1/G(Y_i)); controls are still followed (1/G(t)) or had a competing event by t (1/G(Y_j))."""
    ended = codes != 0
    by_t = time[:, None] <= grid
    own = np.zeros(time.size)
    needed = ended & (time <= grid[-1])
    own[needed] = 1.0 / positive_censoring_survival(censoring, time[needed], "event time")
    case_weight = (by_t & (codes == cause)[:, None]) * own[:, None]
    competing_by_t = by_t & (ended & (codes != cause))[:, None]
    followed = ~by_t / positive_censoring_survival(censoring, grid, "evaluation time")
    return case_weight, followed + competing_by_t * own[:, None]


def aalen_johansen(time: Any, event: Any, cause: int, times: Any) -> np.ndarray:
    """Aalen–Johansen cumulative incidence of ``cause`` at each of ``times`` ``[U]``.

    F_k(t) = Σ_{t_j ≤ t} Ŝ(t_j−) d_kj / n_j over the distinct times t_j, with n_j at risk, d_kj events of
    cause k at t_j and Ŝ the all-cause Kaplan–Meier (``event`` codes 0 = censored, 1..K). Vectorized.
    """
    t, codes = check_outcome(time, event, competing=True)
    at = np.atleast_1d(np.asarray(times, dtype=np.float64))
    distinct, inverse = np.unique(t, return_inverse=True)
    any_event = np.bincount(inverse, weights=codes != 0, minlength=distinct.size)
    of_cause = np.bincount(inverse, weights=codes == cause, minlength=distinct.size)
    at_risk = t.size - np.concatenate([[0], np.cumsum(np.bincount(inverse, minlength=distinct.size))[:-1]])
    survival_after = np.cumprod(1.0 - any_event / at_risk)
    survival_before = np.concatenate([[1.0], survival_after[:-1]])
    cumulative = np.concatenate([[0.0], np.cumsum(survival_before * of_cause / at_risk)])
    return cumulative[np.searchsorted(distinct, at, side="right")]
