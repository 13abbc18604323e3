"""Cohort and targets, patient splits and time grids, against per-patient loops written here."""

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrseq import DataError
from ehrseq.data import TimeGrid, build_cohort, split_patients, split_tables
from ehrseq.errors import ConfigError


def _random_tables(seed: int, n_patients: int = 40):
    rng = np.random.default_rng(seed)
    rows = []
    outcome_rows = []
    for pid in range(n_patients):
        n = int(rng.integers(1, 8))
        times = np.sort(rng.choice(np.arange(0, 400), size=n, replace=False)).astype(float)
        for t in times:
            rows.append((pid, t, float(rng.normal()) if rng.random() > 0.2 else None))
        y = float(times[int(rng.integers(0, n))] + rng.integers(0, 60))  # may cut visits
        outcome_rows.append((pid, y, int(rng.integers(0, 3))))
    visits = pl.DataFrame(rows, schema={"patient_id": pl.Int64, "time": pl.Float64, "x": pl.Float64}, orient="row")
    outcomes = pl.DataFrame(outcome_rows, schema={"patient_id": pl.Int64, "time": pl.Float64, "event": pl.Int64},
                            orient="row")
    return visits.sample(fraction=1.0, shuffle=True, seed=seed), outcomes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_match_a_per_patient_loop(seed):
    visits, outcomes = _random_tables(seed)
    cohort = build_cohort(visits, outcomes, unmatched="drop")
    expected_rows = []
    outcome = {r["patient_id"]: r for r in outcomes.iter_rows(named=True)}
    kept_patients = []
    for pid in sorted(outcome):
        times = sorted(visits.filter(pl.col("patient_id") == pid)["time"].to_list())
        y = outcome[pid]["time"]
        kept = [t for t in times if t < y]
        if not kept:
            continue
        kept_patients.append((pid, len(kept), y - times[0], outcome[pid]["event"]))
        for m, t in enumerate(kept):
            gap = 0.0 if m == 0 else t - times[m - 1]
            expected_rows.append((len(kept_patients) - 1, t, t - times[0], gap, y - t))
    got = cohort.visits.select("patient_index", "time", "elapsed", "gap", "remaining").rows()
    assert got == expected_rows
    patients = cohort.patients.select("patient_id", "n_visits", "outcome_time", "event").rows()
    assert patients == kept_patients
    assert cohort.visits["upper"].to_list() == [float("inf")] * cohort.n_visits
    report = cohort.report
    assert report.balanced
    assert report.visits.dropped["at_or_after_outcome"] == visits.height - cohort.n_visits
    assert report.patients.dropped["no_visit_before_outcome"] == outcomes.height - cohort.n_patients


