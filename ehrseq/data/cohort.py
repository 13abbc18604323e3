"""Cohort and per-visit targets: validated tables -> one patient table and one visit table.

For patient i with visits v_1 < ... < v_M, outcome time Y and event type Δ, only visits with
v_m < Y are kept (a visit at or after Y would leak the outcome). Per kept visit m the cohort holds

* ``elapsed`` = v_m − origin (days; negative before a user origin),
* ``gap`` = v_m − v_{m−1} (days; 0 at the patient's first visit, computed before any truncation),
* ``remaining`` = R_m = Y − v_m > 0 (days),
* ``upper`` = time_upper − v_m (interval censoring: the event is in (R_m, upper]; inf when none).

Datetime and date clocks are converted to float days. All times in the patient table are days since
the patient's origin, except ``origin`` itself (days on the internal clock: numeric clocks as given,
datetimes as days since 1970-01-01 UTC). Missing numeric feature values are null in the cohort (NaN
is converted to null).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl

from ehrseq.data._ragged import offsets_from_lengths, ragged_rows
from ehrseq.data.report import CohortReport, RowCount
from ehrseq.data.specs import clock_kind
from ehrseq.data.validation import (
    US_PER_DAY,
    DuplicatePolicy,
    UnmatchedPolicy,
    ValidatedTables,
    same_as_previous,
    validate,
)
from ehrseq.errors import ConfigError


@dataclass(frozen=True, eq=False)
class Cohort:
    """Patients, their kept visits and targets, as two Polars frames (see the module docstring).

    ``patients`` (one row per patient, in patient-index order): ``patient_id``, ``origin``,
    ``n_visits``, ``first_visit`` / ``last_visit`` (elapsed days of the first and last kept visit)
    and, when labelled, ``outcome_time`` (Y − origin), ``event`` (0 = censored, 1..K),
    ``time_upper`` (time_upper − origin, inf if none), ``entry_time`` (entry − origin; only when the
    outcome table has it), ``weight``; with multi-event data ``event_times`` / ``event_flags`` /
    ``event_at_risk`` (``Array[E]`` columns, events in :attr:`event_names` order; not at risk =
    no row in the multi-event table, time 0 and flag False there).

    ``visits`` (one row per kept visit, grouped by patient in patient-index order, by time within):
    ``patient_index``, ``time`` (days on the internal clock), ``elapsed``, ``gap``, ``remaining`` and
    ``upper`` (labelled only), then the feature columns and the codes column (stored as
    ``List(CODES_DTYPE)``, a categorical shared by every cohort of the process; it reads as strings).

    Slicing by patients (``cohort[indices]``) gives a cohort of those patients, re-indexed in the
    given order; its ``report`` still describes the build of the full cohort.
    """

    patients: pl.DataFrame
    visits: pl.DataFrame
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    codes: str | None
    clock_dtype: pl.DataType
    n_event_types: int
    event_type_names: tuple[str, ...] | None = None
    event_names: tuple[str, ...] = ()
    report: CohortReport | None = None

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return self.patients.height

    @property
    def n_patients(self) -> int:
        return self.patients.height

    @property
    def n_visits(self) -> int:
        return self.visits.height

    @property
    def is_labelled(self) -> bool:
        return "outcome_time" in self.patients.columns

    @property
    def has_multi_events(self) -> bool:
        return bool(self.event_names)

    @property
    def patient_ids(self) -> pl.Series:
        return self.patients.get_column("patient_id")

    @property
    def lengths(self) -> np.ndarray:
        """Visits per patient, ``[P]`` int64."""
        return self.patients.get_column("n_visits").to_numpy().astype(np.int64, copy=False)

    @property
    def offsets(self) -> np.ndarray:
        """Row offsets of each patient's visits in :attr:`visits`, ``[P + 1]`` int64."""
        return offsets_from_lengths(self.lengths)

    def __repr__(self) -> str:
        labels = f", K={self.n_event_types}" if self.is_labelled else ", unlabelled"
        return (f"Cohort({self.n_patients:,} patients, {self.n_visits:,} visits, {len(self.numeric)} numeric, "
                f"{len(self.categorical)} categorical, codes={self.codes!r}{labels})")

    # ------------------------------------------------------------------ slicing
    def __getitem__(self, indices: slice | Sequence[int] | np.ndarray) -> Cohort:
        if isinstance(indices, slice):
            indices = np.arange(self.n_patients)[indices]
        return self.select(indices)

    def select(self, indices: Sequence[int] | np.ndarray) -> Cohort:
        """The cohort of the patients at ``indices`` (patient-table rows, in that order, or a boolean
        mask over patients)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.n_patients,):
                raise IndexError(f"a boolean mask must have one entry per patient ({self.n_patients})")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -self.n_patients or idx.max() >= self.n_patients):
            raise IndexError(f"patient indices out of range for a cohort of {self.n_patients} patients")
        idx = np.where(idx < 0, idx + self.n_patients, idx)
        if np.unique(idx).size != idx.size:
            raise ConfigError("patient indices must be distinct")
        offsets = self.offsets
        lengths = offsets[idx + 1] - offsets[idx]
        rows = ragged_rows(offsets[idx], lengths)
        new_index = np.repeat(np.arange(idx.size, dtype=np.int64), lengths)
        visits = self.visits[rows].with_columns(pl.Series("patient_index", new_index))
        return replace(self, patients=self.patients[idx], visits=visits)

    # ------------------------------------------------------------------ clock
    def to_clock(self, days: pl.Series | np.ndarray) -> pl.Series:
        """Days on the internal clock back to the input tables' clock dtype (datetime, date or number)."""
        series = days if isinstance(days, pl.Series) else pl.Series("time", np.asarray(days, dtype=np.float64))
        dtype = self.clock_dtype
        if isinstance(dtype, pl.Datetime):
            micros = (series * US_PER_DAY).round(0).cast(pl.Int64)
            out = pl.select(pl.from_epoch(micros, time_unit="us")).to_series()
            if dtype.time_zone is not None:
                out = out.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone)
            return out.cast(pl.Datetime(dtype.time_unit or "us", dtype.time_zone)).alias(series.name)
        if dtype == pl.Date:
            return series.round(0).cast(pl.Int32).cast(pl.Date)
        return series.cast(dtype) if dtype.is_integer() else series

    def visit_times(self) -> pl.Series:
        """Time of every visit on the input clock (``visits`` row order)."""
        return self.to_clock(self.visits.get_column("time")).alias("visit_time")


