"""Counting-process input: hand-made tables, a round trip, dtypes, gaps, and the tables' use downstream.

Every broken rule of ``data_specs/counting_process.json`` has a malformed example in test_data_validate.py.
"""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from test_data_validate import intervals as table

from ehrseq import DataError
from ehrseq.data import build_cohort, from_counting_process, load_spec
from ehrseq.errors import ConfigError


def test_hand_made_table_gives_a_visit_at_each_start_and_the_last_stop_and_event():
    visits, outcomes = from_counting_process(table())
    expected_visits = pl.DataFrame({
        "patient_id": [1, 1, 2, 3, 3],
        "time": [0.0, 5.0, 0.0, 2.0, 6.0],
        "x": [3.0, 2.0, None, 4.0, 1.0],
        "sex": ["m", "m", "m", "f", "f"],
    })
    expected_outcomes = pl.DataFrame({
        "patient_id": [1, 2, 3],
        "time": [9.0, 4.0, 8.0],
        "event": [1, 0, 2],
        "entry_time": [0.0, 0.0, 2.0],
    })
    assert_frame_equal(visits, expected_visits)
    assert_frame_equal(outcomes, expected_outcomes)


def test_pandas_input_and_row_order_do_not_change_the_result():
    reference = from_counting_process(table())
    shuffled = table().sample(fraction=1.0, shuffle=True, seed=3)
    for frame in (shuffled, shuffled.to_pandas()):
        for got, want in zip(from_counting_process(frame), reference):
            assert_frame_equal(got, want)


def test_user_named_roles():
    renamed = table().rename({"pid": "id", "time": "start", "time2": "stop", "event": "status"})
    got = from_counting_process(renamed, id="id", start="start", stop="stop", event="status")
    for a, b in zip(got, from_counting_process(table())):
        assert_frame_equal(a, b)


def test_defaults_are_the_contract_column_names():
    import inspect

    signature = inspect.signature(from_counting_process).parameters
    defaults = [signature[role].default for role in ("id", "start", "stop", "event")]
    assert defaults == list(load_spec("counting_process").columns)


def test_dtypes_are_kept():
    frame = pl.DataFrame({
        "pid": pl.Series(["b", "a", "a"], dtype=pl.Categorical),
        "time": [dt.date(2021, 1, 1), dt.date(2020, 1, 1), dt.date(2020, 6, 1)],
        "time2": [dt.date(2021, 3, 1), dt.date(2020, 6, 1), dt.date(2020, 9, 1)],
        "event": [False, False, True],
        "x": pl.Series([1.5, 2.5, None], dtype=pl.Float32),
        "n": pl.Series([1, 2, 3], dtype=pl.Int16),
        "grade": pl.Series(["lo", "hi", "hi"], dtype=pl.Enum(["lo", "hi"])),
        "flag": [True, None, False],
    })
    visits, outcomes = from_counting_process(frame)
    assert dict(visits.schema) == {"patient_id": frame.schema["pid"], "time": pl.Date, "x": pl.Float32,
                                   "n": pl.Int16, "grade": pl.Enum(["lo", "hi"]), "flag": pl.Boolean}
    assert dict(outcomes.schema) == {"patient_id": frame.schema["pid"], "time": pl.Date, "event": pl.Boolean,
                                     "entry_time": pl.Date}
    assert visits["patient_id"].cast(pl.String).to_list() == ["a", "a", "b"]
    assert outcomes["time"].to_list() == [dt.date(2020, 9, 1), dt.date(2021, 3, 1)]
    assert outcomes["event"].to_list() == [True, False]
    build_cohort(visits, outcomes)  # a valid pair


def test_float_event_codes_become_integers_and_non_whole_ones_are_errors():
    _, outcomes = from_counting_process(table(event=[2.0, 1.0, 0.0, 0.0, 0.0]))
    assert outcomes.schema["event"] == pl.Int64 and outcomes["event"].to_list() == [1, 0, 2]
    with pytest.raises(DataError, match="event_code"):
        from_counting_process(table(event=[2.5, 1.0, 0.0, 0.0, 0.0]))


def test_declared_covariates_select_columns_and_integer_categoricals_become_strings():
    frame = table(stage=[2, 1, 1, 1, 3], note=[dt.datetime(2020, 1, 1)] * 5)
    visits, _ = from_counting_process(frame, numeric=["x"], categorical=["stage"])
    assert visits.columns == ["patient_id", "time", "x", "stage"]
    assert visits.schema["stage"] == pl.String and visits["stage"].to_list() == ["1", "1", "1", "3", "2"]
    inferred, _ = from_counting_process(frame)
    assert inferred.columns == ["patient_id", "time", "x", "sex", "stage"]  # a datetime is not a covariate
    assert inferred.schema["stage"] == pl.Int64


