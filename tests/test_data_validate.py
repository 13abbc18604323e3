"""Validation: one malformed table per rule of every contract, checked for table, column, rule and ids."""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl
import pytest

from ehrseq import DataError
from ehrseq.data import from_counting_process, validate, validate_meds, validate_predictions
from ehrseq.data.specs import TABLES, load_spec
from ehrseq.errors import ConfigError

NAN, INF = float("nan"), float("inf")


def visits(**changes: Any) -> pl.DataFrame:
    base = {
        "patient_id": [1, 1, 2, 2, 3],
        "time": [0.0, 10.0, 0.0, 5.0, 0.0],
        "x": [1.0, None, 2.0, 3.0, NAN],
        "sex": ["m", "m", "f", "f", None],
        "codes": [["a"], [], None, ["b"], ["a", "c"]],
    }
    base.update(changes)
    return pl.DataFrame(base)


def outcomes(**changes: Any) -> pl.DataFrame:
    base = {"patient_id": [1, 2, 3], "time": [20.0, 30.0, 3.0], "event": [1, 0, 2]}
    base.update(changes)
    return pl.DataFrame(base)


def multi(**changes: Any) -> pl.DataFrame:
    base = {"patient_id": [1, 2, 2], "event_name": ["mi", "mi", "stroke"], "time": [15.0, 30.0, 12.0],
            "event": [1, 0, 1]}
    base.update(changes)
    return pl.DataFrame(base)


def meds(**changes: Any) -> pl.DataFrame:
    base = {
        "subject_id": [1, 1, 1, 2],
        "time": [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1), dt.datetime(2020, 2, 1), None],
        "code": ["LAB//A", "DX//B", "MEDS_DEATH", "SEX//F"],
        "numeric_value": [1.5, None, None, None],
    }
    base.update(changes)
    return pl.DataFrame(base, schema_overrides={"numeric_value": pl.Float32})


def predictions(**changes: Any) -> pl.DataFrame:
    base = {
        "patient_id": [1, 1, 2],
        "visit_time": [0.0, 0.0, 5.0],
        "horizon": [30.0, 365.0, 30.0],
        "risk": [0.1, 0.4, 0.2],
        "survival": [0.9, 0.6, 0.8],
        "median_remaining": [500.0, 500.0, INF],
        "extrapolated": [False, False, False],
        "median_extrapolated": [False, False, True],
        "model_id": ["m"] * 3,
        "model_version": ["1"] * 3,
    }
    base.update(changes)
    return pl.DataFrame(base)


def intervals(**changes: Any) -> pl.DataFrame:
    """Counting-process rows in SurvSet's column names: patient 1 (0, 5] (5, 9] event, patient 2 (0, 4]
    censored, patient 3 (2, 6] (6, 8] event 2, in shuffled order."""
    base = {
        "pid": [3, 1, 2, 1, 3],
        "time": [6.0, 5.0, 0.0, 0.0, 2.0],
        "time2": [8.0, 9.0, 4.0, 5.0, 6.0],
        "event": [2, 1, 0, 0, 0],
        "x": [1.0, 2.0, None, 3.0, 4.0],
        "sex": ["f", "m", "m", "m", "f"],
    }
    base.update(changes)
    return pl.DataFrame(base)


def _intervals(table=None, **kw) -> Callable[[], Any]:
    return lambda: from_counting_process(intervals() if table is None else table, **kw)


@dataclass
class Case:
    """A malformed input and the error it must raise."""

    table: str
    rule: str
    column: str | None
    ids: list[Any]
    run: Callable[[], Any]
    label: str = ""
    extra: dict = field(default_factory=dict)


def _cohort(v=None, o=None, m=None, **kw) -> Callable[[], Any]:
    return lambda: validate(visits() if v is None else v, outcomes() if o is None else o, multi_outcomes=m, **kw)