# ---------------------------------------------------------------------------------------------- building
def build_cohort(
    visits: Any,
    outcomes: Any = None,
    *,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    codes: str | None = "codes",
    origin: str = "first_visit",
    duplicates: DuplicatePolicy = "error",
    unmatched: UnmatchedPolicy = "error",
    max_visits: int | None = None,
    multi_outcomes: Any = None,
    event_types: int | Sequence[str] | None = None,
    null_values: Sequence[str] | str | None = None,
) -> Cohort:
    """Validate the tables and build a :class:`Cohort` with per-visit targets.

    Parameters
    ----------
    visits, outcomes:
        Visit and outcome tables: Polars or pandas frames, Parquet or CSV files, folders, globs (see
        :func:`ehrseq.data.read_table`; contracts in ``data_specs/``). ``outcomes=None`` gives an
        unlabelled cohort (scoring): every visit is kept and there are no targets.
    numeric, categorical:
        Feature columns; ``None`` infers them (rules in ``data_specs/visits.json``, shown in the report).
    codes:
        The list[str] column of codes per visit (``"codes"``, used when present), or ``None``.
    origin:
        ``"first_visit"`` (default: elapsed time 0 at the first visit), ``"zero"`` (numeric clocks:
        the clock itself) or the name of an outcome-table (or visit-table) column holding each
        patient's origin on the same clock.
    duplicates:
        ``"error"`` or ``"merge"`` duplicate (patient, time) visits (numeric: mean of non-null values;
        categorical: last non-null value in table order; codes: sorted union).
    unmatched:
        ``"error"`` or ``"drop"`` patients present in only one of visits/outcomes.
    max_visits:
        Keep only each patient's most recent ``max_visits`` visits (after dropping visits at or after
        the outcome). Elapsed times and gaps are those of the full history.
    multi_outcomes:
        Long multi-event table (``patient_id, event_name, time, event``); needs ``outcomes``.
    event_types:
        K (int) or the names of the K event types; codes above K are then an error. Default: the
        largest event code present (at least 1).
    null_values:
        Strings read as missing in text files and text columns of numbers (default
        :data:`ehrseq.data.reader.NULL_VALUES`).

    Every dropped row is counted in ``cohort.report``.
    """
    if max_visits is not None and (not isinstance(max_visits, int) or max_visits < 1):
        raise ConfigError(f"max_visits must be a positive int or None, got {max_visits!r}")
    checked = validate(visits, outcomes, multi_outcomes=multi_outcomes, numeric=numeric, categorical=categorical,
                       codes=codes, origin=origin, duplicates=duplicates, unmatched=unmatched,
                       event_types=event_types, null_values=null_values)
    return assemble_cohort(checked, max_visits=max_visits)


