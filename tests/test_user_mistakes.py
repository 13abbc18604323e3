"""Common mistakes with one's own tables end in a clear error (or a correct result), never in a wrong
result with exit code 0: calendar clocks in evaluation, date landmarks on day clocks, R's event coding,
several event types for a single-event head, an event type that does not occur, float event codes."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

import ehrseq
from ehrseq.bootstrap import compare
from ehrseq.cli import main
from ehrseq.data import build_cohort
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError, DataError, DataWarning
from ehrseq.evaluate import landmark

TINY = {"d_model": 8, "hidden": [8], "grid": 4, "epochs": 1, "batch_size": 32, "progress": False, "device": "cpu"}
EPOCH = dt.datetime(1990, 1, 1)


def _dated(table: pl.DataFrame, start: pl.DataFrame) -> pl.DataFrame:
    """Days since each patient's first visit -> datetimes from the patient's own registration date."""
    return (table.join(start, on="patient_id")
            .with_columns((pl.col("start") + pl.duration(microseconds=(pl.col("time") * 86_400e6).round(0)))
                          .alias("time"))
            .drop("start"))


@pytest.fixture(scope="module")
def days():
    """(train visits, train outcomes), (test visits, test outcomes) on a day clock; first visits at day 0."""
    train, test = simulate(60, 0), simulate(40, 1)
    test = (test.visits.with_columns(pl.col("patient_id") + 1000), test.outcomes.with_columns(pl.col("patient_id") + 1000))
    return (train.visits, train.outcomes), test


@pytest.fixture(scope="module")
def dates(days):
    """The same tables on a calendar clock: every patient registered on a different date."""
    (tv, to), (sv, so) = days
    ids = pl.concat([to["patient_id"], so["patient_id"]])
    start = pl.DataFrame({"patient_id": ids,
                          "start": [EPOCH + dt.timedelta(days=int(d)) for d in np.random.default_rng(0).integers(0, 4000, ids.len())]})
    return (_dated(tv, start), _dated(to, start)), (_dated(sv, start), _dated(so, start))


@pytest.fixture(scope="module")
def model(days):
    return ehrseq.DynamicSurvival(**TINY).fit(*days[0])


# ---------------------------------------------------------------------------------------------- 1. evaluation
def test_evaluate_refuses_calendar_training_outcomes_without_their_visits(dates, model):
    (tv, to), test = dates
    with pytest.raises(ConfigError, match=r"train_outcomes=\(train_visits, train_outcomes\)"):
        landmark(model, *test, [200.0], [365.0], to)
    with pytest.raises(ConfigError, match="training outcome times are dates"):
        compare(model, model, *test, [200.0], [365.0], to, n_bootstrap=10)


def test_evaluate_command_names_the_flag_for_the_training_visits(dates, model, tmp_path, capsys):
    (tv, to), (sv, so) = dates
    paths = {}
    for name, table in {"tv": tv, "to": to, "sv": sv, "so": so}.items():
        paths[name] = tmp_path / f"{name}.csv"
        if "codes" in table.columns:  # a text file has no lists: the codes of a visit are written "C01;C07"
            table = table.with_columns(pl.col("codes").list.join(";"))
        table.write_csv(paths[name])
    model.save(tmp_path / "model")
    common = ["evaluate", "--model", str(tmp_path / "model"), "--visits", str(paths["sv"]), "--outcomes",
              str(paths["so"]), "--train-outcomes", str(paths["to"]), "--landmarks", "200", "--horizons", "365"]
    assert main(common) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--train-visits FILE" in captured.err and "train_outcomes=" not in captured.err
    assert main([*common, "--train-visits", str(paths["tv"])]) == 0


def test_calendar_clocks_give_the_metrics_of_the_same_data_on_a_day_clock(days, dates, model):
    """Y − origin is what the censoring distribution is fitted on: dates and days give the same table."""
    on_days = landmark(model, *days[1], [200.0, 400.0], [365.0, 730.0], days[0])
    on_dates = landmark(model, *dates[1], [200.0, 400.0], [365.0, 730.0], dates[0])
    for column in ("n_at_risk", "n_events", "c_index", "uno_c", "auc", "brier", "ibs", "observed_risk"):
        assert on_dates[column].to_list() == pytest.approx(on_days[column].to_list(), abs=1e-6), column
    assert on_days["uno_c"].to_list() != on_days["c_index"].to_list()


def test_outcome_table_alone_is_used_only_when_it_gives_times_since_origin(days, model):
    train, test = days
    pair = landmark(model, *test, [200.0], [365.0, 730.0], train)
    alone = landmark(model, *test, [200.0], [365.0, 730.0], train[1])  # first visits at day 0: Y − origin = Y
    assert alone.equals(pair)
    shifted = [(v.with_columns(pl.col("time") + 100.0), o.with_columns(pl.col("time") + 100.0)) for v, o in (train, test)]
    with pytest.raises(ConfigError, match="not at day 0"):
        landmark(model, *shifted[1], [200.0], [365.0], shifted[0][1])


def test_evaluate_refuses_an_event_type_nobody_has(days, model):
    train, (sv, so) = days
    doubled = so.with_columns(pl.col("event") * 2)  # codes {0, 2}: the default type 1 never occurs
    with pytest.raises(ConfigError, match=r"no test or training patient has event type 1 .*event="):
        landmark(model, sv, doubled, [200.0], [365.0], (train[0], train[1].with_columns(pl.col("event") * 2)))


def test_evaluate_refuses_another_event_type_than_the_models_cause(days):
    (tv, to), test = days
    competing = to.with_columns(pl.when(pl.col("patient_id") % 3 == 0).then(pl.col("event") * 2)
                                .otherwise(pl.col("event")).alias("event"))
    model = ehrseq.DynamicSurvival(cause=2, **TINY).fit(tv, competing)
    with pytest.raises(ConfigError, match="fitted for event type 2"):
        landmark(model, *test, [200.0], [365.0], (tv, competing), event=1)


# ---------------------------------------------------------------------------------------------- 3. landmarks
def test_a_date_landmark_on_a_day_clock_is_refused(days, model, tmp_path, capsys):
    visits = days[1][0]
    with pytest.raises(ConfigError, match=r"landmark='2001-01-01' is a date, but the visit times are days"):
        model.predict_risk(visits, 365.0, landmark=dt.date(2001, 1, 1))
    visits.write_parquet(tmp_path / "v.parquet")
    model.save(tmp_path / "model")
    code = main(["score", "--model", str(tmp_path / "model"), "--visits", str(tmp_path / "v.parquet"), "--out",
                 str(tmp_path / "out"), "--horizons", "365", "--landmark", "2001-01-01", "--no-progress"])
    assert code == 1 and "--landmark 2001-01-01 is a date" in capsys.readouterr().err


def test_a_date_landmark_on_a_calendar_clock_is_the_days_since_each_origin(dates, days, model):
    """On calendar clocks a date is a calendar time: the same predictions as its days since each origin."""
    visits = dates[1][0].filter(pl.col("patient_id") < 1005)
    starts = visits.group_by("patient_id").agg(pl.col("time").min().alias("start")).sort("patient_id")
    moment = dt.datetime(2001, 6, 1)
    by_date = model.predict_risk(visits, 365.0, landmark=moment).sort("patient_id")
    for pid, start in starts.iter_rows():
        s = (moment - start).total_seconds() / 86_400
        one = model.predict_risk(visits.filter(pl.col("patient_id") == pid), 365.0, landmark=s)
        expected = one["risk"].to_list()
        assert by_date.filter(pl.col("patient_id") == pid)["risk"].to_list() == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------------------------------------- 4. event codes
def test_r_surv_coding_is_warned_about_naming_rs_convention(days):
    visits, outcomes = days[0]
    r_coded = outcomes.with_columns(pl.col("event") + 1)  # 1 = censored, 2 = dead, as survival::Surv
    with pytest.warns(DataWarning, match=r"R's Surv\(\) codes 1 = censored and 2 = event"):
        build_cohort(visits, r_coded)


def test_r_surv_coding_warns_on_the_command_line_and_training_refuses_it(days, tmp_path, capsys):
    visits, outcomes = days[0]
    visits.write_parquet(tmp_path / "v.parquet")
    outcomes.with_columns(pl.col("event") + 1).write_csv(tmp_path / "o.csv")
    assert main(["validate", "--visits", str(tmp_path / "v.parquet"), "--outcomes", str(tmp_path / "o.csv")]) == 0
    assert "ehrseq: warning: the outcome table has no censored patient" in capsys.readouterr().err
    code = main(["train", "--visits", str(tmp_path / "v.parquet"), "--outcomes", str(tmp_path / "o.csv"), "--out",
                 str(tmp_path / "m"), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and "--cause 1" in err and "--head competing_pmf" in err and "R's Surv() coding" in err
    assert not (tmp_path / "m").exists()


def test_a_single_event_head_on_two_event_types_needs_a_cause(days):
    visits, outcomes = days[0]
    competing = outcomes.with_columns(pl.when(pl.col("patient_id") % 3 == 0).then(pl.col("event") * 2)
                                      .otherwise(pl.col("event")).alias("event"))
    with pytest.raises(ConfigError, match=r"2 event types .* pass cause=1 .* head='competing_pmf'"):
        ehrseq.DynamicSurvival(**TINY).fit(visits, competing)
    with pytest.raises(ConfigError, match="no patient has event type 3"):
        ehrseq.DynamicSurvival(cause=3, **TINY).fit(visits, competing)
    fitted = ehrseq.DynamicSurvival(cause=2, **TINY).fit(visits, competing)
    assert fitted.objective.cause == 2
    ehrseq.DynamicSurvival(head="competing_pmf", **TINY).fit(visits, competing)


def test_float_event_codes_read_as_their_integers_and_fractions_are_refused(days):
    visits, outcomes = days[0]
    as_int = build_cohort(visits, outcomes).patients
    as_float = build_cohort(visits, outcomes.with_columns(pl.col("event").cast(pl.Float64))).patients
    assert as_float["event"].dtype == pl.Int64 and as_float["event"].to_list() == as_int["event"].to_list()
    bad = outcomes.with_columns(pl.when(pl.col("patient_id") == 3).then(0.5).otherwise(pl.col("event"))
                                .cast(pl.Float64).alias("event"))
    with pytest.raises(DataError, match="not whole numbers") as info:
        build_cohort(visits, bad)
    assert info.value.patient_ids == [3]
