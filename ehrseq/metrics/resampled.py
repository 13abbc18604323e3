"""Landmark metrics on many reweighted copies of one test set at once (bootstrap intervals, paired tests).

A bootstrap resample of n test subjects is a vector of counts w ``[n]`` (how often each subject was
drawn; Σ w = n), and every metric of the landmark table is a function of the sample that only sees
those counts as weights:

* Brier score and IBS are means of per-subject terms b_i: BS* = Σ_i w_i b_i / Σ_i w_i;
* concordance (Harrell/Wolbers, and its IPCW version) is a ratio of pair sums with pair weight w_i w_j:
  C* = Σ_{i,j} w_i w_j ω_ij s_ij / Σ_{i,j} w_i w_j ω_ij over comparable pairs (s_ij = 1 concordant, ½ tied),
  because a subject and its copy are never comparable (equal time and status);
* the cumulative/dynamic AUC is the area under the ROC curve with case weights w_i/G(Y_i) and control
  weights w_j × (their own weight).

So R resamples are R weight vectors ``weights [R, n]``, and each metric below returns its R values in
one vectorised pass — for the concordance, the O(n log n) wavelet-matrix rank queries of
:mod:`ehrseq.metrics._pairs` carry prefix sums of the R weight vectors instead of counts. Each value
equals the metric recomputed on the resampled data set (duplicated rows), which the tests check
against such loops. Censoring weights G stay those fitted on the training outcomes (never resampled).
A value that is undefined for a resample (no case, no comparable pair) is NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ehrseq.errors import ShapeError
from ehrseq.metrics._curves import BLOCK_ELEMENTS
from ehrseq.metrics._pairs import weighted_pair_sums
from ehrseq.metrics._validation import as_float, check_outcome, check_positive_int, check_time_grid, check_tolerance
from ehrseq.metrics.auc import weighted_roc_auc
from ehrseq.metrics.competing import RiskConcordanceSetup, auc_weights, cause_specific_brier_terms
from ehrseq.metrics.ipcw import CensoringDistribution

__all__ = [
    "bootstrap_weight_blocks",
    "bootstrap_weights",
    "percentile_interval",
    "resampled_auc",
    "resampled_brier",
    "resampled_concordance",
    "resampled_integrated_brier",
]


def bootstrap_weights(n: int, n_resamples: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Counts ``[R, n]`` of R nonparametric bootstrap resamples of n subjects (multinomial(n, 1/n) each row)."""
    return next(bootstrap_weight_blocks(n, n_resamples, seed, max_elements=n * n_resamples))