def _merge_duplicates(frame: pl.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...],
                      codes: str | None) -> pl.DataFrame:
    """Merge rows with equal (patient_id, time) of a frame sorted stably by them."""
    repeated = same_as_previous("patient_id", "time")
    in_group = frame.select(repeated | repeated.shift(-1).fill_null(False)).to_series()
    if not in_group.any():
        return frame
    frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in numeric if not frame.schema[c].is_float())
    aggregations = [pl.col(c).mean() for c in numeric]
    aggregations += [pl.col(c).drop_nulls().last() for c in categorical]
    if codes is not None:
        union = pl.col(codes).list.explode(keep_nulls=False, empty_as_null=False).unique().sort()
        aggregations.append(union.alias(codes))
    others = [c for c in frame.columns if c not in {"patient_id", "time", *numeric, *categorical, codes}]
    aggregations += [pl.col(c).first() for c in others]
    merged = frame.filter(in_group).group_by("patient_id", "time", maintain_order=True).agg(aggregations)
    merged = merged.select(frame.columns).cast(dict(frame.schema))
    return pl.concat([frame.filter(~in_group), merged]).sort("patient_id", "time", maintain_order=True)


def _columns_with_nan(frame: pl.DataFrame, columns: Sequence[str]) -> list[str]:
    floats = [c for c in columns if frame.schema[c].is_float()]
    if not floats:
        return []
    flags = frame.select(pl.col(c).is_nan().any() for c in floats).row(0)
    return [c for c, flag in zip(floats, flags) if flag]


def _per_patient(frame: pl.DataFrame, column: str, dtype: pl.DataType = pl.Float64) -> np.ndarray:
    return frame.get_column(column).cast(dtype).to_numpy()


