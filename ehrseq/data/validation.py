"""Validation of input tables against their contracts in ``data_specs/``.

Every rule id of every contract has exactly one implementation here, registered in :data:`RULES`
(``RULES[table][rule_id]``). Rules run in three passes: ``schema`` rules (dtypes, names; no data
read), ``row`` rules (one table's values) and ``cross`` rules (several tables). Row and cross rules
are Polars expressions marking offending rows; all expressions on one frame are counted in a single
query, and only a failing rule reads the offending patient ids. The first broken rule, in contract
order, raises :class:`ehrseq.DataError` naming the table, column, rule and up to five patient ids.

Clock columns are converted to float days before the row pass (numeric clocks as they are,
datetimes and dates as days since 1970-01-01 UTC), so that columns and tables compare on one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from ehrseq.data.reader import null_values as null_values_in_force
from ehrseq.data.reader import read_table
from ehrseq.data.specs import (
    TABLES,
    ColumnSpec,
    TableSpec,
    clock_kind,
    clock_signature,
    describe_dtype_class,
    dtype_family,
    dtype_in_class,
    load_spec,
)
from ehrseq.errors import ConfigError, DataError, option, warn

#: Dtype of codes in validated visit tables and cohorts: one process-wide string <-> id mapping.
CODES_DTYPE = pl.Categorical(pl.Categories("codes", namespace="ehrseq"))

DuplicatePolicy = Literal["error", "merge"]
UnmatchedPolicy = Literal["error", "drop"]
GapPolicy = Literal["error", "bridge"]
ORIGIN_CHOICES = ("first_visit", "zero")
#: Microseconds per day: datetimes become float days since 1970-01-01 UTC.
US_PER_DAY = 86_400_000_000.0


# ---------------------------------------------------------------------------------------------- inputs
def as_frame(table: Any, name: str, null: Sequence[str] | str | None = None) -> pl.DataFrame:
    """A Polars DataFrame from any table source (:func:`ehrseq.data.reader.read_table`)."""
    return read_table(table, name, null_values=null)


def to_days(column: str, dtype: pl.DataType) -> pl.Expr:
    """Expression converting a clock column to float days (datetimes: days since 1970-01-01 UTC)."""
    family = dtype_family(dtype)
    if family == "datetime":
        return (pl.col(column).dt.epoch("us").cast(pl.Float64) / US_PER_DAY).alias(column)
    if family == "date":
        return pl.col(column).cast(pl.Int32).cast(pl.Float64).alias(column)
    return pl.col(column).cast(pl.Float64).alias(column)


# ---------------------------------------------------------------------------------------------- context
@dataclass
class _Table:
    """A table under validation: its frame and the columns whose contract applies (name -> spec)."""

    name: str
    frame: pl.DataFrame
    spec: TableSpec
    columns: dict[str, ColumnSpec]
    id_column: str = "patient_id"
    datetime_columns: set[str] = field(default_factory=set)

    def present(self, name: str) -> bool:
        return name in self.frame.columns

    def clock_columns(self) -> list[str]:
        return [c for c, s in self.columns.items() if s.dtype == "clock" and self.present(c)]


@dataclass(frozen=True)
class IntervalColumns:
    """The user's names of the four roles of a counting-process table, and the gap policy."""

    id: str
    start: str
    stop: str
    event: str
    gaps: GapPolicy = "error"

    @property
    def roles(self) -> tuple[str, str, str, str]:
        return (self.id, self.start, self.stop, self.event)


@dataclass
class _Context:
    tables: dict[str, _Table]
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    codes: str | None = None
    origin: str | None = None
    origin_table: str | None = None
    duplicates: DuplicatePolicy = "error"
    unmatched: UnmatchedPolicy = "error"
    n_event_types: int | None = None
    death_code: str | None = None
    pivot_names: tuple[str, ...] | None = None
    intervals: IntervalColumns | None = None
    _summary: pl.DataFrame | None = None

    def visit_summary(self) -> pl.DataFrame:
        """Per patient with visits: ``patient_id`` and ``first`` (first visit, float days).

        Read off the visit frame, which is sorted by (patient_id, time) when row rules run."""
        if self._summary is None:
            visits = self.tables["visits"].frame
            self._summary = visits.select("patient_id", pl.col("time").alias("first")).filter(_new_patient())
        return self._summary


@dataclass(frozen=True)
class _Check:
    """Rows of ``frame`` (the table's frame when ``None``) where ``violation`` is True break ``rule``;
    ``unit`` names what a row of ``frame`` is in the message (a per-patient summary counts patients)."""

    rule: str
    column: str | None
    violation: pl.Expr
    message: str
    frame: pl.DataFrame | None = None
    unit: str = "row"


RuleFn = Callable[[_Context, _Table], list[_Check]]

#: ``RULES[table][rule_id]``: the implementation of every rule of every contract.
RULES: dict[str, dict[str, RuleFn]] = {name: {} for name in TABLES}


def _rule(rule_id: str, *tables: str) -> Callable[[RuleFn], RuleFn]:
    def register(fn: RuleFn) -> RuleFn:
        for table in tables:
            RULES[table][rule_id] = fn
        return fn

    return register


def _new_patient() -> pl.Expr:
    """True on the first row of each patient of a frame sorted by patient_id."""
    return (pl.col("patient_id") != pl.col("patient_id").shift()).fill_null(True)


def same_as_previous(*columns: str) -> pl.Expr:
    """True where every column equals its value on the previous row."""
    return pl.all_horizontal(pl.col(c) == pl.col(c).shift() for c in columns).fill_null(False)


