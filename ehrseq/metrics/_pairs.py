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


def comparable_pair_counts(time: np.ndarray, event: np.ndarray, risk: np.ndarray, tied_tol: float) -> PairCounts:
    """Counts of comparable pairs per event (see the module docstring); inputs are validated ``[n]`` arrays."""
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

    # 3. rank queries over prefixes of the time order.
    wavelet = _WaveletMatrix(rank[order], max(1, int(n).bit_length()))
    concordant = wavelet.count_less(comparable, below)
    discordant = comparable - wavelet.count_less(comparable, not_above)
    return PairCounts(order[is_event], comparable, concordant, discordant, tied_time)