def bootstrap_weight_blocks(n: int, n_resamples: int, seed: int | np.random.Generator | None = None, *,
                            max_elements: int = 1 << 24) -> Iterator[np.ndarray]:
    """The rows of :func:`bootstrap_weights` (same ``seed``, same counts in the same order: one generator draws
    them row after row) in blocks ``[r, n]`` of at most ``max_elements`` counts each (one row at least), so that
    many resamples of a large cohort never sit in memory at once."""
    check_positive_int(n_resamples, "n_resamples")
    if n < 1:
        raise ValueError("the bootstrap needs at least one subject")
    rng = np.random.default_rng(seed)
    block = max(1, max_elements // n)
    for start in range(0, n_resamples, block):
        yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(block, n_resamples - start)).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of resampled values ``[R, ...]`` at ``level`` (e.g. 0.95): the (1 − level)/2 and
    (1 + level)/2 quantiles over the resamples, NaN values left out (all NaN → NaN)."""
    if not 0 < level < 1:
        raise ValueError(f"the interval level must be in (0, 1), got {level!r}")
    values = np.asarray(values, dtype=np.float64)
    defined = np.isfinite(values)
    lower = np.full(values.shape[1:], np.nan)
    upper = np.full(values.shape[1:], np.nan)
    some = defined.any(axis=0)
    if np.any(some):
        quantiles = np.nanquantile(values[:, some], [(1 - level) / 2, (1 + level) / 2], axis=0)
        lower[some], upper[some] = quantiles
    return lower, upper


def _weights(weights: Any, n: int) -> np.ndarray:
    w = as_float(weights, "weights")
    if w.ndim != 2 or w.shape[1] != n:
        raise ShapeError(f"weights must be [R, {n}] (one row per resample), got {list(w.shape)}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and >= 0")
    return w


def _row_blocks(n_rows: int, n: int) -> list[slice]:
    """Blocks of resamples so that ``[n, block]`` temporaries stay bounded."""
    block = max(1, BLOCK_ELEMENTS // max(1, 4 * n))
    return [slice(start, start + block) for start in range(0, n_rows, block)]


def resampled_concordance(time: Any, event: Any, risk: Any, weights: Any, *, cause: int = 1,
                          censoring: CensoringDistribution | None = None, tau: float | None = None,
                          tied_tol: float = 1e-8) -> np.ndarray:
    """Wolbers' concordance of fixed risk scores ``[n]`` under each weight vector, ``[R]``.

    Without ``censoring`` the Harrell-type index (:func:`~ehrseq.metrics.cause_specific_harrell_c`), with
    it the IPCW index truncated at ``tau`` (:func:`~ehrseq.metrics.cause_specific_uno_c`); without
    competing events, Harrell's and Uno's C. Pair (i, j) weighs w_i w_j times its weight in those indices.
    """
    setup = RiskConcordanceSetup.build(time, event, risk, cause, censoring, tau, tied_tol)
    w = _weights(weights, setup.time.size)
    others = np.flatnonzero(setup.others)
    rivals = setup.rivals
    result = np.empty(w.shape[0])
    for rows in _row_blocks(w.shape[0], setup.time.size):
        columns = w[rows].T  # [n, r]
        sums = weighted_pair_sums(setup.time[others], setup.case[others], setup.risk[others], setup.tol,
                                  columns[others])
        cases = others[sums.event_index]
        anchor = setup.anchor_weights(cases)[:, None] * columns[cases]  # [E, r]
        numerator = np.sum(anchor * (sums.concordant + 0.5 * sums.tied_risk), axis=0)
        denominator = np.sum(anchor * sums.comparable, axis=0)
        for i, pair_weight, score in setup.rival_blocks():
            rival_columns = columns[rivals]  # [Q, r]
            numerator += np.sum(columns[i] * ((pair_weight * score) @ rival_columns), axis=0)
            denominator += np.sum(columns[i] * (pair_weight @ rival_columns), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[rows] = np.where(denominator > 0, numerator / denominator, np.nan)
    return result


def resampled_auc(time: Any, event: Any, risk: Any, horizon: float, censoring: CensoringDistribution,
                  weights: Any, *, cause: int = 1, tied_tol: float = 1e-8) -> np.ndarray:
    """Cumulative/dynamic AUC at ``horizon`` of fixed risk scores ``[n]`` under each weight vector, ``[R]``
    (:func:`~ehrseq.metrics.cause_specific_auc`; without competing events the usual one). NaN where a
    resample has no case or no control."""
    t, codes = check_outcome(time, event, competing=True)
    check_positive_int(cause, "cause")
    grid = check_time_grid([horizon])
    tol = check_tolerance(tied_tol)
    r = as_float(risk, "risk", (t.size,))
    w = _weights(weights, t.size)
    case, control = auc_weights(t, codes, grid, censoring, cause)
    result = np.full(w.shape[0], np.nan)
    for rows in _row_blocks(w.shape[0], t.size):
        case_weight = case * w[rows].T  # [n, r]
        control_weight = control * w[rows].T
        valid = (case_weight.sum(axis=0) > 0) & (control_weight.sum(axis=0) > 0)
        if not np.any(valid):
            continue
        scores = np.broadcast_to(r[:, None], (t.size, int(valid.sum())))
        values = weighted_roc_auc(scores, case_weight[:, valid], control_weight[:, valid],
                                  np.arange(int(valid.sum()), dtype=np.float64), tol)
        result[np.arange(w.shape[0])[rows][valid]] = values
    return result


def resampled_brier(time: Any, event: Any, cif: Any, times: Any, censoring: CensoringDistribution, weights: Any,
                    *, cause: int = 1) -> np.ndarray:
    """IPCW Brier score of the incidence of ``cause`` (``cif [n, U]`` at ``times [U]``) under each weight
    vector, ``[R, U]``: Σ_i w_i b_i(t) / Σ_i w_i with b_i the terms of
    :func:`~ehrseq.metrics.cause_specific_brier_score`."""
    terms = cause_specific_brier_terms(time, event, cif, times, censoring, cause=cause)
    w = _weights(weights, terms.shape[0])
    return (w @ terms) / w.sum(axis=1, keepdims=True)


def resampled_integrated_brier(time: Any, event: Any, cif: Any, times: Any, censoring: CensoringDistribution,
                               weights: Any, *, cause: int = 1) -> np.ndarray:
    """:func:`resampled_brier` integrated over ``[times[0], times[-1]]`` (trapezoidal rule, divided by the
    span) for each weight vector, ``[R]``."""
    grid = check_time_grid(times)
    if grid.size < 2:
        raise ValueError("the integrated Brier score needs at least two evaluation times")
    scores = resampled_brier(time, event, cif, grid, censoring, weights, cause=cause)
    return np.trapezoid(scores, grid, axis=1) / (grid[-1] - grid[0])