CASES = [
    # ------------------------------------------------------------------ visits
    Case("visits", "not_empty", None, [], _cohort(v=visits().head(0))),
    Case("visits", "required_columns", "time", [], _cohort(v=visits().drop("time"))),
    Case("visits", "required_columns", "nope", [], _cohort(numeric=["x", "nope"]), "declared feature"),
    Case("visits", "required_columns", "dx", [], _cohort(codes="dx"), "named codes column"),
    Case("visits", "column_dtype", "patient_id", [], _cohort(v=visits(patient_id=[1.0, 1.0, 2.0, 2.0, 3.0]))),
    Case("visits", "column_dtype", "time", [], _cohort(v=visits(time=["0", "1", "0", "5", "0"]))),
    Case("visits", "column_dtype", "codes", [], _cohort(v=visits(codes=[1, 2, 3, 4, 5]))),
    Case("visits", "numeric_feature_dtype", "sex", [1, 2], _cohort(numeric=["x", "sex"]), "text not numbers"),
    Case("visits", "numeric_feature_dtype", "seen", [],
         _cohort(v=visits().with_columns(pl.lit(dt.date(2020, 1, 1)).alias("seen")), numeric=["x", "seen"])),
    Case("visits", "categorical_feature_dtype", "when", [],
         _cohort(v=visits(when=[dt.datetime(2020, 1, 1)] * 5), categorical=["sex", "when"])),
    Case("visits", "reserved_name", "gap", [], _cohort(v=visits(gap=[1.0] * 5))),
    Case("visits", "same_clock", "index", [],
         _cohort(v=visits(index=[dt.datetime(2020, 1, 1)] * 5), origin="index")),
    Case("visits", "not_null", "time", [2], _cohort(v=visits(time=[0.0, 10.0, None, 5.0, 0.0]))),
    Case("visits", "not_null", "patient_id", [None], _cohort(v=visits(patient_id=[1, 1, None, 2, 3])), "null id"),
    Case("visits", "finite", "time", [2], _cohort(v=visits(time=[0.0, 10.0, 0.0, NAN, 0.0]))),
    Case("visits", "non_negative", "time", [1], _cohort(v=visits(time=[-1.0, 10.0, 0.0, 5.0, 0.0]))),
    Case("visits", "feature_finite", "x", [2, 3], _cohort(v=visits(x=[1.0, 2.0, INF, 1.0, -INF]))),
    Case("visits", "code_not_null", "codes", [3], _cohort(v=visits(codes=[["a"], [], None, ["b"], ["a", None]]))),
    Case("visits", "origin_constant", "index", [2],
         lambda: validate(visits(index=[1.0, 1.0, 0.0, 2.0, 0.0]), None, origin="index")),
    Case("visits", "unique_visit", "time", [2], _cohort(v=visits(time=[0.0, 10.0, 5.0, 5.0, 0.0]))),
    Case("visits", "has_outcome", "patient_id", [2], _cohort(o=outcomes().filter(pl.col("patient_id") != 2))),
    # ------------------------------------------------------------------ outcomes
    Case("outcomes", "not_empty", None, [], _cohort(o=outcomes().head(0))),
    Case("outcomes", "required_columns", "event", [], _cohort(o=outcomes().drop("event"))),
    Case("outcomes", "required_columns", "index_date", [], _cohort(origin="index_date"), "origin column"),
    Case("outcomes", "column_dtype", "event", [], _cohort(o=outcomes(event=["1", "0", "2"]))),
    Case("outcomes", "same_clock", "time", [], _cohort(o=outcomes(time=[dt.date(2020, 1, 1)] * 3))),
    Case("outcomes", "same_id_dtype", "patient_id", [], _cohort(o=outcomes(patient_id=["1", "2", "3"]))),
    Case("outcomes", "not_null", "event", [2], _cohort(o=outcomes(event=[1, None, 2]))),
    Case("outcomes", "finite", "time", [3], _cohort(o=outcomes(time=[20.0, 30.0, INF]))),
    Case("outcomes", "non_negative", "time_upper", [1], _cohort(o=outcomes(time_upper=[-1.0, None, None]))),
    Case("outcomes", "event_code", "event", [2], _cohort(o=outcomes(event=[1, -1, 0]))),
    Case("outcomes", "event_code", "event", [2], _cohort(o=outcomes(event=[1.0, 0.5, 0.0])), "float not whole"),
    Case("outcomes", "event_code", "event", [3], _cohort(event_types=1), "above declared K"),
    Case("outcomes", "unique_patient", "patient_id", [2],
         _cohort(o=pl.concat([outcomes(), outcomes().filter(pl.col("patient_id") == 2)]))),
    Case("outcomes", "upper_after_time", "time_upper", [1], _cohort(o=outcomes(time_upper=[20.0, None, 4.0]))),
    Case("outcomes", "entry_before_time", "entry_time", [3], _cohort(o=outcomes(entry_time=[0.0, 1.0, 3.0]))),
    Case("outcomes", "weight_positive", "weight", [1, 3], _cohort(o=outcomes(weight=[0.0, 1.0, NAN]))),
    Case("outcomes", "has_visits", "patient_id", [9],
         _cohort(o=pl.concat([outcomes(), outcomes(patient_id=[9], time=[1.0], event=[0])]))),
    Case("outcomes", "after_first_visit", "time", [3],
         _cohort(v=visits(time=[0.0, 10.0, 0.0, 5.0, 4.0]), o=outcomes(time=[20.0, 30.0, 3.0]))),
    # ------------------------------------------------------------------ multi-event
    Case("multi_outcomes", "not_empty", None, [], _cohort(m=multi().head(0))),
    Case("multi_outcomes", "required_columns", "event_name", [], _cohort(m=multi().drop("event_name"))),
    Case("multi_outcomes", "column_dtype", "event_name", [], _cohort(m=multi(event_name=[1, 1, 2]))),
    Case("multi_outcomes", "same_clock", "time", [], _cohort(m=multi(time=[dt.datetime(2020, 1, 1)] * 3))),
    Case("multi_outcomes", "same_id_dtype", "patient_id", [], _cohort(m=multi(patient_id=["1", "2", "2"]))),
    Case("multi_outcomes", "not_null", "event", [2], _cohort(m=multi(event=[1, None, 1]))),
    Case("multi_outcomes", "finite", "time", [1], _cohort(m=multi(time=[NAN, 30.0, 12.0]))),
    Case("multi_outcomes", "non_negative", "time", [2], _cohort(m=multi(time=[15.0, -2.0, 12.0]))),
    Case("multi_outcomes", "event_binary", "event", [2], _cohort(m=multi(event=[1, 2, 1]))),
    Case("multi_outcomes", "unique_patient_event", "event_name", [2], _cohort(m=multi(event_name=["mi", "mi", "mi"]))),
    Case("multi_outcomes", "has_outcome", "patient_id", [8], _cohort(m=multi(patient_id=[1, 2, 8]))),
    Case("multi_outcomes", "after_first_visit", "time", [2], _cohort(m=multi(time=[15.0, 30.0, 0.0]))),
    Case("multi_outcomes", "within_follow_up", "time", [1], _cohort(m=multi(time=[25.0, 30.0, 12.0]))),
    # ------------------------------------------------------------------ MEDS
    Case("meds", "not_empty", None, [], lambda: validate_meds(meds().head(0))),
    Case("meds", "required_columns", "code", [], lambda: validate_meds(meds().drop("code"))),
    Case("meds", "column_dtype", "subject_id", [], lambda: validate_meds(meds(subject_id=["1", "1", "1", "2"]))),
    Case("meds", "reserved_name", "time", [],
         lambda: validate_meds(meds(code=["time", "DX//B", "MEDS_DEATH", "SEX//F"]))),
    Case("meds", "not_null", "code", [2], lambda: validate_meds(meds(code=["LAB//A", "DX//B", "MEDS_DEATH", None]))),
    Case("meds", "finite", "numeric_value", [1], lambda: validate_meds(meds(numeric_value=[NAN, None, None, None]))),
    Case("meds", "single_death", "time", [1],
         lambda: validate_meds(meds(code=["MEDS_DEATH", "DX//B", "MEDS_DEATH", "SEX//F"]))),
    # ------------------------------------------------------------------ predictions
    Case("predictions", "required_columns", "risk", [], lambda: validate_predictions(predictions().drop("risk"))),
    Case("predictions", "column_dtype", "model_id", [], lambda: validate_predictions(predictions(model_id=[1, 1, 1]))),
    Case("predictions", "column_dtype", "extrapolated", [],
         lambda: validate_predictions(predictions(extrapolated=["no", "no", "yes"])), "flag as text"),
    Case("predictions", "not_null", "survival", [2],
         lambda: validate_predictions(predictions(survival=[0.9, 0.6, None]))),
    Case("predictions", "finite", "horizon", [2],
         lambda: validate_predictions(predictions(horizon=[30.0, 365.0, INF]))),
    Case("predictions", "non_negative", "visit_time", [2],
         lambda: validate_predictions(predictions(visit_time=[0.0, 0.0, -5.0]))),
    Case("predictions", "horizon_positive", "horizon", [1],
         lambda: validate_predictions(predictions(horizon=[0.0, 365.0, 30.0]))),
    Case("predictions", "probability", "risk", [1], lambda: validate_predictions(predictions(risk=[1.1, 0.4, 0.2]))),
    Case("predictions", "median_non_negative", "median_remaining", [2],
         lambda: validate_predictions(predictions(median_remaining=[500.0, 500.0, NAN]))),
    Case("predictions", "unique_prediction", "horizon", [1],
         lambda: validate_predictions(predictions(horizon=[30.0, 30.0, 30.0]))),
]


