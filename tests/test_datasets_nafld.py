"""NAFLD cohort: sizes, the clock shift, no future information at a visit, and the multi-event table.

References are plain-Python reconstructions from the raw R tables (dicts and loops), independent of
the vectorized Polars build.
"""

from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from ehrseq.datasets import NAFLD_MULTI_EVENT_NAMES, load_nafld
from ehrseq.datasets._tables import read_rdataset
from ehrseq.datasets.nafld import NAFLD_LABS


@pytest.fixture(scope="module")
def raw() -> dict[str, pl.DataFrame]:
    return {name: read_rdataset(name) for name in ("nafld1", "nafld2", "nafld3")}


@pytest.fixture(scope="module")
def data():
    return load_nafld(multi_event=True)


@pytest.fixture(scope="module")
def subjects(raw) -> dict[int, dict]:
    return {row["id"]: row for row in raw["nafld1"].iter_rows(named=True)}


@pytest.fixture(scope="module")
def onsets(raw, subjects) -> dict[int, dict[float, list[str]]]:
    """Onsets per subject and day, on or before futime."""
    out: dict[int, dict[float, list[str]]] = defaultdict(lambda: defaultdict(list))
    for pid, day, event in raw["nafld3"].select("id", "days", "event").iter_rows():
        if day <= subjects[pid]["futime"]:
            out[pid][float(day)].append(event)
    return out


def test_raw_sizes(raw):
    assert raw["nafld1"].height == 17_549 and raw["nafld1"]["id"].n_unique() == 17_549
    assert raw["nafld2"].height == 400_123
    assert raw["nafld3"].height == 34_340
    assert int(raw["nafld1"]["status"].sum()) == 1_364


def test_records_after_follow_up(raw):
    end = raw["nafld1"].select("id", "futime")
    late_labs = raw["nafld2"].join(end, on="id").filter(pl.col("days") > pl.col("futime"))
    late_onsets = raw["nafld3"].join(end, on="id").filter(pl.col("days") > pl.col("futime"))
    assert late_labs.height == 0
    assert late_onsets.height == 13 and set(late_onsets["event"]) == {"nafld"}


def test_chol_and_dbp_rows_copy_hdl_and_sbp(raw):
    labs = raw["nafld2"]

    def per_day(test: str) -> pl.DataFrame:
        return labs.filter(pl.col("test") == test).group_by("id", "days").agg(pl.col("value").unique().sort())

    for copy, source in (("chol", "hdl"), ("dbp", "sbp")):
        pairs = per_day(copy).join(per_day(source), on=["id", "days"], how="left", suffix="_source")
        assert pairs.height > 30_000
        assert (pairs["value"] == pairs["value_source"]).all()


def test_sizes_and_clock(data, subjects, onsets, raw):
    visits, outcomes = data.visits, data.outcomes
    assert outcomes.height == 17_549 and visits.height == 220_486
    assert visits["patient_id"].n_unique() == 15_919
    days: dict[int, set[float]] = defaultdict(set)
    for pid, day, test in raw["nafld2"].select("id", "days", "test").iter_rows():
        if test in NAFLD_LABS:
            days[pid].add(float(day))
    for pid, per_day in onsets.items():
        days[pid].update(per_day)
    entry = dict(outcomes.select("patient_id", "entry_time").iter_rows())
    end = dict(outcomes.select("patient_id", "time").iter_rows())
    for pid, row in subjects.items():
        shift = max(0.0, -min(days[pid])) if days[pid] else 0.0
        assert entry[pid] == shift
        assert end[pid] == row["futime"] + shift
    rebuilt: dict[int, set[float]] = defaultdict(set)
    for pid, time in visits.select("patient_id", "time").iter_rows():
        rebuilt[pid].add(time - entry[pid])
    assert rebuilt == {pid: found for pid, found in days.items() if found}
    deaths = dict(outcomes.select("patient_id", "event").iter_rows())
    assert all(deaths[pid] == row["status"] for pid, row in subjects.items())


def test_a_visit_holds_only_that_days_records(data, subjects, onsets, raw):
    visits, outcomes = data.visits, data.outcomes
    entry = dict(outcomes.select("patient_id", "entry_time").iter_rows())
    sample = pl.col("patient_id") % 4 == 0  # a quarter of the subjects keeps the loops short
    visits = visits.filter(sample)
    measured: dict[tuple[int, float, str], list[float]] = defaultdict(list)
    lab_rows = raw["nafld2"].filter(pl.col("id") % 4 == 0).select("id", "days", "test", "value")
    for pid, day, test, value in lab_rows.iter_rows():
        measured[pid, float(day), test].append(value)
    expected: dict[str, list] = defaultdict(list)
    for pid, time in visits.select("patient_id", "time").iter_rows():
        day, subject = time - entry[pid], subjects[pid]
        expected["codes"].append(sorted(onsets[pid].get(day, [])))
        for test in NAFLD_LABS:
            values = measured.get((pid, day, test))
            expected[test].append(None if values is None else sum(values) / len(values))
        expected["male"].append(float(subject["male"]))
        expected["age"].append(subject["age"] + day / 365.25)
        expected["bmi"].append(subject["bmi"] if day >= 0 else None)
    assert visits["codes"].to_list() == expected["codes"]
    for name in (*NAFLD_LABS, "male", "age", "bmi"):
        want = pl.Series(name, expected[name], dtype=pl.Float64)
        assert visits[name].is_null().equals(want.is_null()), name
        np.testing.assert_allclose(visits[name].drop_nulls().to_numpy(), want.drop_nulls().to_numpy(), rtol=1e-12)


def test_no_visit_after_follow_up(data):
    joined = data.visits.join(data.outcomes, on="patient_id", suffix="_end")
    assert (joined["time"] <= joined["time_end"]).all()


def test_multi_event_rows_match_first_onsets_after_index(data, subjects, raw):
    visits, outcomes, multi = data
    entry = dict(outcomes.select("patient_id", "entry_time").iter_rows())
    first_visit = dict(visits.group_by("patient_id").agg(pl.col("time").min()).iter_rows())
    first_onset: dict[tuple[int, str], int] = {}
    for pid, day, event in raw["nafld3"].select("id", "days", "event").iter_rows():
        first_onset[pid, event] = min(day, first_onset.get((pid, event), day))
    expected: dict[tuple[int, str], tuple[float, int]] = {}
    for pid, row in subjects.items():
        futime, shift = float(row["futime"]), entry[pid]
        start = first_visit.get(pid)
        candidates = {"death": (futime, row["status"])}
        for event in NAFLD_MULTI_EVENT_NAMES[1:]:
            onset = first_onset.get((pid, event))
            if onset is not None and onset <= 0:
                continue  # prevalent at the index date
            observed = onset is not None and onset <= futime
            candidates[event] = (float(onset), 1) if observed else (futime, 0)
        for event, (day, flag) in candidates.items():
            if start is None or day + shift > start:
                expected[pid, event] = (day + shift, flag)
    found = {(pid, name): (time, flag) for pid, name, time, flag in multi.iter_rows()}
    assert found == expected
    assert data.multi_event_names == NAFLD_MULTI_EVENT_NAMES and data.event_names == ("death",)


def test_multi_event_table_is_optional(data):
    single = load_nafld()
    assert single.multi_outcomes is None and len(tuple(single)) == 2
    assert single.visits.equals(data.visits) and single.outcomes.equals(data.outcomes)
