"""Concordance indices: Harrell's C, Uno's IPCW C and Antolini's time-dependent C_td.

**Comparable pairs (Harrell, Uno)** follow scikit-survival: (i, j) is comparable when Δ_i = 1 and
Y_i < Y_j, *or* Y_i = Y_j with Δ_j = 0 — a subject censored at the time of an event is known to have
outlived it; two events at the same time are not ordered. Such event–censored pairs at equal times are
reported as ``tied_time``. Risk scores r are "higher = earlier event"; a pair is tied in risk when
|r_i − r_j| ≤ ``tied_tol`` and counts 1/2. Both indices run in O(n log n) (:mod:`ehrseq.metrics._pairs`).

**Antolini's C_td** compares survival curves at the earlier time: over pairs with Δ_i = 1 and
Y_i < Y_j (strictly), concordant when S_i(Y_i) < S_j(Y_i).

No comparable pair (all censored, a single subject, or events that cannot be ordered against anyone)
raises :class:`~ehrseq.metrics.NoComparablePairsError`, where scikit-survival raises or returns NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ehrseq.metrics._curves import BLOCK_ELEMENTS, SurvivalEvaluator, survival_evaluator
from ehrseq.metrics._pairs import PairCounts, comparable_pair_counts
from ehrseq.metrics._validation import (
    NoComparablePairsError,
    as_float,
    check_choice,
    check_outcome,
    check_tolerance,
)
from ehrseq.metrics.ipcw import CensoringDistribution, positive_censoring_survival


class ConcordanceResult(NamedTuple):
    """A concordance index and its pair counts (unpacks like scikit-survival's tuple).

    ``concordant``, ``discordant`` and ``tied_risk`` count the comparable pairs that enter the index
    (for Uno's C: pairs whose earlier time is before τ); ``tied_time`` counts those of them formed by an
    event and a censoring at the same time.
    """

    cindex: float
    concordant: int
    discordant: int
    tied_risk: int
    tied_time: int


def _risk_inputs(time: Any, event: Any, risk: Any, tied_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    t, e = check_outcome(time, event)
    r = as_float(risk, "risk", (t.size,))
    return t, e, r, check_tolerance(tied_tol)


def weighted_pair_totals(counts: PairCounts, weights: np.ndarray) -> tuple[float, float, int, int, int, int]:
    """Σ w (concordant + ½ tied), Σ w comparable, and the concordant, discordant, tied-in-risk and
    tied-in-time pairs of the events with weight w > 0 (``weights`` per event of ``counts``)."""
    used = weights > 0
    return (
        float(np.sum(weights * (counts.concordant + 0.5 * counts.tied_risk))),
        float(np.sum(weights * counts.comparable)),
        int(counts.concordant[used].sum()),
        int(counts.discordant[used].sum()),
        int(counts.tied_risk[used].sum()),
        int(counts.tied_time[used].sum()),
    )


def _weighted_index(counts: PairCounts, weights: np.ndarray) -> ConcordanceResult:
    numerator, denominator, *pairs = weighted_pair_totals(counts, weights)
    if denominator <= 0:
        raise NoComparablePairsError(
            "no comparable pairs: no event has a subject known to outlive it (concordance is undefined)"
        )
    return ConcordanceResult(numerator / denominator, *pairs)


def _require_events(event: np.ndarray) -> None:
    if event.size == 0:
        raise NoComparablePairsError("no subjects: no comparable pairs")
    if not np.any(event):
        raise NoComparablePairsError("all subjects are censored: no comparable pairs")


def harrell_c(time: Any, event: Any, risk: Any, *, tied_tol: float = 1e-8) -> ConcordanceResult:
    """Harrell's concordance index in O(n log n); equal to ``sksurv.metrics.concordance_index_censored``.

    C = Σ_{comparable (i,j)} [1{r_i − r_j > tol} + ½ 1{|r_i − r_j| ≤ tol}] / #comparable pairs.

    Parameters
    ----------
    time:
        Observed times ``[n]`` (≥ 0).
    event:
        Event indicators ``[n]`` (bool or 0/1).
    risk:
        Risk scores ``[n]``, higher = earlier event (e.g. a predicted risk at a horizon, or −median).
    tied_tol:
        Scores closer than this are tied (count ½), as in scikit-survival.
    """
    t, e, r, tol = _risk_inputs(time, event, risk, tied_tol)
    _require_events(e)
    counts = comparable_pair_counts(t, e, r, tol)
    return _weighted_index(counts, np.ones(counts.comparable.size))


def uno_c(
    time: Any,
    event: Any,
    risk: Any,
    censoring: CensoringDistribution,
    *,
    tau: float | None = None,
    tied_tol: float = 1e-8,
) -> ConcordanceResult:
    """Uno's IPCW concordance index truncated at τ, in O(n log n); equal to ``concordance_index_ipcw``.

    Each comparable pair (i, j) with Y_i < τ is weighted by 1 / G(Y_i)², G the censoring survival
    fitted on the training outcomes (``censoring``); pairs with Y_i ≥ τ get weight 0.

    Parameters
    ----------
    time, event, risk:
        Test outcomes ``[n]`` and risk scores ``[n]`` (higher = earlier event).
    censoring:
        :class:`~ehrseq.metrics.CensoringDistribution` fitted on the training outcomes.
    tau:
        Truncation time (``None``: no truncation). Event times below τ must lie within the censoring
        support (at most ``censoring.max_time`` and G > 0), otherwise ``ValueError``.
    tied_tol:
        Scores closer than this are tied (count ½).
    """
    t, e, r, tol = _risk_inputs(time, event, risk, tied_tol)
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite time > 0, got {tau!r}")
    _require_events(e)
    counts = comparable_pair_counts(t, e, r, tol)
    event_times = t[counts.event_index]
    inside = np.ones(event_times.size, dtype=bool) if tau is None else event_times < tau
    weights = np.zeros(event_times.size)
    weights[inside] = positive_censoring_survival(censoring, event_times[inside], "event time") ** -2.0
    return _weighted_index(counts, weights)


def time_dependent_concordance(
    evaluator: SurvivalEvaluator,
    time: np.ndarray,
    anchors: np.ndarray,
    partners: Callable[[np.ndarray], np.ndarray],
    ties: str,
    tied_tol: float,
) -> ConcordanceResult:
    """Shared core of C_td-type indices: pairs (i, j) with i in ``anchors`` and j where
    ``partners(i_block)`` (a ``[n, b]`` mask) is True; concordant when S_i(Y_i) < S_j(Y_i) − tol.

    Blocked over anchors so that temporaries stay bounded; no loop over pairs.
    """
    check_choice(ties, ("zero", "half"), "ties")
    tol = check_tolerance(tied_tol)
    own = evaluator.at_own(time)
    anchor_index = np.flatnonzero(anchors)
    concordant = discordant = tied = 0
    block = max(1, BLOCK_ELEMENTS // max(1, time.size))
    for start in range(0, anchor_index.size, block):
        idx = anchor_index[start : start + block]
        mask = partners(idx)
        gap = evaluator.at(time[idx]) - own[idx]  # [n, b]: S_j(Y_i) − S_i(Y_i)
        is_tied = mask & (np.abs(gap) <= tol)
        is_concordant = mask & (gap > tol)
        concordant += int(is_concordant.sum())
        tied += int(is_tied.sum())
        discordant += int(mask.sum()) - int(is_concordant.sum()) - int(is_tied.sum())
    total = concordant + discordant + tied
    if total == 0:
        raise NoComparablePairsError("no comparable pairs: no event has a subject known to outlive it")
    score = concordant + (0.5 * tied if ties == "half" else 0.0)
    return ConcordanceResult(score / total, concordant, discordant, tied, 0)


def antolini_c(
    time: Any,
    event: Any,
    surv: Any,
    times: Any = None,
    *,
    interpolation: str = "linear",
    ties: str = "zero",
    tied_tol: float = 1e-8,
) -> ConcordanceResult:
    """Antolini's time-dependent concordance C_td.

    C_td = #{(i, j): Δ_i = 1, Y_i < Y_j, S_i(Y_i) < S_j(Y_i)} / #{(i, j): Δ_i = 1, Y_i < Y_j}.

    Parameters
    ----------
    time, event:
        Outcomes ``[n]``.
    surv:
        Survival curves ``[n, T]`` on the grid ``times [T]``, or a
        :class:`~ehrseq.models.distributions.base.SurvivalDistribution` with batch shape ``[n]``
        (evaluated exactly; ``times`` is then unused).
    interpolation:
        How curves are read between grid points: ``"linear"`` or ``"step"`` (previous grid value);
        held at the last value beyond the grid (see :mod:`ehrseq.metrics._curves`).
    ties:
        Pairs with |S_i(Y_i) − S_j(Y_i)| ≤ ``tied_tol`` count 0 (``"zero"``, Antolini's definition) or ½
        (``"half"``). ``tied_risk`` reports how many there are.
    """
    t, e = check_outcome(time, event)
    _require_events(e)
    evaluator = survival_evaluator(surv, times, t.size, interpolation)
    return time_dependent_concordance(evaluator, t, e, lambda idx: t[:, None] > t[idx], ties, tied_tol)
