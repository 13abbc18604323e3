"""Landmark evaluation with competing events: Aalen–Johansen observed risk and competing-risks models."""

import numpy as np
import polars as pl
import pytest
from sksurv.nonparametric import cumulative_incidence_competing_risks, kaplan_meier_estimator

from ehrseq.data import split_tables
from ehrseq.datasets import load_pbcseq
from ehrseq.estimator import DynamicSurvival
from ehrseq.evaluate import cumulative_incidence, landmark


def _aalen_johansen_loop(time, event_type, k, horizon):
    """F_k(t) = Σ_{t_j ≤ t} S(t_j−) d_kj / n_j, written out one distinct time at a time."""
    total, survival = 0.0, 1.0
    for t in np.unique(time):
        if t > horizon:
            break
        at_risk = np.sum(time >= t)
        d_any = np.sum((time == t) & (event_type != 0))
        d_k = np.sum((time == t) & (event_type == k))
        total += survival * d_k / at_risk
        survival *= 1.0 - d_any / at_risk
    return total


@pytest.mark.parametrize("seed", range(5))
def test_cumulative_incidence_matches_a_loop_and_scikit_survival(seed):
    rng = np.random.default_rng(seed)
    n = 300
    time = rng.integers(1, 60, size=n).astype(float)  # many ties
    event_type = rng.choice([0, 1, 2], size=n, p=[0.4, 0.35, 0.25])
    horizons = (5.0, 20.0, 45.5, 100.0)
    x, curves = cumulative_incidence_competing_risks(event_type, time)
    for k in (1, 2):
        for h in horizons:
            ours = cumulative_incidence(time, event_type, k, h)
            assert ours == pytest.approx(_aalen_johansen_loop(time, event_type, k, h), abs=1e-12)
            reference = curves[k][np.searchsorted(x, h, side="right") - 1]
            assert ours == pytest.approx(reference, abs=1e-12)


def test_cumulative_incidence_without_competing_events_is_one_minus_kaplan_meier():
    rng = np.random.default_rng(7)
    time = rng.exponential(10, size=200).round(1)
    event_type = rng.integers(0, 2, size=200)
    x, survival = kaplan_meier_estimator(event_type == 1, time)
    for h in (2.0, 8.0, 30.0):
        km = survival[np.searchsorted(x, h, side="right") - 1]
        assert cumulative_incidence(time, event_type, 1, h) == pytest.approx(1 - km, abs=1e-12)


@pytest.mark.slow
def test_competing_risks_model_is_evaluated_on_its_cause_specific_incidence():
    visits, outcomes = load_pbcseq(outcome="competing")  # 1 = death, 2 = transplant
    train, test = split_tables(visits, outcomes, (0.75, 0.25), seed=0)
    model = DynamicSurvival(head="competing_pmf", grid=10, d_model=16, hidden=(16,), epochs=8, seed=0,
                            progress=False).fit(*train)
    for cause in (1, 2):
        table = landmark(model, *test, [365.0, 730.0], [1095.0], train, event=cause)
        direct = (model.predict_risk(test[0], 1095.0, landmark=365.0, cause=cause, outcomes=test[1])
                  .join(test[1], on="patient_id").filter(pl.col("time") > 365.0))  # PBC's origin is day 0
        assert table["n_at_risk"][0] == direct.height
        assert table["mean_risk"][0] == pytest.approx(direct["risk"].mean(), abs=1e-9)
        assert table["mean_risk"].is_between(0, 1).all() and table["observed_risk"].is_between(0, 1).all()
    deaths = landmark(model, *test, [365.0], [1095.0], train, event=1)
    transplants = landmark(model, *test, [365.0], [1095.0], train, event=2)
    # the cause-specific incidences are distinct quantities: death is far more frequent than transplant
    assert deaths["mean_risk"][0] > transplants["mean_risk"][0]
    assert deaths["observed_risk"][0] > transplants["observed_risk"][0]
