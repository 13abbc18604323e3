"""Predictions beyond the training data are marked, by one rule, in the API and in batch scoring.

The rule (ehrseq.predict, step 5): a prediction made at s (days since the origin) from the visit v for
a duration u after s is extrapolated when s − v + u > R_max (the longest time from a training visit to
its outcome or censoring, at most the grid's last point) or s + u > Y_max (the longest training
follow-up since the origin). The expected flags here are computed from the tables by hand.
"""

import math

import numpy as np
import polars as pl
import pytest

import ehrseq
from ehrseq.data import build_cohort
from ehrseq.datasets import simulate
from ehrseq.predict import Reach

GRID = [0.0, 150.0, 400.0, 800.0]  # ends well before the longest follow-up, so both limits bite
HORIZONS = [100.0, 500.0, 790.0, 1500.0]
LANDMARK = 900.0


def test_reach_of_a_cohort_by_hand():
    visits = pl.DataFrame({"patient_id": [1, 1, 2, 2, 3], "time": [0.0, 100.0, 200.0, 250.0, 10.0]})
    outcomes = pl.DataFrame({"patient_id": [1, 2, 3], "time": [500.0, 900.0, 210.0], "event": [1, 0, 1]})
    cohort = build_cohort(visits, outcomes, origin="zero")
    # remaining times 500, 400 | 700, 650 | 200; follow-up since time 0: 500, 900, 210
    assert Reach.of(cohort) == Reach(remaining=700.0, follow_up=900.0)
    assert Reach.of(cohort, ehrseq.data.TimeGrid.manual([100.0, 400.0])) == Reach(remaining=400.0, follow_up=900.0)
    # interval censoring: patient 1's event lies in (500, 1000], so it was followed to day 1000
    upper = outcomes.with_columns(pl.Series("time_upper", [1000.0, None, None]))
    assert Reach.of(build_cohort(visits, upper, origin="zero")) == Reach(remaining=1000.0, follow_up=1000.0)


def test_the_rule_by_hand():
    reach = Reach(remaining=400.0, follow_up=900.0)
    time, visit = np.array([100.0, 500.0]), np.array([0.0, 300.0])
    flags = reach.beyond(time - visit, time, np.array([200.0, 350.0, 450.0]))
    # row 0: s − v = 100 → 300, 450, 550 after the visit; s + u = 300, 450, 550 (≤ 900)
    # row 1: s − v = 200 → 400 (not beyond), 550, 650; s + u = 700, 850, 950
    assert flags.tolist() == [[False, True, True], [False, True, True]]
    only_follow_up = Reach(follow_up=900.0).beyond(time - visit, time, np.array([350.0, 450.0]))
    assert only_follow_up.tolist() == [[False, False], [False, True]]
    per_row = reach.beyond(time - visit, time, np.array([[250.0], [math.inf]]))
    assert per_row.tolist() == [[False], [True]]
    assert Reach.from_dict(reach.to_dict()) == reach
    assert Reach.from_dict(Reach().to_dict()) == Reach()
    assert Reach.from_dict(None, ehrseq.data.TimeGrid.manual(GRID)) == Reach(remaining=800.0)


@pytest.fixture(scope="module")
def tables():
    """Simulated patients on one clock (origin "zero"); every third patient starts 600 days late, so that
    the longest time from a visit (R_max) is shorter than the longest follow-up (Y_max)."""
    sim = simulate(60, seed=1)
    late = pl.col("patient_id") % 3 == 0
    shift = pl.when(late).then(pl.col("time") + 600.0).otherwise(pl.col("time")).alias("time")
    return sim.visits.with_columns(shift), sim.outcomes.with_columns(shift)


@pytest.fixture(scope="module")
def model_dir(tables, tmp_path_factory):
    model = ehrseq.DynamicSurvival(head="logistic_hazard", grid=GRID, origin="zero", epochs=1, batch_size=16,
                                   d_model=8, hidden=(8,), progress=False, device="cpu", seed=0)
    return model.fit(*tables, validation=None).save(tmp_path_factory.mktemp("model") / "model")


def _limits(tables) -> tuple[float, float]:
    """(R_max cut at the grid's end, Y_max) from the tables: origin zero, every patient is a training patient."""
    visits, outcomes = tables
    first = visits.group_by("patient_id").agg(pl.col("time").min().alias("first")).join(outcomes, on="patient_id")
    return min((first["time"] - first["first"]).max(), GRID[-1]), outcomes["time"].max()


def _expected(frame: pl.DataFrame, tables, s: pl.Expr, u: str) -> list[bool]:
    remaining, follow_up = _limits(tables)
    after_visit = s - pl.col("visit_time") + pl.col(u)
    return frame.select((after_visit > remaining) | (s + pl.col(u) > follow_up)).to_series().to_list()


def test_the_api_marks_what_the_rule_says(tables, model_dir):
    model = ehrseq.load(model_dir)
    remaining, follow_up = _limits(tables)
    assert remaining == GRID[-1] < follow_up
    assert (model.reach_.remaining, model.reach_.follow_up) == (remaining, follow_up)
    visits = tables[0]
    every = model.predict_risk(visits, HORIZONS, at="all")
    assert every["extrapolated"].to_list() == _expected(every, tables, pl.col("visit_time"), "horizon")
    by_grid = every.filter(pl.col("horizon") > remaining)
    by_follow_up = every.filter((pl.col("horizon") <= remaining) & pl.col("extrapolated"))
    assert by_grid["extrapolated"].all() and by_follow_up.height > 0  # each limit marks rows of its own
    assert not every.filter(~pl.col("extrapolated")).is_empty()
    at_landmark = model.predict_survival(visits, HORIZONS, landmark=LANDMARK)
    assert at_landmark["extrapolated"].to_list() == _expected(at_landmark, tables, pl.lit(LANDMARK), "horizon")
    median = model.predict_median(visits, at="all")
    assert median["median_extrapolated"].to_list() == _expected(median, tables, pl.col("visit_time"),
                                                                "median_remaining")
    assert median["median_extrapolated"].any()


def test_scoring_marks_the_same_rows_as_the_api(tables, model_dir, tmp_path):
    model = ehrseq.load(model_dir)
    visits = tables[0]
    summary = ehrseq.score(model_dir, visits, tmp_path / "out", HORIZONS, landmark=LANDMARK, progress=False)
    scored = summary.scan().collect().sort("patient_id", "horizon")
    api = model.predict_risk(visits, HORIZONS, landmark=LANDMARK).sort("patient_id", "horizon")
    assert scored["extrapolated"].to_list() == api["extrapolated"].to_list()
    assert 0 < summary.totals["rows_extrapolated"] == scored["extrapolated"].sum() < scored.height
    assert "reach beyond the training data" in str(summary)
    # the median of the landmark view: s − v + median > R_max or s + median > Y_max
    assert scored["median_extrapolated"].to_list() == _expected(scored, tables, pl.lit(LANDMARK), "median_remaining")
