"""Patient-level train/validation/test splits, stratified and seeded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ehrseq.errors import ConfigError

if TYPE_CHECKING:
    from ehrseq.data.cohort import Cohort


def split_indices(
    strata: np.ndarray, fractions: Sequence[float], seed: int = 0
) -> list[np.ndarray]:
    """Split ``len(strata)`` items into ``len(fractions)`` parts, the same fractions in every stratum.

    Within each stratum the items are shuffled (seeded) and cut at ``round(cumsum(fractions) · n)``,
    so every stratum is shared out as evenly as rounding allows. Returns sorted index arrays that
    partition ``range(len(strata))``.
    """
    weights = np.asarray(fractions, dtype=np.float64)
    if weights.ndim != 1 or weights.size < 2 or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise ConfigError(f"fractions must be >= 2 non-negative numbers summing to 1, got {list(fractions)}")
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(strata))
    _, codes = np.unique(strata, return_inverse=True)
    order = order[np.argsort(codes[order], kind="stable")]  # grouped by stratum, random within
    group = codes[order]
    counts = np.bincount(group)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(order)) - starts[group]
    bounds = np.rint(np.outer(counts, np.cumsum(weights))).astype(np.int64)  # [strata, parts]
    part = (rank[:, None] >= bounds[group]).sum(axis=1)
    return [np.sort(order[part == k]) for k in range(weights.size)]


def split_patients(
    cohort: Cohort,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: str | None = "event",
) -> tuple[Cohort, ...]:
    """Split a cohort by patient (never a patient in two parts).

    ``stratify="event"`` keeps the event-type mix (censored, type 1, ...) of every part equal to the
    cohort's; any other patient-table column name stratifies by that column; ``None`` does not
    stratify. Returns one :class:`Cohort` per fraction, patients in cohort order.
    """
    if stratify is None:
        strata = np.zeros(cohort.n_patients, dtype=np.int64)
    else:
        if stratify not in cohort.patients.columns:
            raise ConfigError(f"cannot stratify by {stratify!r}: not a patient-table column "
                              f"({', '.join(cohort.patients.columns)})")
        strata = cohort.patients.get_column(stratify).to_numpy()
    return tuple(cohort.select(part) for part in split_indices(strata, fractions, seed))