def test_gaps_are_errors_unless_bridged():
    gapped = table(time=[7.0, 5.0, 0.0, 0.0, 2.0])  # patient 3: (2, 6] then (7, 8]
    with pytest.raises(DataError, match="gaps='bridge'") as info:
        from_counting_process(gapped)
    assert (info.value.rule, info.value.patient_ids) == ("no_gap", [3])
    visits, outcomes = from_counting_process(gapped, gaps="bridge")
    assert visits.filter(pl.col("patient_id") == 3)["time"].to_list() == [2.0, 7.0]
    assert outcomes.filter(pl.col("patient_id") == 3).row(0) == (3, 8.0, 2, 2.0)
    with pytest.raises(ConfigError, match="gaps"):
        from_counting_process(table(), gaps="fill")


def test_roles_must_name_four_columns():
    with pytest.raises(ConfigError, match="four different columns"):
        from_counting_process(table(), start="time2")


def test_error_names_up_to_five_patients_of_many():
    n = 8
    frame = pl.DataFrame({"pid": np.repeat(np.arange(n), 2), "time": [0.0, 1.0] * n, "time2": [2.0, 3.0] * n,
                          "event": [0] * (2 * n)})
    with pytest.raises(DataError) as info:
        from_counting_process(frame)
    assert info.value.rule == "no_overlap" and info.value.patient_ids == [0, 1, 2, 3, 4]
    assert info.value.n_offending == n


def test_delayed_entry_is_carried_as_entry_time_and_the_origin_decides_the_clock():
    visits, outcomes = from_counting_process(table())
    from_entry = build_cohort(visits, outcomes)
    on_clock = build_cohort(visits, outcomes, origin="zero")
    assert from_entry.patients["outcome_time"].to_list() == [9.0, 4.0, 6.0]
    assert from_entry.patients["entry_time"].to_list() == [0.0, 0.0, 0.0]
    assert on_clock.patients["outcome_time"].to_list() == [9.0, 4.0, 8.0]
    assert on_clock.patients["entry_time"].to_list() == [0.0, 0.0, 2.0]


# ------------------------------------------------------------------------------------------- round trip
@st.composite
def visit_tables(draw):
    """Visits (distinct times per patient, numeric and categorical covariates) and outcomes after the last visit."""
    n_patients = draw(st.integers(1, 6))
    visit_rows, outcome_rows = [], []
    for pid in range(n_patients):
        times = sorted(draw(st.sets(st.integers(0, 50), min_size=1, max_size=5)))
        for t in times:
            visit_rows.append((pid * 7 + 1, float(t), draw(st.one_of(st.none(), st.floats(-5, 5))),
                               draw(st.sampled_from(["a", "b", None]))))
        end = times[-1] + draw(st.integers(1, 20))
        outcome_rows.append((pid * 7 + 1, float(end), draw(st.integers(0, 2)), float(times[0])))
    visits = pl.DataFrame(visit_rows, schema={"patient_id": pl.Int64, "time": pl.Float64, "x": pl.Float64,
                                              "grade": pl.String}, orient="row")
    outcomes = pl.DataFrame(outcome_rows, schema={"patient_id": pl.Int64, "time": pl.Float64, "event": pl.Int64,
                                                  "entry_time": pl.Float64}, orient="row")
    return visits, outcomes


def to_counting_process(visits: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """The (start, stop] table of visits and outcomes, by a loop over patients and visits (the reference)."""
    rows = []
    ends = {r["patient_id"]: r for r in outcomes.iter_rows(named=True)}
    for pid, group in visits.group_by("patient_id", maintain_order=True):
        visit_list = list(group.iter_rows(named=True))
        for k, visit in enumerate(visit_list):
            last = k == len(visit_list) - 1
            stop = ends[pid[0]]["time"] if last else visit_list[k + 1]["time"]
            rows.append({"id": pid[0], "start": visit["time"], "stop": stop,
                         "status": ends[pid[0]]["event"] if last else 0, "x": visit["x"], "grade": visit["grade"]})
    schema = {"id": pl.Int64, "start": pl.Float64, "stop": pl.Float64, "status": pl.Int64, "x": pl.Float64,
              "grade": pl.String}
    return pl.DataFrame(rows[::-1], schema=schema)  # reversed: the converter sorts


@settings(max_examples=40, deadline=None)
@given(visit_tables())
def test_round_trip_visits_and_outcomes_through_the_counting_process(tables):
    visits, outcomes = tables
    intervals = to_counting_process(visits, outcomes)
    for frame in (intervals, intervals.to_pandas()):
        back_visits, back_outcomes = from_counting_process(frame, id="id", start="start", stop="stop", event="status")
        assert_frame_equal(back_visits, visits)
        assert_frame_equal(back_outcomes, outcomes)
