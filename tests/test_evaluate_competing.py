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


class _ConstantHazardModel:
    """Predicts the cause-k incidence of two constant cause-specific hazards per patient (known rates)."""

    def __init__(self, rates: pl.DataFrame, cause: int) -> None:
        self.rates, self.cause = rates, cause

    def predict_risk(self, visits, horizon, *, landmark=None, outcomes=None):
        horizons = np.atleast_1d(np.asarray(horizon, dtype=float))
        rows = self.rates.join(pl.DataFrame({"horizon": horizons}), how="cross")
        total = pl.col("rate_1") + pl.col("rate_2")
        risk = pl.col(f"rate_{self.cause}") / total * (1 - (-total * pl.col("horizon")).exp())
        return rows.select("patient_id", "horizon", risk.alias("risk"))


def _competing_tables(n, seed):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.0005, 0.003, (n, 2))
    t1, t2, c = rng.exponential(1 / rates[:, 0]), rng.exponential(1 / rates[:, 1]), rng.exponential(900.0, n)
    time = np.round(np.minimum(np.minimum(t1, t2), c)) + 1.0
    event = np.where(c < np.minimum(t1, t2), 0, np.where(t1 <= t2, 1, 2))
    ids = np.arange(n) + 1000 * seed
    visits = pl.DataFrame({"patient_id": ids, "time": np.zeros(n), "x": rng.normal(size=n)})
    outcomes = pl.DataFrame({"patient_id": ids, "time": time, "event": event})
    rate_table = pl.DataFrame({"patient_id": ids, "rate_1": rates[:, 0], "rate_2": rates[:, 1]})
    return visits, outcomes, rate_table


@pytest.mark.parametrize("cause", [1, 2])
def test_landmark_metrics_count_competing_events_as_competing_not_censored(cause):
    from ehrseq.metrics import (
        CensoringDistribution,
        cause_specific_auc,
        cause_specific_brier_score,
        cause_specific_harrell_c,
        cause_specific_uno_c,
        harrell_c,
    )

    visits, outcomes, rates = _competing_tables(400, 0)
    _, train_outcomes, _ = _competing_tables(600, 1)
    model = _ConstantHazardModel(rates, cause)
    s, h = 0.0, 365.0
    table = landmark(model, visits, outcomes, [s], [h], train_outcomes, event=cause)

    time, event = outcomes["time"].to_numpy() - s, outcomes["event"].to_numpy()
    risk = model.predict_risk(visits, h).sort("patient_id")["risk"].to_numpy()
    censoring = CensoringDistribution.fit(train_outcomes["time"].to_numpy(), train_outcomes["event"].to_numpy() != 0)
    window = np.where(time <= h, event, 0)
    row = table.row(0, named=True)
    assert row["n_events"] == int(np.sum(window == cause)) > 0
    assert row["c_index"] == pytest.approx(cause_specific_harrell_c(np.minimum(time, h), window, risk, cause=cause).cindex)
    assert row["uno_c"] == pytest.approx(cause_specific_uno_c(time, event, risk, censoring, cause=cause, tau=h).cindex)
    assert row["auc"] == pytest.approx(cause_specific_auc(time, event, risk, [h], censoring, cause=cause).auc[0])
    assert row["brier"] == pytest.approx(
        cause_specific_brier_score(time, event, risk[:, None], [h], censoring, cause=cause)[0])
    assert row["observed_risk"] == pytest.approx(cumulative_incidence(time, event, cause, h))
    # the competing events matter: treated as censoring they would give another concordance
    as_censored = harrell_c(np.minimum(time, h), window == cause, risk).cindex
    assert abs(row["c_index"] - as_censored) > 1e-3
    assert 0.5 < row["c_index"] < 1 and 0.5 < row["auc"] < 1 and row["ibs"] > 0