def sorted_by_patient_time(frame: pl.DataFrame) -> bool:
    """Whether ``frame`` is sorted by (patient_id, time)."""
    pid, time = pl.col("patient_id"), pl.col("time")
    ordered = (pid > pid.shift()) | ((pid == pid.shift()) & (time >= time.shift()))
    return bool(frame.select(ordered.all()).item())


def _fail(table: _Table, rule: str, message: str, column: str | None = None) -> DataError:
    return DataError(message, table=table.name, column=column, rule=rule)


# ---------------------------------------------------------------------------------------------- schema rules
@_rule("not_empty", "visits", "outcomes", "multi_outcomes", "meds", "counting_process")
def _not_empty(ctx: _Context, t: _Table) -> list[_Check]:
    if t.frame.height == 0:
        raise _fail(t, "not_empty", "the table has no rows")
    return []


@_rule("required_columns", *TABLES)
def _required_columns(ctx: _Context, t: _Table) -> list[_Check]:
    missing = [c for c, s in t.columns.items() if s.required and not t.present(c)]
    if missing:
        raise _fail(t, "required_columns", f"missing column(s) {missing}; the table has {t.frame.columns}",
                    column=missing[0])
    return []


@_rule("column_dtype", *TABLES)
def _column_dtype(ctx: _Context, t: _Table) -> list[_Check]:
    for name, spec in t.columns.items():
        if spec.dtype in ("numeric", "categorical") and name in ctx.numeric + ctx.categorical:
            continue  # features have their own rules (numeric_feature_dtype, categorical_feature_dtype)
        if t.present(name) and not dtype_in_class(t.frame.schema[name], spec.dtype, nullable=spec.nullable):
            raise _fail(t, "column_dtype", f"dtype {t.frame.schema[name]} is not a {spec.dtype} "
                        f"({describe_dtype_class(spec.dtype)})", column=name)
    return []


def _feature_dtype(t: _Table, rule: str, names: tuple[str, ...], dtype_class: str) -> None:
    for name in names:
        dtype = t.frame.schema[name]
        if not dtype_in_class(dtype, dtype_class, nullable=True):
            raise _fail(t, rule, f"declared {dtype_class} but has dtype {dtype} "
                        f"(expected {describe_dtype_class(dtype_class)})", column=name)


@_rule("numeric_feature_dtype", "visits", "counting_process")
def _numeric_feature_dtype(ctx: _Context, t: _Table) -> list[_Check]:
    _feature_dtype(t, "numeric_feature_dtype", ctx.numeric, "numeric")
    return []


@_rule("categorical_feature_dtype", "visits", "counting_process")
def _categorical_feature_dtype(ctx: _Context, t: _Table) -> list[_Check]:
    _feature_dtype(t, "categorical_feature_dtype", ctx.categorical, "categorical")
    return []


@_rule("reserved_name", "visits", "meds")
def _reserved_name(ctx: _Context, t: _Table) -> list[_Check]:
    if t.name == "meds" and ctx.pivot_names is None:
        ctx.pivot_names = _meds_numeric_codes(t.frame, ctx.death_code)
    names = ctx.pivot_names if t.name == "meds" else ctx.numeric + ctx.categorical
    for name in names:
        if name in t.spec.reserved_names or (t.name == "visits" and name == ctx.codes):
            what = "numeric code" if t.name == "meds" else "feature column"
            raise _fail(t, "reserved_name", f"{what} {name!r} uses a reserved name "
                        f"({', '.join(t.spec.reserved_names)}); rename it", column=name)
    return []


@_rule("same_clock", "visits", "outcomes", "multi_outcomes")
def _same_clock(ctx: _Context, t: _Table) -> list[_Check]:
    reference = clock_signature(ctx.tables["visits"].frame.schema["time"])
    for name in t.clock_columns():
        dtype = t.frame.schema[name]
        if dtype == pl.Null:
            continue
        if clock_signature(dtype) != reference:
            raise _fail(t, "same_clock", f"clock {dtype} ({clock_signature(dtype)}) differs from the visit "
                        f"table's time ({reference}); use one kind of clock in every table", column=name)
    return []


@_rule("same_id_dtype", "outcomes", "multi_outcomes")
def _same_id_dtype(ctx: _Context, t: _Table) -> list[_Check]:
    reference = ctx.tables["visits"].frame.schema["patient_id"]
    dtype = t.frame.schema["patient_id"]
    if dtype_family(dtype) != dtype_family(reference):
        raise _fail(t, "same_id_dtype", f"dtype {dtype} is not the same kind of id as the visit table's "
                    f"patient_id ({reference})", column="patient_id")
    return []


# ---------------------------------------------------------------------------------------------- generic row rules
def _columns_with(t: _Table, constraint: str) -> list[str]:
    return [c for c, s in t.columns.items() if constraint in s.constraints and t.present(c)]


@_rule("not_null", "visits", "outcomes", "multi_outcomes", "meds", "predictions", "counting_process")
def _not_null(ctx: _Context, t: _Table) -> list[_Check]:
    return [
        _Check("not_null", c, pl.col(c).is_null(), "null values")
        for c, s in t.columns.items()
        if not s.nullable and t.present(c)
    ]


@_rule("finite", "visits", "outcomes", "multi_outcomes", "meds", "predictions", "counting_process")
def _finite(ctx: _Context, t: _Table) -> list[_Check]:
    return [
        _Check("finite", c, ~pl.col(c).is_finite(), "NaN or infinite values")
        for c in _columns_with(t, "finite")
        if t.frame.schema[c].is_float()
    ]


@_rule("non_negative", "visits", "outcomes", "multi_outcomes", "predictions", "counting_process")
def _non_negative(ctx: _Context, t: _Table) -> list[_Check]:
    return [
        _Check("non_negative", c, pl.col(c) < 0, "negative values (numeric clocks are days >= 0)")
        for c in _columns_with(t, "non_negative")
        if c not in t.datetime_columns
    ]


