"""Counting-process tables -> a visit table and an outcome table in ehrseq's contracts.

The (start, stop] long format of R ``survival``, lifelines and SurvSet has one row per interval of a
patient's follow-up, with the covariate values in force during it and the event on the last row.
A patient with rows (s_1, e_1], ..., (s_M, e_M] (sorted by start; s_{k+1} = e_k) and event code δ on
the last row becomes

* **visits** — one visit at each start s_k with that row's covariates (a covariate changes value
  when it is measured, i.e. at a visit, and stays in force until the next one; ehrseq's encoders and
  landmark features carry values forward the same way);
* **outcome** — ``time`` = e_M (the event or censoring time), ``event`` = δ, and ``entry_time`` = s_1,
  the start of follow-up. ``entry_time`` is the outcome table's left-truncation column (at risk from
  ``entry_time`` on; see ``data_specs/outcomes.json``): a patient who enters late (delayed entry, e.g.
  follow-up from age 60 on) is known event-free only from s_1, which is also her first visit. With the
  default ``origin="first_visit"`` of :func:`ehrseq.data.build_cohort` times are measured from s_1;
  ``origin="zero"`` keeps the table's own clock (e.g. age), and ``origin="entry_time"`` is the same
  as the default here.

The table is validated first against ``data_specs/counting_process.json``: empty intervals, overlaps,
gaps (unless ``gaps="bridge"``), an event before the last row, nulls in the four roles and event codes
that are not whole numbers ≥ 0 raise :class:`ehrseq.DataError` naming the column, the rule and up to
five patient ids. Rows may come in any order. No row is dropped: M rows give M visits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from ehrseq.data.validation import GapPolicy, IntervalColumns, validate_counting_process


def from_counting_process(
    table: Any,
    *,
    id: str = "pid",
    start: str = "time",
    stop: str = "time2",
    event: str = "event",
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    gaps: GapPolicy = "error",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Convert a counting-process table (Polars or pandas) into ``(visits, outcomes)``; see the module
    docstring for the rules.

    Parameters
    ----------
    table:
        One row per interval: the ``id``, ``start``, ``stop`` and ``event`` columns (defaults: SurvSet's
        ``pid``, ``time``, ``time2``, ``event``) and the covariates.
    numeric, categorical:
        Covariates kept in the visit table. ``None`` infers them from dtypes as the visit table does
        (float/integer numeric, string/categorical/boolean categorical, among the columns other than
        the four roles); a declared integer categorical column is cast to strings so that the visit
        table reads it as categorical. Columns that are neither are left out of the visit table.
    gaps:
        ``"error"`` (default): a start after the previous row's stop is a :class:`ehrseq.DataError`.
        ``"bridge"``: the patient was seen again after the gap, so she is taken as event-free through
        it, with the covariates of the row before it (right for a terminal event such as death; an
        event that could have happened unseen in the gap would be missed).

    Returns
    -------
    visits:
        ``patient_id`` (the id column's dtype), ``time`` (the start column's dtype), the covariates
        (in table order, with their dtypes; declared integer categoricals as strings), sorted by patient
        and time.
    outcomes:
        One row per patient in the same order: ``patient_id``, ``time`` (last stop, the stop column's
        dtype), ``event`` (last event: integer and boolean codes keep their dtype, float codes become
        Int64), ``entry_time`` (first start, the start column's dtype).
    """
    frame, features = validate_counting_process(table, IntervalColumns(id, start, stop, event, gaps),
                                                numeric=numeric, categorical=categorical)
    frame = frame.sort(id, start, stop, maintain_order=True)
    kept = {*features.numeric, *features.categorical}
    covariates = [
        pl.col(c).cast(pl.String) if c in features.categorical and frame.schema[c].is_integer() else pl.col(c)
        for c in frame.columns if c in kept
    ]
    visits = frame.select(pl.col(id).alias("patient_id"), pl.col(start).alias("time"), *covariates)
    code = pl.col(event).cast(pl.Int64) if frame.schema[event].is_float() else pl.col(event)
    intervals = frame.select(pl.col(id).alias("patient_id"), pl.col(stop).alias("time"), code.alias("event"),
                             pl.col(start).alias("entry_time"))
    outcomes = intervals.group_by("patient_id", maintain_order=True).agg(
        pl.col("time").last(), pl.col("event").last(), pl.col("entry_time").first())
    return visits, outcomes
