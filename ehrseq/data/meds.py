"""MEDS event streams -> a visit table (and an outcome table) in ehrseq's contracts.

* **Visits.** One visit per distinct (subject, time), or per calendar window (``window="1d"``:
  Polars duration strings, windows aligned with ``Expr.dt.truncate``). A window's visit time is the
  time of its *latest* event, so that a visit never precedes information it contains.
* **Numeric codes** (by default every code with a numeric value in some row) become one float
  column each, named by the code. Within a visit the value is aggregated with ``numeric_agg``:
  ``"last"`` (default: the latest measurement; ties by row order), ``"mean"``, ``"first"``,
  ``"min"`` or ``"max"``. Rows of numeric codes without a value are ignored.
* **Other codes** go to ``codes`` (sorted, distinct within a visit).
* **Static rows** (null time) apply to every visit of the subject: codes are added to each visit's
  ``codes``, numeric values (aggregated with ``numeric_agg``, "last"/"first" in row order) fill
  the column wherever the visit has no timed value.
* **Outcome.** With ``death_code`` (default ``"MEDS_DEATH"``) each subject gets an outcome row: an
  event at the death time, or censoring at the subject's last event time. Death rows are not visit
  codes. Visits at or after the outcome time are dropped (and counted) by
  :func:`ehrseq.data.build_cohort` — with censoring at the last event that includes the last visit.
  A subject whose only timed event is the death has an outcome row but no visit: build the cohort
  with ``unmatched="drop"`` to count and drop such subjects.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import polars as pl

from ehrseq.data.validation import validate_meds
from ehrseq.errors import ConfigError

NumericAgg = Literal["last", "mean", "first", "min", "max"]
_COLUMNS = ("subject_id", "time", "code", "numeric_value")


def _scan(source: Any) -> pl.DataFrame:
    """Read a MEDS source: a DataFrame/LazyFrame, a Parquet file, or a directory of Parquet shards
    (searched recursively), scanned lazily so that only the MEDS columns are read."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            shards = sorted(path.rglob("*.parquet"))
            if not shards:
                raise ConfigError(f"no Parquet shards under {path}")
            lazy = pl.scan_parquet(shards)
        elif path.exists():
            lazy = pl.scan_parquet(path)
        else:
            raise ConfigError(f"MEDS path {path} does not exist")
    elif isinstance(source, pl.LazyFrame):
        lazy = source
    else:
        return source
    names = lazy.collect_schema().names()
    return lazy.select([c for c in names if c in _COLUMNS]).collect()


def _aggregate(agg: NumericAgg) -> pl.Expr:
    value = pl.col("numeric_value").cast(pl.Float64)
    if agg == "mean":
        return value.mean()
    if agg == "min":
        return value.min()
    if agg == "max":
        return value.max()
    ordered = value.sort_by("time", maintain_order=True)
    return ordered.last() if agg == "last" else ordered.first()


def read_meds(
    source: Any,
    *,
    window: str | dt.timedelta | None = None,
    numeric_codes: list[str] | None = None,
    numeric_agg: NumericAgg = "last",
    death_code: str | None = "MEDS_DEATH",
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Convert a MEDS event stream into ``(visits, outcomes)`` (``outcomes`` is ``None`` without a
    ``death_code``); see the module docstring for every rule.

    ``source`` is a DataFrame or LazyFrame, a Parquet file or a directory of Parquet shards. The
    events are validated against ``data_specs/meds.json``. ``visits`` has ``patient_id`` (int64),
    ``time`` (timestamp[us]), one Float64 column per numeric code and ``codes`` (list[str]), sorted
    by patient and time; ``outcomes`` has ``patient_id``, ``time`` and ``event`` (0/1).
    """
    if numeric_agg not in ("last", "mean", "first", "min", "max"):
        raise ConfigError(f"numeric_agg must be last, mean, first, min or max, got {numeric_agg!r}")
    events, numeric = validate_meds(_scan(source), death_code=death_code, numeric_codes=numeric_codes)
    if numeric and "numeric_value" not in events.columns:
        raise ConfigError("numeric_codes given but the events have no numeric_value column")
    events = events.with_columns(pl.col("subject_id").cast(pl.Int64), pl.col("code").cast(pl.String),
                                 pl.col("time").cast(pl.Datetime("us", events.schema["time"].time_zone)))
    is_numeric = pl.col("code").is_in(list(numeric))
    has_value = pl.col("numeric_value").is_not_null() if "numeric_value" in events.columns else pl.lit(False)

    timed = events.filter(pl.col("time").is_not_null())
    static = events.filter(pl.col("time").is_null())
    if death_code is not None:
        is_death = pl.col("code") == death_code
        deaths = timed.filter(is_death).group_by("subject_id").agg(pl.col("time").min().alias("death"))
        timed = timed.filter(~is_death)
        static = static.filter(~is_death)
    if window is None:
        timed = timed.with_columns(pl.col("time").alias("_visit"))
    else:
        try:
            timed = timed.with_columns(pl.col("time").dt.truncate(window).alias("_visit"))
        except pl.exceptions.PolarsError as err:
            raise ConfigError(f"invalid MEDS window {window!r}: {err}") from err
    keys = ["subject_id", "_visit"]

    visits = timed.group_by(keys).agg(
        pl.col("time").max(),
        pl.col("code").filter(~is_numeric).unique().sort().alias("codes"),
    )
    if numeric:
        values = (timed.filter(is_numeric & has_value).group_by([*keys, "code"]).agg(_aggregate(numeric_agg))
                  .pivot(on="code", index=keys, values="numeric_value"))
        visits = visits.join(values, on=keys, how="left")
    visits = visits.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in numeric if c not in visits.columns)

    static_codes = static.filter(~is_numeric).group_by("subject_id").agg(
        pl.col("code").unique().alias("_static_codes"))
    visits = visits.join(static_codes, on="subject_id", how="left").with_columns(
        pl.concat_list(pl.col("codes"), pl.col("_static_codes").fill_null([]))
        .list.unique().list.sort().alias("codes"))
    if numeric and static.height:
        static_values = (static.filter(is_numeric & has_value).group_by(["subject_id", "code"])
                         .agg(_aggregate(numeric_agg))
                         .pivot(on="code", index="subject_id", values="numeric_value"))
        filled = [c for c in numeric if c in static_values.columns]
        static_values = static_values.rename({c: f"_static {c}" for c in filled})
        visits = visits.join(static_values, on="subject_id", how="left").with_columns(
            pl.coalesce(c, f"_static {c}").alias(c) for c in filled)
    visits = (visits.rename({"subject_id": "patient_id"})
              .select("patient_id", "time", *(pl.col(c).cast(pl.Float64) for c in numeric), "codes")
              .sort("patient_id", "time"))

    if death_code is None:
        return visits, None
    last = events.filter(pl.col("time").is_not_null()).group_by("subject_id").agg(pl.col("time").max().alias("last"))
    outcomes = (last.join(deaths, on="subject_id", how="left")
                .select(pl.col("subject_id").alias("patient_id"),
                        pl.coalesce("death", "last").alias("time"),
                        pl.col("death").is_not_null().cast(pl.Int64).alias("event"))
                .sort("patient_id"))
    return visits, outcomes