# ---------------------------------------------------------------------------------------------- visit rules
@_rule("feature_finite", "visits", "counting_process")
def _feature_finite(ctx: _Context, t: _Table) -> list[_Check]:
    return [
        _Check("feature_finite", c, pl.col(c).is_infinite(), "infinite values (use null or NaN for missing)")
        for c in ctx.numeric
        if t.frame.schema[c].is_float()
    ]


@_rule("code_not_null", "visits")
def _code_not_null(ctx: _Context, t: _Table) -> list[_Check]:
    if ctx.codes is None or t.frame.schema[ctx.codes] == pl.Null:
        return []
    elements = t.frame.get_column(ctx.codes).list.explode(keep_nulls=False, empty_as_null=False)
    if elements.null_count() == 0:
        return []  # the row-level expression below is only needed to name the offending patients
    codes = pl.col(ctx.codes)
    return [_Check("code_not_null", ctx.codes, codes.list.drop_nulls().list.len() < codes.list.len(),
                   "null elements inside codes lists (use an empty or null list for no codes)")]


@_rule("origin_constant", "visits")
def _origin_constant(ctx: _Context, t: _Table) -> list[_Check]:
    if ctx.origin_table != "visits":
        return []
    changed = same_as_previous("patient_id") & (pl.col(ctx.origin) != pl.col(ctx.origin).shift())
    return [_Check("origin_constant", ctx.origin, changed, "origin differs between visits of one patient")]


@_rule("unique_visit", "visits")
def _unique_visit(ctx: _Context, t: _Table) -> list[_Check]:
    if ctx.duplicates == "merge":
        return []
    repeated = same_as_previous("patient_id", "time")
    return [_Check("unique_visit", "time", repeated | repeated.shift(-1).fill_null(False),
                   f"duplicate (patient_id, time) visits; pass {option('duplicates', 'merge')} to merge them")]


@_rule("has_outcome", "visits", "multi_outcomes")
def _has_outcome(ctx: _Context, t: _Table) -> list[_Check]:
    if "outcomes" not in ctx.tables or ctx.unmatched == "drop":
        return []
    with_outcome = ctx.tables["outcomes"].frame.get_column("patient_id")
    frame = ctx.visit_summary() if t.name == "visits" else None
    what = "patients with visits" if t.name == "visits" else "rows"
    return [_Check("has_outcome", "patient_id", ~pl.col("patient_id").is_in(with_outcome.implode()),
                   f"{what} without an outcome row; pass {option('unmatched', 'drop')} to drop them", frame=frame,
                   unit="patient" if t.name == "visits" else "row")]


# ---------------------------------------------------------------------------------------------- outcome rules
@_rule("event_code", "outcomes")
def _event_code(ctx: _Context, t: _Table) -> list[_Check]:
    event = pl.col("event")
    dtype = t.frame.schema["event"]
    if dtype == pl.Boolean:
        return []
    bad = event < 0
    message = "negative event codes (0 = censored, 1..K = event type)"
    if dtype.is_float():
        bad = bad | ~event.is_finite() | (event != event.floor())
        message = "event codes that are not whole numbers >= 0 (0 = censored, 1..K = event type)"
    if ctx.n_event_types is not None:
        bad = bad | (event > ctx.n_event_types)
        message = f"event codes outside 0..{ctx.n_event_types} (event_types declares K = {ctx.n_event_types})"
    return [_Check("event_code", "event", bad, message)]


@_rule("unique_patient", "outcomes")
def _unique_patient(ctx: _Context, t: _Table) -> list[_Check]:
    return [_Check("unique_patient", "patient_id", pl.col("patient_id").is_duplicated(),
                   "several rows for one patient")]


@_rule("upper_after_time", "outcomes")
def _upper_after_time(ctx: _Context, t: _Table) -> list[_Check]:
    if not t.present("time_upper"):
        return []
    return [_Check("upper_after_time", "time_upper", pl.col("time_upper") <= pl.col("time"),
                   "time_upper <= time (the event interval (time, time_upper] is empty)")]


@_rule("entry_before_time", "outcomes")
def _entry_before_time(ctx: _Context, t: _Table) -> list[_Check]:
    if not t.present("entry_time"):
        return []
    return [_Check("entry_before_time", "entry_time", pl.col("entry_time") >= pl.col("time"),
                   "entry_time >= time (the patient is never at risk)")]


@_rule("weight_positive", "outcomes")
def _weight_positive(ctx: _Context, t: _Table) -> list[_Check]:
    if not t.present("weight"):
        return []
    weight = pl.col("weight").cast(pl.Float64)
    return [_Check("weight_positive", "weight", ~weight.is_finite() | (weight <= 0),
                   "weights that are not positive and finite")]


@_rule("has_visits", "outcomes")
def _has_visits(ctx: _Context, t: _Table) -> list[_Check]:
    if ctx.unmatched == "drop":
        return []
    with_visits = ctx.visit_summary().get_column("patient_id")
    return [_Check("has_visits", "patient_id", ~pl.col("patient_id").is_in(with_visits.implode()),
                   f"patients without any visit; pass {option('unmatched', 'drop')} to drop them")]


def _with_first_visit(ctx: _Context, t: _Table) -> pl.DataFrame:
    return t.frame.join(ctx.visit_summary(), on="patient_id", how="left", maintain_order="left")