CASES += [
    # ------------------------------------------------------------------ counting process (user-named columns)
    Case("counting_process", "not_empty", None, [], _intervals(intervals().head(0))),
    Case("counting_process", "required_columns", "time2", [], _intervals(intervals().drop("time2"))),
    Case("counting_process", "required_columns", "stop", [], _intervals(stop="stop"), "renamed role"),
    Case("counting_process", "column_dtype", "time", [],
         _intervals(intervals(time=["6", "5", "0", "0", "2"]))),
    Case("counting_process", "column_dtype", "event", [],
         _intervals(intervals(event=["d", "d", "c", "c", "c"]))),
    Case("counting_process", "numeric_feature_dtype", "sex", [], _intervals(numeric=["x", "sex"])),
    Case("counting_process", "categorical_feature_dtype", "when", [],
         _intervals(intervals(when=[dt.date(2020, 1, 1)] * 5), categorical=["sex", "when"])),
    Case("counting_process", "reserved_name", "time", [],
         _intervals(intervals().rename({"time": "start"}).with_columns(time=pl.lit(1.0)), start="start")),
    Case("counting_process", "reserved_name", "patient_id", [], _intervals(intervals(patient_id=[0] * 5)),
         "not a feature either"),
    Case("counting_process", "same_clock", "time2", [],
         _intervals(intervals(time2=[dt.date(2020, 1, d) for d in (8, 9, 4, 5, 6)]))),
    Case("counting_process", "not_null", "pid", [None], _intervals(intervals(pid=[3, 1, 2, 1, None]))),
    Case("counting_process", "not_null", "time", [2], _intervals(intervals(time=[6.0, 5.0, None, 0.0, 2.0]))),
    Case("counting_process", "not_null", "time2", [1], _intervals(intervals(time2=[8.0, None, 4.0, 5.0, 6.0]))),
    Case("counting_process", "not_null", "event", [3], _intervals(intervals(event=[None, 1, 0, 0, 0]))),
    Case("counting_process", "finite", "time2", [3], _intervals(intervals(time2=[INF, 9.0, 4.0, 5.0, 6.0]))),
    Case("counting_process", "finite", "event", [2], _intervals(intervals(event=[2.0, 1.0, NAN, 0.0, 0.0]),
                                                               ), "NaN event code"),
    Case("counting_process", "non_negative", "time", [1, 2],
         _intervals(intervals(time=[6.0, 5.0, -1.0, -2.0, 2.0]))),
    Case("counting_process", "feature_finite", "x", [1], _intervals(intervals(x=[1.0, -INF, None, 3.0, 4.0]))),
    Case("counting_process", "event_code", "event", [3], _intervals(intervals(event=[-1, 1, 0, 0, 0]))),
    Case("counting_process", "event_code", "event", [1], _intervals(intervals(event=[2.0, 0.5, 0.0, 0.0, 0.0])),
         "not a whole number"),
    Case("counting_process", "start_before_stop", "time", [2], _intervals(intervals(time2=[8.0, 9.0, 0.0, 5.0, 6.0]))),
    Case("counting_process", "start_before_stop", "time", [1],
         _intervals(intervals(time=[6.0, 9.0, 0.0, 0.0, 2.0])), "zero length"),
    Case("counting_process", "no_overlap", "time2", [1], _intervals(intervals(time=[6.0, 4.0, 0.0, 0.0, 2.0]))),
    Case("counting_process", "no_overlap", "time2", [3],
         _intervals(intervals(time=[2.0, 5.0, 0.0, 0.0, 2.0], time2=[8.0, 9.0, 4.0, 5.0, 4.0])), "same start"),
    Case("counting_process", "no_gap", "time2", [3], _intervals(intervals(time=[7.0, 5.0, 0.0, 0.0, 2.0]))),
    Case("counting_process", "event_on_last_row", "event", [1], _intervals(intervals(event=[2, 0, 0, 1, 0]))),
    Case("counting_process", "event_on_last_row", "status", [1],
         _intervals(intervals(event=[2, 0, 0, 1, 0]).rename({"event": "status", "pid": "id"}), id="id",
                    event="status"), "renamed roles"),
]


