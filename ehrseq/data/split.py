"""Patient-level train/validation/test splits, stratified and seeded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from ehrseq.data.reader import read_table
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
    strata = _strata(cohort.patients, stratify, "a patient-table column")
    return tuple(cohort.select(part) for part in split_indices(strata, fractions, seed))


def _strata(table: pl.DataFrame, stratify: str | None, what: str) -> np.ndarray:
    """The stratum of every row of ``table``: its ``stratify`` column, or one stratum when ``None``."""
    if stratify is None:
        return np.zeros(table.height, dtype=np.int64)
    if stratify not in table.columns:
        raise ConfigError(f"cannot stratify by {stratify!r}: not {what} ({', '.join(table.columns)})")
    return table.get_column(stratify).to_numpy()


def split_tables(
    visits: Any,
    outcomes: Any,
    fractions: Sequence[float] = (0.8, 0.2),
    seed: int = 0,
    stratify: str | None = "event",
    *,
    id_column: str = "patient_id",
    null_values: Sequence[str] | None = None,
) -> tuple[tuple[pl.DataFrame, pl.DataFrame], ...]:
    """Split a visit table and its outcome table by patient: one ``(visits, outcomes)`` pair of Polars frames per
    fraction. The tables are any source of :func:`ehrseq.data.read_table` (pandas, files, ...).

    The unit is the patient of ``outcomes`` (one row per patient): ``stratify`` names an outcome column
    whose mix every part keeps (``"event"`` by default: the censored/event-type mix), or ``None``. Every
    visit goes with its patient's part; visits of patients absent from ``outcomes`` are in no part (the
    cohort builder reports them when the parts are used). Rows keep their input order.
    """
    visits = read_table(visits, "visits", null_values=null_values)
    outcomes = read_table(outcomes, "outcomes", null_values=null_values)
    if id_column not in outcomes.columns or id_column not in visits.columns:
        raise ConfigError(f"both tables need the id column {id_column!r}")
    parts = []
    for index in split_indices(_strata(outcomes, stratify, "an outcome column"), fractions, seed):
        part_outcomes = outcomes[index]
        ids = part_outcomes.get_column(id_column).implode()
        parts.append((visits.filter(pl.col(id_column).is_in(ids)), part_outcomes))
    return tuple(parts)
