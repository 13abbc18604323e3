"""O(n log n) counting of concordant, discordant and tied comparable pairs (Harrell / Uno C).

Comparable pairs follow scikit-survival's ``concordance_index_censored``: (i, j) is comparable when
Δ_i = 1 and either Y_j > Y_i, or Y_j = Y_i and Δ_j = 0 (a subject censored at the time of an event is
known to have survived up to it; two events at the same time are not ordered). With risk scores r,
the pair is *tied* when |r_i − r_j| ≤ tol, *concordant* when r_i − r_j > tol and *discordant*
otherwise — all differences computed in floating point exactly as scikit-survival does.

Algorithm (no loop over subjects or pairs):

1. Order subjects by decreasing time, censored before events at equal times. The comparable set of
   event i is then the prefix of that order before the first event at Y_i, of length m_i.
2. Replace scores by their ranks in sorted order. Because r ↦ fl(r_i − r) is monotone, the
   concordant partners of i are exactly those with rank < q_i for a rank threshold q_i found by a
   vectorized binary search on the sorted scores (and likewise for discordant partners).
3. "How many of the first m_i entries have rank < q_i" for all i at once is a rank query on a wavelet
   matrix over the rank sequence: log2(n) levels, each a handful of O(n) numpy operations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairCounts:
    """Per-event counts over comparable pairs; arrays are indexed like ``event_index``."""

    event_index: np.ndarray  # [E] indices of events into the input arrays
    comparable: np.ndarray  # [E] number of comparable partners j of each event i
    concordant: np.ndarray  # [E]
    discordant: np.ndarray  # [E]
    tied_time: np.ndarray  # [E] partners censored at exactly Y_i

    @property
    def tied_risk(self) -> np.ndarray:
        return self.comparable - self.concordant - self.discordant


class _WaveletMatrix:
    """Static rank structure over an integer sequence with values in [0, 2^levels)."""

    def __init__(self, sequence: np.ndarray, levels: int) -> None:
        self.levels = levels
        self.zero_prefix: list[np.ndarray] = []
        self.zero_total: list[int] = []
        current = sequence
        index_type = np.int32 if sequence.size < 2**31 - 1 else np.int64
        for level in range(levels):
            bit = (current >> (levels - 1 - level)) & 1
            is_zero = bit == 0
            prefix = np.zeros(current.size + 1, dtype=index_type)
            np.cumsum(is_zero, out=prefix[1:])
            self.zero_prefix.append(prefix)
            self.zero_total.append(int(prefix[-1]))
            current = np.concatenate((current[is_zero], current[~is_zero]))

    def count_less(self, length: np.ndarray, threshold: np.ndarray) -> np.ndarray:
        """For each query, #{p < length : sequence[p] < threshold} (0 ≤ threshold < 2^levels)."""
        result = np.zeros(length.size, dtype=np.int64)
        start = np.zeros(length.size, dtype=np.int64)
        end = length.astype(np.int64, copy=True)
        for level in range(self.levels):
            bit = ((threshold >> (self.levels - 1 - level)) & 1).astype(bool)
            prefix = self.zero_prefix[level]
            zeros_start, zeros_end = prefix[start], prefix[end]
            result += np.where(bit, zeros_end - zeros_start, 0)
            total = self.zero_total[level]
            start = np.where(bit, total + start - zeros_start, zeros_start)
            end = np.where(bit, total + end - zeros_end, zeros_end)
        return result


def _count_while(
    sorted_values: np.ndarray, keep_going: Callable[[np.ndarray, np.ndarray], np.ndarray], queries: int
) -> np.ndarray:
    """Vectorized binary search: for each query q, the length of the prefix of ``sorted_values`` on which
    ``keep_going(q_index, values)`` holds (the predicate must be True then False along the array)."""
    n = sorted_values.size
    lo = np.zeros(queries, dtype=np.int64)
    hi = np.full(queries, n, dtype=np.int64)
    rows = np.arange(queries)
    for _ in range(int(n).bit_length() + 1):
        active = lo < hi
        if not np.any(active):
            break
        mid = (lo + hi) // 2
        holds = keep_going(rows, sorted_values[np.minimum(mid, n - 1)])
        lo = np.where(active & holds, mid + 1, lo)
        hi = np.where(active & ~holds, mid, hi)
    return lo


@dataclass(frozen=True)
class _PairLayout:
    """What both the plain and the resampled counts need: the time order, the comparable prefix of every
    event in it, and the rank thresholds of its concordant and non-discordant partners."""

    order: np.ndarray  # [n] decreasing time, censored first within a time
    is_event: np.ndarray  # [n] events, in that order
    comparable: np.ndarray  # [E] length of each event's comparable prefix
    tied_time: np.ndarray  # [E]
    rank: np.ndarray  # [n] rank of each subject's score
    below: np.ndarray  # [E] partners with rank < below are concordant
    not_above: np.ndarray  # [E] partners with rank < not_above are concordant or tied