@_rule("after_first_visit", "outcomes", "multi_outcomes")
def _after_first_visit(ctx: _Context, t: _Table) -> list[_Check]:
    frame = _with_first_visit(ctx, t)
    if t.name == "outcomes":
        return [_Check("after_first_visit", "time", pl.col("time") < pl.col("first"),
                       "outcome time before the patient's first visit", frame=frame)]
    return [_Check("after_first_visit", "time", pl.col("time") <= pl.col("first"),
                   "event time at or before the patient's first visit (prevalent: leave the row out)",
                   frame=frame)]


# ---------------------------------------------------------------------------------------------- multi-event rules
@_rule("event_binary", "multi_outcomes")
def _event_binary(ctx: _Context, t: _Table) -> list[_Check]:
    if t.frame.schema["event"] == pl.Boolean:
        return []
    event = pl.col("event")
    return [_Check("event_binary", "event", (event != 0) & (event != 1), "event values other than 0 and 1")]


@_rule("unique_patient_event", "multi_outcomes")
def _unique_patient_event(ctx: _Context, t: _Table) -> list[_Check]:
    return [_Check("unique_patient_event", "event_name", pl.len().over("patient_id", "event_name") > 1,
                   "several rows for one (patient_id, event_name)")]


@_rule("within_follow_up", "multi_outcomes")
def _within_follow_up(ctx: _Context, t: _Table) -> list[_Check]:
    outcome = ctx.tables["outcomes"].frame.select("patient_id", pl.col("time").alias("outcome_time"))
    frame = t.frame.join(outcome, on="patient_id", how="left", maintain_order="left")
    return [_Check("within_follow_up", "time", pl.col("time") > pl.col("outcome_time"),
                   "event time after the patient's outcome time (end of follow-up)", frame=frame)]


# ---------------------------------------------------------------------------------------------- counting-process rules
def _intervals(ctx: _Context) -> IntervalColumns:
    assert ctx.intervals is not None
    return ctx.intervals


@_rule("reserved_name", "counting_process")
def _interval_reserved_name(ctx: _Context, t: _Table) -> list[_Check]:
    roles = _intervals(ctx).roles
    for name in t.frame.columns:
        if name not in roles and name in t.spec.reserved_names:
            raise _fail(t, "reserved_name", f"covariate {name!r} uses a name the visit table reserves "
                        f"({', '.join(t.spec.reserved_names)}); rename it", column=name)
    return []


@_rule("same_clock", "counting_process")
def _interval_same_clock(ctx: _Context, t: _Table) -> list[_Check]:
    c = _intervals(ctx)
    start, stop = t.frame.schema[c.start], t.frame.schema[c.stop]
    if clock_signature(start) != clock_signature(stop):
        raise _fail(t, "same_clock", f"clock {stop} ({clock_signature(stop)}) differs from the start column "
                    f"{c.start!r} ({start}, {clock_signature(start)}); use one kind of clock", column=c.stop)
    return []


@_rule("event_code", "counting_process")
def _interval_event_code(ctx: _Context, t: _Table) -> list[_Check]:
    name = _intervals(ctx).event
    dtype = t.frame.schema[name]
    if dtype == pl.Boolean:
        return []
    event = pl.col(name)
    bad = event < 0
    if dtype.is_float():
        bad = bad | (event != event.floor())
    return [_Check("event_code", name, bad, "event codes that are not whole numbers >= 0 (0 = no event, k = type k)")]


@_rule("start_before_stop", "counting_process")
def _start_before_stop(ctx: _Context, t: _Table) -> list[_Check]:
    c = _intervals(ctx)
    return [_Check("start_before_stop", c.start, pl.col(c.start) >= pl.col(c.stop),
                   f"intervals with {c.start} >= {c.stop} (empty intervals)")]


def _same_patient_as_previous(c: IntervalColumns) -> pl.Expr:
    return (pl.col(c.id) == pl.col(c.id).shift()).fill_null(False)


@_rule("no_overlap", "counting_process")
def _no_overlap(ctx: _Context, t: _Table) -> list[_Check]:
    c = _intervals(ctx)
    overlap = _same_patient_as_previous(c) & (pl.col(c.start) < pl.col(c.stop).shift())
    return [_Check("no_overlap", c.stop, overlap | overlap.shift(-1).fill_null(False),
                   f"overlapping intervals of one patient (a {c.start} before the previous row's {c.stop})")]


@_rule("no_gap", "counting_process")
def _no_gap(ctx: _Context, t: _Table) -> list[_Check]:
    c = _intervals(ctx)
    if c.gaps == "bridge":
        return []
    gap = _same_patient_as_previous(c) & (pl.col(c.start) > pl.col(c.stop).shift())
    return [_Check("no_gap", c.stop, gap | gap.shift(-1).fill_null(False),
                   f"gaps between intervals of one patient (a {c.start} after the previous row's {c.stop}); "
                   "pass gaps='bridge' to take the patient as event-free through a gap")]


@_rule("event_on_last_row", "counting_process")
def _event_on_last_row(ctx: _Context, t: _Table) -> list[_Check]:
    c = _intervals(ctx)
    not_last = (pl.col(c.id) == pl.col(c.id).shift(-1)).fill_null(False)
    return [_Check("event_on_last_row", c.event, not_last & (pl.col(c.event).cast(pl.Float64) != 0),
                   "an event on a row that is not the patient's last interval")]


# ---------------------------------------------------------------------------------------------- MEDS rules
def _meds_numeric_codes(events: pl.DataFrame, death_code: str | None) -> tuple[str, ...]:
    """Codes with a numeric value in at least one row (other than the death code), sorted."""
    if "numeric_value" not in events.columns:
        return ()
    numeric = events.filter(pl.col("numeric_value").is_not_null() & (pl.col("code") != (death_code or "")))
    return tuple(sorted(numeric.get_column("code").cast(pl.String).unique().to_list()))