def test_patient_with_outcome_at_first_visit_is_dropped_and_counted():
    visits = pl.DataFrame({"patient_id": [1, 1, 2], "time": [0.0, 5.0, 3.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [9.0, 3.0], "event": [1, 1]})
    cohort = build_cohort(visits, outcomes)
    assert cohort.patient_ids.to_list() == [1]
    report = cohort.report
    assert report.patients.dropped == {"no_visit_before_outcome": 1}
    assert report.outcomes.dropped == {"no_visit_before_outcome": 1}
    assert report.visits.dropped == {"at_or_after_outcome": 1}
    assert report.balanced and "no_visit_before_outcome" in str(report)


def test_origins_first_visit_zero_outcome_column_and_visit_column():
    visits = pl.DataFrame({"patient_id": [1, 1, 2], "time": [10.0, 30.0, 5.0], "idx": [20.0, 20.0, 1.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [50.0, 9.0], "event": [0, 1], "index_time": [15.0, 0.0],
                             "entry_time": [12.0, 2.0]})
    first = build_cohort(visits, outcomes)
    assert first.visits["elapsed"].to_list() == [0.0, 20.0, 0.0]
    assert first.patients["outcome_time"].to_list() == [40.0, 4.0]
    assert first.patients["entry_time"].to_list() == [2.0, -3.0]
    zero = build_cohort(visits, outcomes, origin="zero")
    assert zero.visits["elapsed"].to_list() == [10.0, 30.0, 5.0]
    by_outcome = build_cohort(visits, outcomes, origin="index_time")
    assert by_outcome.visits["elapsed"].to_list() == [-5.0, 15.0, 5.0]
    assert by_outcome.patients["origin"].to_list() == [15.0, 0.0]
    by_visit = build_cohort(visits, None, origin="idx")
    assert by_visit.visits["elapsed"].to_list() == [-10.0, 10.0, 4.0]
    assert "idx" not in by_visit.numeric
    assert by_visit.visits["gap"].to_list() == [0.0, 20.0, 0.0]


def test_datetime_clock_converted_to_days_and_back():
    start = dt.datetime(2020, 1, 1, 8, tzinfo=dt.timezone.utc)
    times = [start, start + dt.timedelta(days=2, hours=12), start + dt.timedelta(days=1)]
    visits = pl.DataFrame({"patient_id": ["a", "a", "b"], "time": times}).with_columns(
        pl.col("time").dt.convert_time_zone("Europe/Paris"))
    outcomes = pl.DataFrame({"patient_id": ["a", "b"], "time": [start + dt.timedelta(days=10)] * 2,
                             "event": [True, False]}).with_columns(pl.col("time").dt.convert_time_zone("Europe/Paris"))
    cohort = build_cohort(visits, outcomes)
    assert cohort.visits["elapsed"].to_list() == [0.0, 2.5, 0.0]
    assert cohort.visits["remaining"].to_list() == pytest.approx([10.0, 7.5, 9.0])
    assert cohort.n_event_types == 1 and cohort.patients["event"].to_list() == [1, 0]
    back = cohort.visit_times()
    assert back.dtype == visits.schema["time"]
    assert back.to_list() == visits.sort("patient_id", "time")["time"].to_list()


def test_date_clock_round_trip():
    visits = pl.DataFrame({"patient_id": [1, 1], "time": [dt.date(2019, 12, 30), dt.date(2020, 1, 2)]})
    outcomes = pl.DataFrame({"patient_id": [1], "time": [dt.date(2020, 3, 1)], "event": [1]})
    cohort = build_cohort(visits, outcomes)
    assert cohort.visits["gap"].to_list() == [0.0, 3.0]
    assert cohort.visit_times().to_list() == visits["time"].to_list()


def test_duplicates_merge_rule():
    visits = pl.DataFrame({
        "patient_id": [1, 1, 1, 1],
        "time": [2.0, 0.0, 2.0, 2.0],
        "x": [1.0, 5.0, None, 4.0],
        "n": [1, 2, 3, 6],
        "c": ["u", "v", "w", None],
        "codes": [["b"], ["z"], None, ["a", "b"]],
    })
    outcomes = pl.DataFrame({"patient_id": [1], "time": [9.0], "event": [0]})
    cohort = build_cohort(visits, outcomes, duplicates="merge")
    rows = cohort.visits.select("time", "x", "n", "c", "codes").rows()
    assert rows == [(0.0, 5.0, 2.0, "v", ["z"]), (2.0, 2.5, 10 / 3, "w", ["a", "b"])]
    assert cohort.report.visits.dropped["merged_duplicates"] == 2 and cohort.report.balanced


def test_unmatched_drop_counts_both_directions():
    visits = pl.DataFrame({"patient_id": [1, 1, 2, 4], "time": [0.0, 1.0, 0.0, 0.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [5.0, 5.0, 5.0], "event": [0, 1, 1]})
    cohort = build_cohort(visits, outcomes, unmatched="drop")
    report = cohort.report
    assert cohort.patient_ids.to_list() == [1, 2]
    assert report.visits.dropped["no_outcome"] == 1
    assert report.patients.n_in == 4
    assert report.patients.dropped == {"no_outcome": 1, "no_visits": 1, "no_visit_before_outcome": 0}
    assert report.outcomes.dropped["no_visits"] == 1
    assert report.balanced
    text = str(report)
    assert "no_outcome" in text and "no_visits" in text
    assert report.to_dict()["patients"] == {"in": 4, "used": 2, "dropped": report.patients.dropped}


def test_max_visits_keeps_the_most_recent_visits_with_true_gaps():
    visits = pl.DataFrame({"patient_id": [1] * 5 + [2], "time": [0.0, 1.0, 3.0, 6.0, 10.0, 0.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [8.0, 4.0], "event": [1, 0]})
    cohort = build_cohort(visits, outcomes, max_visits=2)
    assert cohort.visits.filter(pl.col("patient_index") == 0).select("time", "elapsed", "gap").rows() == [
        (3.0, 3.0, 2.0), (6.0, 6.0, 3.0)]
    assert cohort.patients["n_visits"].to_list() == [2, 1]
    dropped = cohort.report.visits.dropped
    assert dropped["at_or_after_outcome"] == 1 and dropped["truncated_max_visits"] == 2
    assert cohort.report.balanced
    with pytest.raises(ConfigError, match="max_visits"):
        build_cohort(visits, outcomes, max_visits=0)


def test_interval_bound_weight_and_event_type_names():
    visits = pl.DataFrame({"patient_id": [1, 1, 2], "time": [0.0, 4.0, 0.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2], "time": [10.0, 3.0], "event": [0, 2],
                             "time_upper": [15.0, None], "weight": [2.0, 0.5]})
    cohort = build_cohort(visits, outcomes, event_types=["transplant", "death"])
    assert cohort.visits["upper"].to_list() == [15.0, 11.0, float("inf")]
    assert cohort.patients["time_upper"].to_list() == [15.0, float("inf")]
    assert cohort.patients["weight"].to_list() == [2.0, 0.5]
    assert cohort.n_event_types == 2 and cohort.event_type_names == ("transplant", "death")
    assert cohort.report.events == {0: 1, 2: 1}


def test_unlabelled_cohort_keeps_every_visit_and_has_no_targets():
    visits = pl.DataFrame({"patient_id": [2, 1, 1], "time": [3.0, 0.0, 7.0], "x": [1.0, 2.0, 3.0]})
    cohort = build_cohort(visits)
    assert not cohort.is_labelled and cohort.n_visits == 3
    assert "remaining" not in cohort.visits.columns and "outcome_time" not in cohort.patients.columns
    assert cohort.report.outcomes is None and cohort.report.balanced


def test_multi_event_table_is_pivoted_with_at_risk_flags():
    visits = pl.DataFrame({"patient_id": [1, 1, 2, 3], "time": [10.0, 20.0, 0.0, 5.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [100.0, 50.0, 60.0], "event": [0, 1, 0]})
    multi = pl.DataFrame({"patient_id": [1, 1, 2, 9], "event_name": ["mi", "dm", "mi", "mi"],
                          "time": [40.0, 100.0, 50.0, 1.0], "event": [True, False, False, True]})
    cohort = build_cohort(visits, outcomes, multi_outcomes=multi, unmatched="drop")
    assert cohort.event_names == ("dm", "mi")
    patients = cohort.patients
    assert patients["event_times"].to_list() == [[90.0, 30.0], [0.0, 50.0], [0.0, 0.0]]
    assert patients["event_flags"].to_list() == [[False, True], [False, False], [False, False]]
    assert patients["event_at_risk"].to_list() == [[True, True], [False, True], [False, False]]
    assert cohort.report.multi_outcomes.dropped == {"patient_dropped": 1}
    assert cohort.report.multi_events == {"dm": 0, "mi": 1}


def test_slicing_reindexes_patients_and_keeps_their_visits():
    visits, outcomes = _random_tables(5)
    cohort = build_cohort(visits, outcomes, unmatched="drop")
    order = [3, 0, 7]
    part = cohort[order]
    assert part.patient_ids.to_list() == [cohort.patient_ids[i] for i in order]
    for new, old in enumerate(order):
        mine = part.visits.filter(pl.col("patient_index") == new).drop("patient_index")
        theirs = cohort.visits.filter(pl.col("patient_index") == old).drop("patient_index")
        assert mine.equals(theirs)
    assert part.visits["patient_index"].is_sorted()
    assert cohort[1:3].patient_ids.to_list() == cohort.patient_ids[1:3].to_list()
    events = (cohort.patients["event"] > 0).to_numpy()
    assert cohort[events].patient_ids.to_list() == cohort.patient_ids.filter(events).to_list()
    with pytest.raises(ConfigError, match="distinct"):
        cohort.select([1, 1])
    with pytest.raises(IndexError):
        cohort.select([cohort.n_patients])


def test_split_patients_is_disjoint_stratified_and_seeded():
    n = 1000
    rng = np.random.default_rng(0)
    event = rng.choice([0, 1, 2], size=n, p=[0.6, 0.3, 0.1])
    visits = pl.DataFrame({"patient_id": np.arange(n), "time": np.zeros(n)})
    outcomes = pl.DataFrame({"patient_id": np.arange(n), "time": np.full(n, 10.0), "event": event})
    cohort = build_cohort(visits, outcomes)
    parts = split_patients(cohort, (0.7, 0.15, 0.15), seed=3)
    ids = [set(p.patient_ids.to_list()) for p in parts]
    assert sum(len(s) for s in ids) == n and set.union(*ids) == set(range(n))
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1:])
    for k in (0, 1, 2):
        total = int((event == k).sum())
        counts = [int((p.patients["event"] == k).sum()) for p in parts]
        expected = np.diff(np.rint(np.cumsum([0, 0.7, 0.15, 0.15]) * total))
        assert counts == expected.tolist()
    again = split_patients(cohort, (0.7, 0.15, 0.15), seed=3)
    assert [p.patient_ids.to_list() for p in again] == [p.patient_ids.to_list() for p in parts]
    other = split_patients(cohort, (0.7, 0.15, 0.15), seed=4)
    assert other[0].patient_ids.to_list() != parts[0].patient_ids.to_list()
    plain = split_patients(cohort, (0.5, 0.5), stratify=None)
    assert [p.n_patients for p in plain] == [500, 500]
    with pytest.raises(ConfigError, match="fractions"):
        split_patients(cohort, (0.5, 0.6))
    with pytest.raises(ConfigError, match="stratify"):
        split_patients(build_cohort(visits), stratify="event")


def test_split_tables_moves_every_visit_with_its_patient():
    visits, outcomes = _random_tables(5, n_patients=200)
    visits = visits.vstack(pl.DataFrame({"patient_id": [999], "time": [1.0], "x": [0.0]}))  # no outcome
    parts = split_tables(visits, outcomes, (0.75, 0.25), seed=1)
    assert [o.height for _, o in parts] == [150, 50]
    for part_visits, part_outcomes in parts:
        ids = set(part_outcomes["patient_id"].to_list())
        assert set(part_visits["patient_id"].to_list()) == ids
        expected = visits.filter(pl.col("patient_id").is_in(list(ids)))
        assert part_visits.equals(expected)  # every visit of the part's patients, input order kept
    assert not set(parts[0][1]["patient_id"].to_list()) & set(parts[1][1]["patient_id"].to_list())
    for k in (0, 1, 2):  # event mix kept: counts differ from the exact fraction by rounding only
        total = int((outcomes["event"] == k).sum())
        assert abs(int((parts[0][1]["event"] == k).sum()) - 0.75 * total) <= 0.5
    same = split_tables(visits, outcomes, (0.75, 0.25), seed=1)
    assert same[1][1].equals(parts[1][1])
    with pytest.raises(ConfigError, match="stratify"):
        split_tables(visits, outcomes, stratify="missing")


# ---------------------------------------------------------------------------------------------- TimeGrid
def _kappa(r: float, cuts: list[float]) -> int:
    for l in range(len(cuts) - 1):
        if cuts[l] < r <= cuts[l + 1]:
            return l
    return len(cuts) - 1


def test_grid_binning_convention_matches_definition():
    grid = TimeGrid.manual([30.0, 90.0, 365.0])
    assert grid.cuts.tolist() == [0.0, 30.0, 90.0, 365.0] and grid.n_bins == 3
    durations = np.array([1e-6, 29.9, 30.0, 30.0001, 90.0, 364.0, 365.0, 365.5, 1e6])
    expected = [_kappa(r, grid.cuts.tolist()) for r in durations]
    assert grid.bin(durations).tolist() == expected == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    as_torch = grid.bin(torch.tensor(durations, dtype=torch.float64))
    assert as_torch.dtype == torch.int64 and as_torch.tolist() == expected
    with pytest.raises(DataError, match="> 0"):
        grid.bin(np.array([0.0]))


def test_grid_constructors():
    assert TimeGrid.equidistant(4, 100).cuts.tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
    log = TimeGrid.log(3, 1.0, 100.0)
    assert log.cuts.tolist() == pytest.approx([0.0, 1.0, 10.0, 100.0])
    assert TimeGrid.manual([0.0, 5.0]).cuts.tolist() == [0.0, 5.0]
    for bad in ([5.0, 5.0], [-1.0, 2.0], [1.0, float("inf")]):
        with pytest.raises(ConfigError):
            TimeGrid.manual(bad)
    with pytest.raises(ConfigError):
        TimeGrid.equidistant(0, 10)
    with pytest.raises(ConfigError):
        TimeGrid.log(3, 10.0, 1.0)


def test_quantile_grid_uses_event_remaining_times():
    visits = pl.DataFrame({"patient_id": [1, 1, 2, 3], "time": [0.0, 5.0, 0.0, 0.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [10.0, 20.0, 1000.0], "event": [1, 1, 0]})
    cohort = build_cohort(visits, outcomes)
    events = np.array([10.0, 5.0, 20.0])  # remaining times of the visits of patients 1 and 2
    grid = TimeGrid.quantiles(cohort, 3)
    assert grid.cuts.tolist() == pytest.approx([0.0, *np.quantile(events, [1 / 3, 2 / 3, 1.0])])
    everyone = TimeGrid.quantiles(cohort, 2, events_only=False)
    assert everyone.max == 1000.0
    assert TimeGrid.quantiles(np.array([1.0, 1.0, 1.0, 2.0]), 4).cuts.tolist() == [0.0, 1.0, 1.25, 2.0]  # tie merged


def test_grid_json_round_trip():
    grid = TimeGrid.log(7, 0.5, 3650.0)
    again = TimeGrid.from_json(grid.to_json())
    assert again == grid and np.array_equal(again.cuts, grid.cuts)
    assert json.loads(grid.to_json())["format"] == "ehrseq.TimeGrid"
    with pytest.raises(ConfigError):
        TimeGrid.from_dict({"cuts": [1.0]})


# ---------------------------------------------------------------------------------------------- report
@st.composite
def messy_tables(draw):
    """Visits with duplicates, patients missing from either table, outcomes cutting histories."""
    n_patients = draw(st.integers(1, 7))
    visit_rows, outcome_rows = [], []
    for pid in range(n_patients):
        has_visits, has_outcome = draw(st.sampled_from([(True, True), (True, True), (True, False), (False, True)]))
        times = draw(st.lists(st.integers(0, 20), min_size=1, max_size=6)) if has_visits else []
        visit_rows += [(pid, float(t), draw(st.one_of(st.none(), st.floats(-5, 5)))) for t in times]
        if has_outcome:
            lowest = min(times) if times else 0
            outcome_rows.append((pid, float(draw(st.integers(lowest, 25))), draw(st.integers(0, 1))))
    if not visit_rows or not outcome_rows:
        visit_rows.append((99, 0.0, None))
        outcome_rows.append((99, 1.0, 0))
    schema_v = {"patient_id": pl.Int64, "time": pl.Float64, "x": pl.Float64}
    schema_o = {"patient_id": pl.Int64, "time": pl.Float64, "event": pl.Int64}
    return (pl.DataFrame(visit_rows, schema=schema_v, orient="row"),
            pl.DataFrame(outcome_rows, schema=schema_o, orient="row"))


@settings(max_examples=40, deadline=None)
@given(messy_tables(), st.one_of(st.none(), st.integers(1, 3)))
def test_report_arithmetic_matches_brute_force_counts(tables, max_visits):
    visits, outcomes = tables
    cohort = build_cohort(visits, outcomes, duplicates="merge", unmatched="drop", max_visits=max_visits)
    report = cohort.report
    outcome_time = dict(outcomes.select("patient_id", "time").iter_rows())
    visit_ids = set(visits["patient_id"])
    counts = {"no_outcome": 0, "merged_duplicates": 0, "at_or_after_outcome": 0, "truncated_max_visits": 0}
    used_visits, used_patients, no_visit_before = 0, 0, 0
    for pid in sorted(visit_ids):
        times = visits.filter(pl.col("patient_id") == pid)["time"].to_list()
        if pid not in outcome_time:
            counts["no_outcome"] += len(times)
            continue
        distinct = sorted(set(times))
        counts["merged_duplicates"] += len(times) - len(distinct)
        kept = [t for t in distinct if t < outcome_time[pid]]
        counts["at_or_after_outcome"] += len(distinct) - len(kept)
        if not kept:
            no_visit_before += 1
            continue
        final = kept if max_visits is None else kept[-max_visits:]
        counts["truncated_max_visits"] += len(kept) - len(final)
        used_visits += len(final)
        used_patients += 1
    assert report.balanced
    assert report.visits.n_in == visits.height and report.visits.n_used == used_visits == cohort.n_visits
    assert {k: report.visits.dropped.get(k, 0) for k in counts} == counts
    assert report.patients.n_in == len(visit_ids | set(outcome_time)) and report.patients.n_used == used_patients
    assert report.patients.dropped == {
        "no_outcome": len(visit_ids - set(outcome_time)),
        "no_visits": len(set(outcome_time) - visit_ids),
        "no_visit_before_outcome": no_visit_before,
    }
    assert report.outcomes.n_in == outcomes.height and report.outcomes.n_used == used_patients
    assert report.to_dict()["visits"]["in"] == visits.height