def _case_id(case: Case) -> str:
    return f"{case.table}-{case.rule}" + (f"-{case.label}" if case.label else "")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_malformed_table_raises_the_rule_naming_column_and_ids(case):
    with pytest.raises(DataError) as info:
        case.run()
    err = info.value
    assert (err.table, err.rule, err.column) == (case.table, case.rule, case.column), str(err)
    assert err.patient_ids == case.ids, str(err)
    text = str(err)
    assert f"rule '{case.rule}'" in text and f"[{case.table}" in text
    for pid in case.ids:
        assert str(pid) in text


def test_every_rule_of_every_contract_has_a_malformed_example():
    covered = {(c.table, c.rule) for c in CASES}
    expected = {(t, r) for t in TABLES for r in load_spec(t).rules}
    assert expected == covered


def test_valid_tables_pass_and_report_resolved_columns():
    checked = validate(visits(), outcomes(), multi_outcomes=multi())
    assert checked.columns.numeric == ("x",) and checked.columns.categorical == ("sex",)
    assert checked.columns.codes == "codes" and checked.n_event_types == 2
    validate_meds(meds())
    validate_predictions(predictions())
    validate_predictions(predictions(cause=[1, 2, 1]))


def test_at_most_five_ids_reported_with_the_number_of_offending_patients():
    n = 12
    bad = pl.DataFrame({"patient_id": list(range(n)), "time": [-1.0] * n, "x": [1.0] * n})
    good = pl.DataFrame({"patient_id": list(range(n)), "time": [5.0] * n, "event": [0] * n})
    with pytest.raises(DataError) as info:
        validate(bad, good)
    assert info.value.patient_ids == [0, 1, 2, 3, 4] and info.value.n_offending == n
    assert "first 5 of 12" in str(info.value)