def assemble_cohort(checked: ValidatedTables, *, max_visits: int | None = None) -> Cohort:
    """Build the :class:`Cohort` from tables that passed :func:`ehrseq.data.validate`."""
    cols = checked.columns
    visit_origin = checked.origin if checked.origin_table == "visits" else None
    keep = ["patient_id", "time", *cols.numeric, *cols.categorical]
    keep += [c for c in (cols.codes, visit_origin) if c is not None]
    v = checked.visits.select(keep)
    o = checked.outcomes
    m = checked.multi_outcomes
    labelled = o is not None

    visit_rows = RowCount(v.height, 0, {})
    outcome_rows = RowCount(o.height, 0, {}) if labelled else None
    multi_rows = RowCount(m.height, 0, {}) if m is not None else None
    patients_dropped: dict[str, int] = {}
    visit_ids = v.get_column("patient_id")
    if labelled and checked.unmatched == "drop":
        outcome_ids = o.get_column("patient_id")
        has_outcome = visit_ids.is_in(outcome_ids.implode())
        has_visits = outcome_ids.is_in(visit_ids.unique().implode())
        n_without_outcome = visit_ids.filter(~has_outcome).n_unique()
        n_without_visits = int((~has_visits).sum())
        patients_in = visit_ids.n_unique() + n_without_visits
        visit_rows.dropped["no_outcome"] = int((~has_outcome).sum())
        patients_dropped["no_outcome"] = n_without_outcome
        patients_dropped["no_visits"] = n_without_visits
        outcome_rows.dropped["no_visits"] = n_without_visits  # type: ignore[union-attr]
        if visit_rows.dropped["no_outcome"]:
            v = v.filter(has_outcome)
        if n_without_visits:
            o = o.filter(has_visits)
    else:
        patients_in = visit_ids.n_unique()

    nan_columns = _columns_with_nan(v, cols.numeric)
    if nan_columns:
        v = v.with_columns(pl.col(c).fill_nan(None) for c in nan_columns)
    if checked.duplicates == "merge":
        n_before = v.height
        v = _merge_duplicates(v, cols.numeric, cols.categorical, cols.codes)
        visit_rows.dropped["merged_duplicates"] = n_before - v.height

    runs = v.select(pl.col("patient_id").rle()).unnest("patient_id")
    counts = runs.get_column("len").to_numpy().astype(np.int64)
    ids = runs.get_column("value")
    n_patients = len(counts)
    offsets = offsets_from_lengths(counts)
    run = np.repeat(np.arange(n_patients, dtype=np.int64), counts)
    time = v.get_column("time").to_numpy()

    if labelled:
        o = o.sort("patient_id")
        y = _per_patient(o, "time")
    else:
        y = np.full(n_patients, np.inf)
    before_outcome = time < y[run]
    # visits are time-ordered, so the kept ones are a prefix of each patient's run (every run is non-empty)
    kept_counts = np.add.reduceat(before_outcome, offsets[:-1], dtype=np.int64)
    visit_rows.dropped["at_or_after_outcome"] = int(len(time) - kept_counts.sum())
    patient_kept = kept_counts > 0
    if labelled:
        n_no_visit = int((~patient_kept).sum())
        patients_dropped["no_visit_before_outcome"] = n_no_visit
        outcome_rows.dropped["no_visit_before_outcome"] = n_no_visit  # type: ignore[union-attr]

    first_time = time[offsets[:-1]]
    if checked.origin == "first_visit":
        origin = first_time
    elif checked.origin == "zero":
        origin = np.zeros(n_patients)
    elif checked.origin_table == "outcomes":
        origin = _per_patient(o, checked.origin)
    else:
        origin = v.get_column(checked.origin).to_numpy()[offsets[:-1]].astype(np.float64)
    gap = np.empty_like(time)
    gap[1:] = time[1:] - time[:-1]
    gap[offsets[:-1]] = 0.0

    final_counts = kept_counts if max_visits is None else np.minimum(kept_counts, max_visits)
    row_kept = before_outcome
    if max_visits is not None:
        position = ragged_rows(np.zeros(n_patients, dtype=np.int64), counts)
        row_kept = row_kept & (position >= kept_counts[run] - max_visits)
        visit_rows.dropped["truncated_max_visits"] = int((kept_counts - final_counts).sum())
    all_rows = bool(row_kept.all())
    sel = slice(None) if all_rows else row_kept
    new_index = np.cumsum(patient_kept) - 1
    row_patient = run[sel]
    row_time = time[sel]
    derived = {
        "patient_index": new_index[row_patient],
        "time": row_time,
        "elapsed": row_time - origin[row_patient],
        "gap": gap[sel],
    }
    if labelled:
        derived["remaining"] = y[row_patient] - row_time
        upper = (_per_patient(o, "time_upper") if "time_upper" in o.columns else np.full(n_patients, np.nan))
        upper = np.where(np.isnan(upper), np.inf, upper)
        derived["upper"] = upper[row_patient] - row_time if np.isfinite(upper).any() else np.full(len(row_time), np.inf)
    features = [c for c in v.columns if c not in ("patient_id", "time", visit_origin)]
    feature_columns = v.select(features).get_columns() if features else []
    if not all_rows:
        feature_columns = [column.filter(row_kept) for column in feature_columns]
    visits_out = pl.DataFrame([pl.Series(name, values) for name, values in derived.items()] + feature_columns)

    kept_offsets = offsets_from_lengths(final_counts[patient_kept])
    kept_elapsed = derived["elapsed"]
    patient_columns: dict[str, Any] = {
        "patient_id": ids.filter(pl.Series(patient_kept)),
        "origin": origin[patient_kept],
        "n_visits": final_counts[patient_kept],
        "first_visit": kept_elapsed[kept_offsets[:-1]],
        "last_visit": kept_elapsed[kept_offsets[1:] - 1],
    }
    if labelled:
        o_kept = o.filter(pl.Series(patient_kept))
        origin_kept = origin[patient_kept]
        patient_columns["outcome_time"] = y[patient_kept] - origin_kept
        patient_columns["event"] = _per_patient(o_kept, "event", pl.Int64)
        patient_columns["time_upper"] = upper[patient_kept] - origin_kept
        if "entry_time" in o.columns:
            patient_columns["entry_time"] = _per_patient(o_kept, "entry_time") - origin_kept
        patient_columns["weight"] = (_per_patient(o_kept, "weight") if "weight" in o.columns
                                     else np.ones(int(patient_kept.sum())))
    patients = pl.DataFrame(patient_columns)

    event_names: tuple[str, ...] = ()
    if m is not None:
        patients, event_names, used = _multi_events(patients, m)
        multi_rows.n_used = used  # type: ignore[union-attr]
        multi_rows.dropped["patient_dropped"] = m.height - used  # type: ignore[union-attr]

    visit_rows.n_used = visits_out.height
    if outcome_rows is not None:
        outcome_rows.n_used = patients.height
    report = CohortReport(
        visits=visit_rows,
        patients=RowCount(patients_in, patients.height, patients_dropped),
        outcomes=outcome_rows,
        multi_outcomes=multi_rows,
        numeric=cols.numeric,
        categorical=cols.categorical,
        codes=cols.codes,
        ignored_columns=cols.ignored,
        clock=f"{clock_kind(checked.clock_dtype)} ({checked.clock_dtype})",
        origin=checked.origin,
        max_visits=max_visits,
        events=_value_counts(patients, "event") if labelled else {},
        multi_events={name: int(n) for name, n in zip(event_names, _multi_observed(patients))},
        visits_per_patient=_length_stats(patients.get_column("n_visits").to_numpy()),
        feature_rules=dict(cols.reasons),
    )
    return Cohort(
        patients=patients,
        visits=visits_out,
        numeric=cols.numeric,
        categorical=cols.categorical,
        codes=cols.codes,
        clock_dtype=checked.clock_dtype,
        n_event_types=checked.n_event_types or 0,
        event_type_names=checked.event_type_names,
        event_names=event_names,
        report=report,
    )