@_rule("single_death", "meds")
def _single_death(ctx: _Context, t: _Table) -> list[_Check]:
    if ctx.death_code is None:
        return []
    deaths = t.frame.filter(pl.col("code") == ctx.death_code)
    return [_Check("single_death", "time", pl.col("time").n_unique().over("subject_id") > 1,
                   f"several distinct {ctx.death_code!r} times for one subject", frame=deaths)]


# ---------------------------------------------------------------------------------------------- prediction rules
@_rule("horizon_positive", "predictions")
def _horizon_positive(ctx: _Context, t: _Table) -> list[_Check]:
    return [_Check("horizon_positive", "horizon", pl.col("horizon") <= 0, "horizons that are not > 0")]


@_rule("probability", "predictions")
def _probability(ctx: _Context, t: _Table) -> list[_Check]:
    return [
        _Check("probability", c, pl.col(c).is_nan() | (pl.col(c) < 0) | (pl.col(c) > 1),
               "values outside [0, 1]")
        for c in _columns_with(t, "probability")
    ]


@_rule("median_non_negative", "predictions")
def _median_non_negative(ctx: _Context, t: _Table) -> list[_Check]:
    median = pl.col("median_remaining")
    return [_Check("median_non_negative", "median_remaining", median.is_nan() | (median < 0),
                   "NaN or negative median remaining times")]


@_rule("unique_prediction", "predictions")
def _unique_prediction(ctx: _Context, t: _Table) -> list[_Check]:
    key = [c for c in t.spec.key if t.present(c)]
    return [_Check("unique_prediction", "horizon", pl.len().over(key) > 1,
                   f"several rows for one ({', '.join(key)})")]


# ---------------------------------------------------------------------------------------------- engine
def _raise_first(t: _Table, checks: Sequence[_Check]) -> None:
    """Count every check in one query per frame; raise for the first failing one (contract order)."""
    if not checks:
        return
    frames: dict[int, pl.DataFrame] = {}
    for check in checks:
        frame = t.frame if check.frame is None else check.frame
        frames.setdefault(id(frame), frame)
    counts: dict[int, int] = {}
    for key, frame in frames.items():
        members = [(i, c) for i, c in enumerate(checks) if id(t.frame if c.frame is None else c.frame) == key]
        row = frame.select(c.violation.sum().alias(str(i)) for i, c in members).row(0)
        counts.update({i: int(n or 0) for (i, _), n in zip(members, row)})
    for i, check in enumerate(checks):
        if counts[i] == 0:
            continue
        frame = t.frame if check.frame is None else check.frame
        id_column = "subject_id" if "subject_id" in frame.columns else t.id_column
        ids = frame.filter(check.violation).get_column(id_column).unique(maintain_order=True)
        raise DataError(f"{check.message} ({counts[i]} {check.unit}{'s' if counts[i] != 1 else ''})",
                        table=t.name, column=check.column, rule=check.rule, patient_ids=ids.head(5).to_list(),
                        n_offending=ids.len())


def _run(ctx: _Context) -> None:
    order = [name for name in TABLES if name in ctx.tables]
    for kind in ("schema", "row", "cross"):
        for name in order:
            t = ctx.tables[name]
            if kind == "row":
                _normalise(ctx, t)
            checks: list[_Check] = []
            for rule in t.spec.rules.values():
                if rule.kind == kind:
                    checks.extend(RULES[name][rule.id](ctx, t))
            _raise_first(t, checks)


def _normalise(ctx: _Context, t: _Table) -> None:
    """Convert every clock column to float days (recording which were datetimes), patient ids to
    Int64 or String and a codes column to ``List(CODES_DTYPE)``, so that columns and tables compare on
    one scale and codes are hashed once; sort visits by (patient, time) (stable), which the visit
    rules and the cohort rely on."""
    schema = t.frame.schema
    clocks = [c for c in t.clock_columns() if schema[c] != pl.Null]
    t.datetime_columns = {c for c in clocks if clock_kind(schema[c]) == "datetime"}
    exprs = [to_days(c, schema[c]) for c in clocks]
    if t.present("patient_id"):
        exprs.append(pl.col("patient_id").cast(pl.Int64 if schema["patient_id"].is_integer() else pl.String))
    if t.name == "visits" and ctx.codes is not None and schema[ctx.codes] != pl.Null:
        exprs.append(pl.col(ctx.codes).cast(pl.List(CODES_DTYPE)))
    t.frame = t.frame.with_columns(exprs)
    if t.name == "visits" and not sorted_by_patient_time(t.frame):
        t.frame = t.frame.sort("patient_id", "time", maintain_order=True)
    if t.name == "counting_process":
        c = _intervals(ctx)
        t.frame = t.frame.sort(c.id, c.start, c.stop, maintain_order=True)