def test_patients_without_an_outcome_row_are_counted_as_patients_not_visit_rows():
    """Patient 2 has two visits and no outcome row: one patient, whatever its number of visits."""
    with pytest.raises(DataError, match=r"without an outcome row.*\(1 patient\)"):
        validate(visits(), outcomes().filter(pl.col("patient_id") != 2))
    many = visits(patient_id=[1, 1, 2, 3, 3])  # two patients (1 and 3) with two visits each, no outcome row
    with pytest.raises(DataError, match=r"\(2 patients\)"):
        validate(many, outcomes().filter(pl.col("patient_id") == 2))


def test_string_patient_ids_are_named_in_errors():
    v = visits(patient_id=["p1", "p1", "p2", "p2", "p3"], time=[0.0, 1.0, 0.0, -3.0, 0.0])
    o = outcomes(patient_id=["p1", "p2", "p3"])
    with pytest.raises(DataError, match="'p2'") as info:
        validate(v, o)
    assert info.value.patient_ids == ["p2"]
    validate(visits(patient_id=["p1", "p1", "p2", "p2", "p3"]), o)


def test_integer_ids_of_different_widths_and_categorical_ids_match():
    validate(visits(patient_id=pl.Series([1, 1, 2, 2, 3], dtype=pl.Int32)), outcomes())
    cat = pl.Series(["a", "a", "b", "b", "c"], dtype=pl.Categorical)
    validate(visits(patient_id=cat), outcomes(patient_id=["a", "b", "c"]))