def _multi_events(patients: pl.DataFrame, multi: pl.DataFrame) -> tuple[pl.DataFrame, tuple[str, ...], int]:
    """Pivot the long multi-event table into ``[P, E]`` array columns of the patient table."""
    names = tuple(sorted(multi.get_column("event_name").cast(pl.String).unique().to_list()))
    index = patients.select("patient_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"))
    rows = multi.with_columns(pl.col("event_name").cast(pl.String)).join(index, on="patient_id", how="inner")
    p = rows.get_column("_row").to_numpy()
    e = rows.get_column("event_name").replace_strict(names, list(range(len(names))),
                                                     return_dtype=pl.Int64).to_numpy()
    origin = patients.get_column("origin").to_numpy()
    shape = (patients.height, len(names))
    times, flags, at_risk = np.zeros(shape), np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    times[p, e] = rows.get_column("time").to_numpy() - origin[p]
    flags[p, e] = rows.get_column("event").cast(pl.Int64).to_numpy() == 1
    at_risk[p, e] = True
    patients = patients.with_columns(
        pl.Series("event_times", times), pl.Series("event_flags", flags), pl.Series("event_at_risk", at_risk)
    )
    return patients, names, rows.height


def _multi_observed(patients: pl.DataFrame) -> np.ndarray:
    if "event_flags" not in patients.columns:
        return np.zeros(0, dtype=np.int64)
    return patients.get_column("event_flags").to_numpy().sum(axis=0)


def _value_counts(patients: pl.DataFrame, column: str) -> dict[int, int]:
    values, counts = np.unique(patients.get_column(column).to_numpy(), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    if lengths.size == 0:
        return {}
    return {"min": float(lengths.min()), "median": float(np.median(lengths)), "mean": float(lengths.mean()),
            "max": float(lengths.max())}