# ---------------------------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class VisitColumns:
    """The columns of a visit table after declaration or inference.

    ``reasons`` maps each feature to the rule that decided its role (a key of ``inference_rules`` in
    ``data_specs/visits.json``: ``declared``, ``float``, ``integer``, ``text_numbers``, ``string``, ``boolean``);
    ``text_numbers`` are the numeric features stored as text, parsed to Float64 by validation.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    codes: str | None
    ignored: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    text_numbers: tuple[str, ...] = ()


def _as_names(value: Sequence[str] | str | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if len(set(names)) != len(names):
        raise ConfigError(f"{what} lists a column twice: {list(names)}")
    return names


def _number(column: str) -> pl.Expr:
    """Text parsed as a float (null where it is not a number); surrounding blanks are ignored."""
    return pl.col(column).str.strip_chars().cast(pl.Float64, strict=False)


def _marker(column: str, markers: tuple[str, ...]) -> pl.Expr:
    return pl.col(column).is_null() | pl.col(column).str.strip_chars().is_in(list(markers))


#: A text column inferred categorical is reported when at least this share of its values are numbers.
MOSTLY_NUMBERS = 0.8


def _text_numbers(frame: pl.DataFrame, candidates: Sequence[str], markers: tuple[str, ...]) -> tuple[str, ...]:
    """The text columns among ``candidates`` whose values are all numbers or null markers, with at least one
    number and at least one null marker written as text (inference rule ``text_numbers``). Warns about the
    others when at least :data:`MOSTLY_NUMBERS` of their values are numbers (a lab with a stray ``'<5'``)."""
    if not candidates:
        return ()
    exprs = []
    for i, c in enumerate(candidates):
        number = _number(c).is_not_null()
        written = pl.col(c).is_not_null() & ~_marker(c, markers)
        written_marker = pl.col(c).is_not_null() & _marker(c, markers)
        exprs += [number.sum().alias(f"num{i}"), written.sum().alias(f"text{i}"),
                  written_marker.any().alias(f"mark{i}")]
    text = frame.select(pl.col(c).cast(pl.String) for c in candidates)
    row = text.select(exprs).row(0, named=True)
    found = []
    for i, c in enumerate(candidates):
        numbers, values = row[f"num{i}"], row[f"text{i}"]
        if numbers and numbers == values and row[f"mark{i}"]:
            found.append(c)
        elif numbers and numbers < values and numbers >= MOSTLY_NUMBERS * values:
            others = text.filter(pl.col(c).is_not_null() & ~_marker(c, markers) & _number(c).is_null())
            examples = ", ".join(repr(v) for v in others.get_column(c).unique(maintain_order=True).head(3).to_list())
            warn(f"[visits.{c}] {numbers:,} of its {values:,} values are numbers, the others text ({examples}): it is "
                 f"read as categorical; declare it with {option('numeric', [c])} to read it as numbers (after "
                 f"fixing those values or adding them to the null markers), or {option('categorical', [c])}")
    return tuple(found)


def resolve_visit_columns(
    frame: pl.DataFrame | pl.Schema,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    codes: str | None = "codes",
    exclude: Sequence[str] = (),
    null: Sequence[str] | str | None = None,
) -> VisitColumns:
    """Declared feature columns, or inferred (rules in ``data_specs/visits.json``, ``inference``).

    When ``numeric`` is ``None`` every other float/integer column is numeric, and so is every text column
    whose values are numbers or null markers (``null``, default :data:`ehrseq.data.reader.NULL_VALUES`)
    with at least one marker (a numeric column whose missing values were written as text); when
    ``categorical`` is ``None`` every other string/categorical/boolean column is categorical. Declarations
    win over inference. ``exclude`` names columns that are never features (e.g. a visit-table origin
    column). With a schema instead of a frame, text columns are not looked into.
    """
    schema = frame if isinstance(frame, pl.Schema) else frame.schema
    spec = load_spec("visits")
    markers = null_values_in_force(null)
    declared_numeric = _as_names(numeric, "numeric")
    declared_categorical = _as_names(categorical, "categorical")
    both = set(declared_numeric or ()) & set(declared_categorical or ())
    if both:
        raise ConfigError(f"columns declared both numeric and categorical: {sorted(both)}")
    codes_column = codes if codes is not None and (codes != "codes" or codes in schema) else None
    base = {"patient_id", "time", *exclude} | ({codes_column} if codes_column else set())
    reasons = dict.fromkeys((*(declared_numeric or ()), *(declared_categorical or ())), "declared")

    def infer(role: str, taken: set[str]) -> tuple[str, ...]:
        families = spec.inference[role]
        found = tuple(c for c, d in schema.items() if c not in base | taken and dtype_family(d) in families)
        reasons.update({c: dtype_family(schema[c]) for c in found})
        return found

    text_numbers: tuple[str, ...] = ()
    if declared_numeric is None:
        declared_numeric = infer("numeric", set(declared_categorical or ()))
        if not isinstance(frame, pl.Schema):
            taken = base | set(declared_categorical or ())
            text = [c for c, d in schema.items() if c not in taken and dtype_family(d) == "string"]
            found = _text_numbers(frame, text, markers)
            reasons.update(dict.fromkeys(found, "text_numbers"))
            declared_numeric = tuple(c for c in schema if c in {*declared_numeric, *found})
    if declared_categorical is None:
        declared_categorical = infer("categorical", set(declared_numeric))
    text_numbers = tuple(c for c in declared_numeric if c in schema and dtype_family(schema[c]) == "string")
    used = base | set(declared_numeric) | set(declared_categorical)
    ignored = tuple(c for c in schema if c not in used)
    return VisitColumns(declared_numeric, declared_categorical, codes_column, ignored,
                        {c: reasons[c] for c in (*declared_numeric, *declared_categorical)}, text_numbers)


#: Separator of the codes of one visit written as text (a CSV file has no lists): ``"E11;I10"``.
CODE_SEPARATOR = ";"


def split_codes(column: str) -> pl.Expr:
    """A codes column written as text, ``"E11;I10"``, as the list of its codes (blanks around codes and
    empty codes dropped; a null stays null, i.e. no codes)."""
    parts = pl.col(column).cast(pl.String).str.split(CODE_SEPARATOR)
    return parts.list.eval(pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")).alias(column)


def _parse_text_numbers(frame: pl.DataFrame, columns: Sequence[str], markers: tuple[str, ...]) -> pl.DataFrame:
    """Numeric features stored as text, as Float64: null markers become null; any other value that is not a
    number is a :class:`DataError` (rule ``numeric_feature_dtype``) naming the values and the patients."""
    frame = frame.with_columns(pl.col(c).cast(pl.String) for c in columns)
    for column in columns:
        bad = ~_marker(column, markers) & _number(column).is_null()
        offending = frame.filter(bad)
        if offending.height:
            values = offending.get_column(column).unique(maintain_order=True).head(3).to_list()
            ids = offending.get_column("patient_id").unique(maintain_order=True) if "patient_id" in frame.columns \
                else pl.Series([])
            shown = ", ".join(repr(v) for v in values)
            raise DataError(f"numeric column stored as text holds values that are neither numbers nor null markers "
                            f"({shown}; {offending.height} rows); fix them, add them to the null markers, or "
                            f"declare the column categorical", table="visits", column=column,
                            rule="numeric_feature_dtype", patient_ids=ids.head(5).to_list(), n_offending=ids.len())
    return frame.with_columns(pl.when(_marker(c, markers)).then(None).otherwise(_number(c)).alias(c) for c in columns)


def _table(name: str, frame: pl.DataFrame, extra: dict[str, ColumnSpec] | None = None) -> _Table:
    spec = load_spec(name)
    columns = dict(spec.columns)
    columns.update(extra or {})
    return _Table(name, frame, spec, columns, id_column="subject_id" if name == "meds" else "patient_id")


def _declared(spec: TableSpec, role: str, name: str) -> ColumnSpec:
    base = spec.declared[role]
    return ColumnSpec(name, base.dtype, base.required, base.nullable, base.constraints, base.description)


# ---------------------------------------------------------------------------------------------- public API
@dataclass(frozen=True)
class ValidatedTables:
    """Tables that passed every rule, with clock columns converted to float days and the visits
    sorted by (patient_id, time) (stable: duplicates keep their table order).

    ``clock_dtype`` is the visit table's original time dtype (``"days"`` clocks keep their numbers);
    ``n_event_types`` is K (``None`` for unlabelled cohorts).
    """

    visits: pl.DataFrame
    outcomes: pl.DataFrame | None
    multi_outcomes: pl.DataFrame | None
    columns: VisitColumns
    clock_dtype: pl.DataType
    origin: str
    origin_table: str | None
    n_event_types: int | None
    event_type_names: tuple[str, ...] | None
    duplicates: DuplicatePolicy
    unmatched: UnmatchedPolicy


def _event_types(event_types: int | Sequence[str] | None) -> tuple[int | None, tuple[str, ...] | None]:
    if event_types is None:
        return None, None
    if isinstance(event_types, int):
        if event_types < 1:
            raise ConfigError(f"event_types must be >= 1, got {event_types}")
        return event_types, None
    names = tuple(event_types)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"event_types must name distinct event types, got {list(names)}")
    return len(names), names


def _check_policy(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def validate(
    visits: Any,
    outcomes: Any = None,
    *,
    multi_outcomes: Any = None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    codes: str | None = "codes",
    origin: str = "first_visit",
    duplicates: DuplicatePolicy = "error",
    unmatched: UnmatchedPolicy = "error",
    event_types: int | Sequence[str] | None = None,
    null_values: Sequence[str] | str | None = None,
) -> ValidatedTables:
    """Check a visit table (and optionally its outcome and multi-event tables) against every rule.

    Parameters mirror :func:`ehrseq.data.build_cohort`. Tables are any source of
    :func:`ehrseq.data.read_table` (frames, files, folders, globs); ``null_values`` are the strings read as
    missing (default :data:`ehrseq.data.reader.NULL_VALUES`). ``origin`` is ``"first_visit"``, ``"zero"``
    (numeric clocks only) or the name of a column of the outcome table (or, when the outcome table
    lacks it, of the visit table). ``event_types`` declares K (an int) or names the K event types;
    event codes above K are then an error. Raises :class:`ehrseq.DataError` for the first broken rule;
    warns (:class:`ehrseq.errors.DataWarning`) when the event codes look like R's ``Surv`` coding.
    """
    _check_policy(duplicates, "duplicates", ("error", "merge"))
    _check_policy(unmatched, "unmatched", ("error", "drop"))
    if multi_outcomes is not None and outcomes is None:
        raise ConfigError("multi_outcomes needs an outcome table (its time ends follow-up)")
    n_types, type_names = _event_types(event_types)
    markers = null_values_in_force(null_values)
    visit_frame = as_frame(visits, "visits", markers)
    outcome_frame = None if outcomes is None else as_frame(outcomes, "outcomes", markers)
    multi_frame = None if multi_outcomes is None else as_frame(multi_outcomes, "multi_outcomes", markers)

    origin_table = None
    if origin not in ORIGIN_CHOICES:
        if outcome_frame is not None and origin in outcome_frame.columns:
            origin_table = "outcomes"
        elif origin in visit_frame.columns or outcome_frame is None:
            origin_table = "visits"
        else:
            origin_table = "outcomes"
    exclude = (origin,) if origin_table == "visits" else ()
    columns = resolve_visit_columns(visit_frame, numeric, categorical, codes, exclude, markers)
    if columns.text_numbers:
        visit_frame = _parse_text_numbers(visit_frame, columns.text_numbers, markers)

    clock_dtype = visit_frame.schema.get("time", pl.Float64)
    if origin == "zero" and clock_kind(clock_dtype) == "datetime":
        raise ConfigError("origin='zero' needs a numeric (days) clock; with datetimes use 'first_visit' or "
                          "an origin column")

    visit_spec = load_spec("visits")
    extra = {name: _declared(visit_spec, "numeric", name) for name in columns.numeric}
    extra.update({name: _declared(visit_spec, "categorical", name) for name in columns.categorical})
    # the default name "codes" is used when present; any other name is required
    codes_column = columns.codes if codes == "codes" else codes
    if codes_column is not None:
        extra[codes_column] = _declared(visit_spec, "codes", codes_column)
        if codes_column in visit_frame.columns and dtype_family(visit_frame.schema[codes_column]) == "string":
            visit_frame = visit_frame.with_columns(split_codes(codes_column))
    if origin_table == "visits":
        extra[origin] = _declared(visit_spec, "origin", origin)
    tables = {"visits": _table("visits", visit_frame, extra)}
    if outcome_frame is not None:
        outcome_extra = {}
        if origin_table == "outcomes":
            outcome_extra[origin] = _declared(load_spec("outcomes"), "origin", origin)
        tables["outcomes"] = _table("outcomes", outcome_frame, outcome_extra)
    if multi_frame is not None:
        tables["multi_outcomes"] = _table("multi_outcomes", multi_frame)

    ctx = _Context(tables, numeric=columns.numeric, categorical=columns.categorical, codes=codes_column,
                   origin=origin if origin_table else None, origin_table=origin_table,
                   duplicates=duplicates, unmatched=unmatched, n_event_types=n_types)
    _run(ctx)

    outcome_checked = tables["outcomes"].frame if "outcomes" in tables else None
    if outcome_checked is not None and outcome_checked.schema["event"].is_float():
        outcome_checked = outcome_checked.with_columns(pl.col("event").cast(pl.Int64))
    if outcome_checked is not None:
        _warn_event_coding(outcome_checked)
    if outcome_checked is not None and n_types is None:
        largest = outcome_checked.get_column("event").cast(pl.Int64).max()
        n_types = max(1, int(largest or 0))
    return ValidatedTables(
        visits=tables["visits"].frame,
        outcomes=outcome_checked,
        multi_outcomes=tables["multi_outcomes"].frame if "multi_outcomes" in tables else None,
        columns=columns,
        clock_dtype=clock_dtype,
        origin=origin,
        origin_table=origin_table,
        n_event_types=n_types,
        event_type_names=type_names,
        duplicates=duplicates,
        unmatched=unmatched,
    )


def event_codes(outcomes: pl.DataFrame) -> list[int]:
    """The distinct event codes of a validated outcome table, sorted (booleans as 0/1)."""
    return sorted(int(v) for v in outcomes.get_column("event").cast(pl.Int64).unique().to_list())


def _warn_event_coding(outcomes: pl.DataFrame) -> None:
    """Warn about R's ``Surv`` coding (1 = censored, 2 = event): codes {1, 2} and nobody censored."""
    if outcomes.schema["event"] == pl.Boolean:
        return
    codes = event_codes(outcomes)
    if codes == [1, 2]:
        counts = outcomes.get_column("event").value_counts(sort=True)
        summary = ", ".join(f"{code}: {n:,}" for code, n in sorted(counts.iter_rows()))
        warn(f"the outcome table has no censored patient (event 0) and event codes 1 and 2 ({summary}); in "
             "ehrseq 0 = censored and 1..K = event types, while R's Surv() codes 1 = censored and 2 = event. "
             "If that is the coding here, recode it (event - 1) before fitting")