def test_datetime_clocks_are_converted_to_days_and_dates_mix_with_naive_datetimes():
    day0 = dt.datetime(2021, 3, 1, 12)
    v = visits(time=[day0, day0 + dt.timedelta(hours=36), day0, day0 + dt.timedelta(days=5), day0])
    o = outcomes(time=[dt.date(2021, 3, 20), dt.date(2021, 4, 1), dt.date(2021, 3, 4)])
    checked = validate(v, o)
    days = checked.visits.filter(pl.col("patient_id") == 1)["time"].to_list()
    assert days[1] - days[0] == pytest.approx(1.5)
    epoch_days = (dt.date(2021, 3, 20) - dt.date(1970, 1, 1)).days
    assert checked.outcomes.filter(pl.col("patient_id") == 1)["time"].item() == epoch_days


def test_mixed_clocks_between_tables_and_time_zones_are_errors():
    with pytest.raises(DataError, match="same_clock"):
        validate(visits(time=[dt.datetime(2020, 1, 1)] * 2 + [dt.datetime(2020, 1, 2)] * 3).with_columns(
            pl.col("time") + pl.duration(days=pl.int_range(5))), outcomes())
    utc = pl.Series([dt.datetime(2020, 1, 1, i) for i in range(5)]).dt.replace_time_zone("UTC")
    naive = [dt.datetime(2020, 2, 1)] * 3
    with pytest.raises(DataError) as info:
        validate(visits(time=utc), outcomes(time=naive))
    assert info.value.rule == "same_clock" and info.value.table == "outcomes"


def test_datetime_clocks_need_no_non_negativity_and_origin_zero_needs_days():
    old = [dt.datetime(1950, 1, 1), dt.datetime(1950, 2, 1), dt.datetime(1950, 1, 1), dt.datetime(1950, 1, 9),
           dt.datetime(1950, 1, 1)]
    validate(visits(time=old), outcomes(time=[dt.datetime(1951, 1, 1)] * 3))
    with pytest.raises(ConfigError, match="zero"):
        validate(visits(time=old), outcomes(time=[dt.datetime(1951, 1, 1)] * 3), origin="zero")


def test_pandas_and_lazy_inputs_are_accepted_and_other_objects_rejected():
    validate(visits().to_pandas(), outcomes().lazy())
    assert isinstance(visits().to_pandas(), pd.DataFrame)
    with pytest.raises(ConfigError, match="must be a DataFrame, a LazyFrame, a file"):
        validate({"patient_id": [1]}, outcomes())


@pytest.mark.filterwarnings("ignore::ehrseq.errors.DataWarning")  # two patients left, events 1 and 2
def test_duplicates_merge_and_unmatched_drop_switch_rules_off():
    validate(visits(time=[0.0, 10.0, 5.0, 5.0, 0.0]), outcomes(), duplicates="merge")
    validate(visits(), outcomes().filter(pl.col("patient_id") != 2), unmatched="drop")
    with pytest.raises(ConfigError, match="duplicates"):
        validate(visits(), outcomes(), duplicates="drop")
    with pytest.raises(ConfigError, match="unmatched"):
        validate(visits(), outcomes(), unmatched="keep")


def test_configuration_errors_are_config_errors():
    with pytest.raises(ConfigError, match="both numeric and categorical"):
        validate(visits(), outcomes(), numeric=["x"], categorical=["x"])
    with pytest.raises(ConfigError, match="twice"):
        validate(visits(), outcomes(), numeric=["x", "x"])
    with pytest.raises(ConfigError, match="multi_outcomes needs an outcome table"):
        validate(visits(), None, multi_outcomes=multi())
    with pytest.raises(ConfigError, match="event_types"):
        validate(visits(), outcomes(), event_types=0)


def test_feature_inference_uses_dtypes_and_lists_ignored_columns():
    v = visits(flag=[True, False, True, True, False], count=[1, 2, 3, 4, 5],
               seen=[dt.date(2020, 1, 1)] * 5)
    cols = validate(v, outcomes()).columns
    assert cols.numeric == ("x", "count") and cols.categorical == ("sex", "flag")
    assert cols.ignored == ("seen",)
    declared = validate(v, outcomes(), numeric=["x"]).columns
    assert declared.numeric == ("x",) and declared.categorical == ("sex", "flag")
    assert declared.ignored == ("count", "seen")
    assert validate(v, outcomes(), categorical=["count"]).columns.categorical == ("count",)


def test_all_null_feature_columns_are_accepted_as_missing():
    checked = validate(visits(x=pl.Series([None] * 5, dtype=pl.Null)), outcomes(), numeric=["x"])
    assert checked.columns.numeric == ("x",)
