"""MEDS event streams -> visit and outcome tables: visits, windows, pivoting, static rows, death outcome."""

import datetime as dt

import polars as pl
import pytest

from ehrseq import DataError
from ehrseq.data import build_cohort, read_meds
from ehrseq.errors import ConfigError

D = dt.datetime


def _events() -> pl.DataFrame:
    rows = [
        (1, D(2020, 1, 1, 8), "LAB//HDL", 1.0),
        (1, D(2020, 1, 1, 8), "DX//E11", None),
        (1, D(2020, 1, 1, 8), "DX//E11", None),
        (1, D(2020, 1, 1, 20), "LAB//HDL", 3.0),
        (1, D(2020, 1, 1, 20), "LAB//SBP", 140.0),
        (1, D(2020, 1, 1, 20), "RX//A", None),
        (1, D(2020, 1, 3), "LAB//HDL", None),
        (1, D(2020, 1, 3), "DX//I10", None),
        (1, D(2020, 3, 1), "MEDS_DEATH", None),
        (1, None, "SEX//F", None),
        (1, None, "HEIGHT", 170.0),
        (2, D(2021, 5, 1), "LAB//SBP", 120.0),
        (2, D(2021, 6, 1), "RX//B", None),
        (2, None, "SEX//M", None),
    ]
    return pl.DataFrame(rows, orient="row", schema={"subject_id": pl.Int64, "time": pl.Datetime("us"),
                                                     "code": pl.String, "numeric_value": pl.Float32})


def test_one_visit_per_subject_and_time_with_pivoted_numeric_codes():
    visits, outcomes = read_meds(_events())
    assert visits.columns == ["patient_id", "time", "HEIGHT", "LAB//HDL", "LAB//SBP", "codes"]
    assert visits.select("patient_id", "time").rows() == [
        (1, D(2020, 1, 1, 8)), (1, D(2020, 1, 1, 20)), (1, D(2020, 1, 3)), (2, D(2021, 5, 1)), (2, D(2021, 6, 1))]
    assert visits["LAB//HDL"].to_list() == [1.0, 3.0, None, None, None]
    assert visits["LAB//SBP"].to_list() == [None, 140.0, None, 120.0, None]
    assert visits["HEIGHT"].to_list() == [170.0, 170.0, 170.0, None, None]  # static value on every visit
    assert visits["codes"].to_list() == [
        ["DX//E11", "SEX//F"], ["RX//A", "SEX//F"], ["DX//I10", "SEX//F"], ["SEX//M"], ["RX//B", "SEX//M"]]
    assert outcomes.rows() == [(1, D(2020, 3, 1), 1), (2, D(2021, 6, 1), 0)]


def test_windows_aggregate_to_the_latest_event_and_numeric_agg_is_configurable():
    visits, _ = read_meds(_events(), window="1d")
    assert visits.filter(pl.col("patient_id") == 1).select("time", "LAB//HDL", "LAB//SBP").rows() == [
        (D(2020, 1, 1, 20), 3.0, 140.0), (D(2020, 1, 3), None, None)]
    assert visits["codes"][0].to_list() == ["DX//E11", "RX//A", "SEX//F"]
    mean, _ = read_meds(_events(), window="1d", numeric_agg="mean")
    assert mean["LAB//HDL"][0] == 2.0
    first, _ = read_meds(_events(), window="1d", numeric_agg="first")
    assert first["LAB//HDL"][0] == 1.0
    monthly, _ = read_meds(_events(), window="1mo")
    assert monthly.filter(pl.col("patient_id") == 1).height == 1


def test_declared_numeric_codes_and_no_death_code():
    visits, outcomes = read_meds(_events(), numeric_codes=["LAB//SBP"], death_code=None)
    assert outcomes is None
    assert visits.columns == ["patient_id", "time", "LAB//SBP", "codes"]
    assert visits["codes"][0].to_list() == ["DX//E11", "HEIGHT", "LAB//HDL", "SEX//F"]
    assert "MEDS_DEATH" in {c for codes in visits["codes"].to_list() for c in codes}


def test_parquet_shards_are_read_lazily_from_a_directory(tmp_path):
    events = _events().with_columns(pl.lit("extra").alias("text_value"))
    (tmp_path / "data" / "train").mkdir(parents=True)
    events.filter(pl.col("subject_id") == 1).write_parquet(tmp_path / "data" / "train" / "0.parquet")
    events.filter(pl.col("subject_id") == 2).write_parquet(tmp_path / "data" / "1.parquet")
    from_dir = read_meds(tmp_path)
    from_frame = read_meds(_events())
    assert from_dir[0].equals(from_frame[0]) and from_dir[1].equals(from_frame[1])
    single = read_meds(tmp_path / "data" / "1.parquet")
    assert single[0]["patient_id"].unique().to_list() == [2]
    with pytest.raises(ConfigError, match="does not exist"):
        read_meds(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no Parquet"):
        (tmp_path / "empty").mkdir()
        read_meds(tmp_path / "empty")


def test_converted_tables_build_a_cohort_with_the_death_outcome():
    visits, outcomes = read_meds(_events())
    cohort = build_cohort(visits, outcomes)
    assert cohort.patients["event"].to_list() == [1, 0]
    assert cohort.patients["outcome_time"].to_list() == pytest.approx([60 - 8 / 24, 31.0])
    # subject 2 is censored at its last event, a visit: that visit is dropped as at/after the outcome
    assert cohort.report.visits.dropped["at_or_after_outcome"] == 1
    assert cohort.visits["remaining"].to_list()[:3] == pytest.approx([60 - 8 / 24, 60 - 20 / 24, 58.0])


def test_invalid_streams_and_options():
    with pytest.raises(DataError) as info:
        read_meds(_events().with_columns(pl.col("subject_id").cast(pl.String)))
    assert (info.value.table, info.value.rule, info.value.column) == ("meds", "column_dtype", "subject_id")
    twice = _events().with_columns(
        pl.when(pl.col("code") == "RX//B").then(pl.lit("MEDS_DEATH")).otherwise(pl.col("code")).alias("code"))
    read_meds(twice)  # one death row per subject
    double = pl.concat([_events(), _events().filter(pl.col("code") == "MEDS_DEATH").with_columns(
        pl.col("time") + pl.duration(days=1))])
    with pytest.raises(DataError, match="single_death"):
        read_meds(double)
    with pytest.raises(ConfigError, match="window"):
        read_meds(_events(), window="soon")
    with pytest.raises(ConfigError, match="numeric_agg"):
        read_meds(_events(), numeric_agg="median")