def _validate_single(name: str, table: Any, **options: Any) -> tuple[pl.DataFrame, _Context]:
    frame = as_frame(table, name)
    ctx = _Context({name: _table(name, frame)}, **options)
    _run(ctx)
    return frame, ctx


def validate_meds(events: Any, *, death_code: str | None = "MEDS_DEATH",
                  numeric_codes: Sequence[str] | None = None) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Check a MEDS event stream (``data_specs/meds.json``).

    Returns the events as a Polars DataFrame and the numeric codes that become visit columns:
    ``numeric_codes`` if given, else every code with a numeric value in some row (except the death
    code).
    """
    names = None if numeric_codes is None else tuple(numeric_codes)
    frame, ctx = _validate_single("meds", events, death_code=death_code, pivot_names=names)
    return frame, ctx.pivot_names or ()


def validate_counting_process(
    table: Any,
    columns: IntervalColumns,
    *,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, VisitColumns]:
    """Check a counting-process table (``data_specs/counting_process.json``) whose id, start, stop and
    event columns are named by ``columns`` (with the gap policy).

    Returns the table as a Polars DataFrame (rows in their original order) and its covariates:
    declared (``numeric``, ``categorical``) or inferred from dtypes as in the visit table, every column
    but the four roles taking part. Raises :class:`ehrseq.DataError` for the first broken rule.
    """
    _check_policy(columns.gaps, "gaps", ("error", "bridge"))
    if len(set(columns.roles)) != 4:
        raise ConfigError(f"id, start, stop and event must name four different columns, got {list(columns.roles)}")
    frame = as_frame(table, "counting_process")
    spec = load_spec("counting_process")
    # the contract names each role by its default column; the table's own names replace them
    defaults = dict(zip(spec.columns, columns.roles))
    renamed = {defaults[c]: ColumnSpec(defaults[c], s.dtype, s.required, s.nullable, s.constraints, s.description)
               for c, s in spec.columns.items()}
    features = resolve_visit_columns(frame.schema, numeric, categorical, codes=None, exclude=columns.roles)
    renamed.update({name: _declared(spec, "numeric", name) for name in features.numeric})
    renamed.update({name: _declared(spec, "categorical", name) for name in features.categorical})
    t = _Table("counting_process", frame, spec, renamed, id_column=columns.id)
    _run(_Context({"counting_process": t}, numeric=features.numeric, categorical=features.categorical,
                  intervals=columns))
    return frame, features


def validate_predictions(predictions: Any) -> pl.DataFrame:
    """Check a prediction output table (``data_specs/predictions.json``); return it unchanged."""
    return _validate_single("predictions", predictions)[0]