def _pair_layout(time: np.ndarray, event: np.ndarray, risk: np.ndarray, tied_tol: float) -> _PairLayout:
    n = time.size
    # 1. decreasing time, censored (event=False) first within a time; stable for reproducibility.
    order = np.lexsort((event, -time))
    t_sorted, e_sorted = time[order], event[order]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (t_sorted[1:] != t_sorted[:-1]) | (e_sorted[1:] != e_sorted[:-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    new_time = np.ones(n, dtype=bool)
    new_time[1:] = t_sorted[1:] != t_sorted[:-1]
    time_start = np.maximum.accumulate(np.where(new_time, np.arange(n), 0))
    is_event = e_sorted.astype(bool)
    comparable = run_start[is_event]
    tied_time = comparable - time_start[is_event]

    # 2. ranks of the scores and, per event, rank thresholds of concordant / non-discordant partners.
    by_risk = np.argsort(risk, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_risk] = np.arange(n)
    sorted_risk = risk[by_risk]
    r_event = risk[order][is_event]
    below = _count_while(sorted_risk, lambda q, v: (r_event[q] - v) > tied_tol, r_event.size)
    not_above = _count_while(sorted_risk, lambda q, v: ~((v - r_event[q]) > tied_tol), r_event.size)
    return _PairLayout(order, is_event, comparable, tied_time, rank, below, not_above)


def comparable_pair_counts(time: np.ndarray, event: np.ndarray, risk: np.ndarray, tied_tol: float) -> PairCounts:
    """Counts of comparable pairs per event (see the module docstring); inputs are validated ``[n]`` arrays."""
    layout = _pair_layout(time, event, risk, tied_tol)
    # 3. rank queries over prefixes of the time order.
    wavelet = _WaveletMatrix(layout.rank[layout.order], max(1, int(time.size).bit_length()))
    concordant = wavelet.count_less(layout.comparable, layout.below)
    discordant = layout.comparable - wavelet.count_less(layout.comparable, layout.not_above)
    return PairCounts(layout.order[layout.is_event], layout.comparable, concordant, discordant, layout.tied_time)


@dataclass(frozen=True)
class WeightedPairTotals:
    """Per event and per weight vector: the summed weights of its comparable partners, of the concordant
    ones and of the tied-in-risk ones; arrays ``[E, R]`` indexed like ``event_index [E]``."""

    event_index: np.ndarray  # [E]
    comparable: np.ndarray  # [E, R]
    concordant: np.ndarray  # [E, R]
    tied_risk: np.ndarray  # [E, R]


def weighted_pair_sums(time: np.ndarray, event: np.ndarray, risk: np.ndarray, tied_tol: float,
                       partner_weights: np.ndarray) -> WeightedPairTotals:
    """The counts of :func:`comparable_pair_counts` with every partner j counted w_jr times, for R weight
    vectors at once (``partner_weights [n, R]``, e.g. bootstrap resampling counts): for event i and
    vector r, Σ w_jr over its comparable partners j, over the concordant ones and over the tied ones.

    The same wavelet-matrix rank queries, with prefix *sums of weights* in place of prefix counts at
    every level (built and queried level by level, so memory stays O(n R)): O(R n log n), no loop over
    subjects, pairs or weight vectors.
    """
    layout = _pair_layout(time, event, risk, tied_tol)
    weights = partner_weights[layout.order]  # [n, R] in time order
    prefix = np.zeros((weights.shape[0] + 1, weights.shape[1]))
    np.cumsum(weights, axis=0, out=prefix[1:])
    comparable = prefix[layout.comparable]
    levels = max(1, int(time.size).bit_length())
    sequence = layout.rank[layout.order]
    concordant, not_above = _weighted_count_less(sequence, weights, levels, layout.comparable,
                                                 (layout.below, layout.not_above))
    return WeightedPairTotals(layout.order[layout.is_event], comparable, concordant, not_above - concordant)


def _weighted_count_less(sequence: np.ndarray, weights: np.ndarray, levels: int, length: np.ndarray,
                         thresholds: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """For each threshold array θ and query q: Σ_r-wise of weights[p] over p < length[q] with
    sequence[p] < θ[q] (``weights [n, R]`` → ``[Q, R]`` per threshold array); a weighted
    :meth:`_WaveletMatrix.count_less`."""
    results = [np.zeros((length.size, weights.shape[1])) for _ in thresholds]
    starts = [np.zeros(length.size, dtype=np.int64) for _ in thresholds]
    ends = [length.astype(np.int64, copy=True) for _ in thresholds]
    current, current_weights = sequence, weights
    for level in range(levels):
        is_zero = ((current >> (levels - 1 - level)) & 1) == 0
        count = np.zeros(current.size + 1, dtype=np.int64)
        np.cumsum(is_zero, out=count[1:])
        mass = np.zeros((current.size + 1, weights.shape[1]))
        np.cumsum(current_weights * is_zero[:, None], axis=0, out=mass[1:])
        total = int(count[-1])
        for threshold, result, start, end in zip(thresholds, results, starts, ends):
            bit = ((threshold >> (levels - 1 - level)) & 1).astype(bool)
            zeros_start, zeros_end = count[start], count[end]
            result += np.where(bit[:, None], mass[end] - mass[start], 0.0)
            start[:] = np.where(bit, total + start - zeros_start, zeros_start)
            end[:] = np.where(bit, total + end - zeros_end, zeros_end)
        current = np.concatenate((current[is_zero], current[~is_zero]))
        current_weights = np.concatenate((current_weights[is_zero], current_weights[~is_zero]))
    return results
