"""The estimator API on real data (PBC): fit, predictions, landmark semantics, persistence, determinism."""

import numpy as np
import polars as pl
import pytest
import torch

import ehrseq
from ehrseq.errors import CheckpointError, ConfigError
from ehrseq.estimator import DynamicSurvival

FAST = dict(epochs=2, batch_size=32, d_model=16, hidden=(16,), progress=False, device="cpu")


@pytest.fixture(scope="module")
def pbc():
    from ehrseq.datasets import load_pbcseq

    visits, outcomes = load_pbcseq()
    keep = outcomes["patient_id"].head(120).implode()
    return visits.filter(pl.col("patient_id").is_in(keep)), outcomes.filter(pl.col("patient_id").is_in(keep))


@pytest.fixture(scope="module")
def fitted(pbc):
    return DynamicSurvival(head="logistic_hazard", grid=8, **FAST).fit(*pbc)


def test_fit_records_history_report_and_grid(fitted, pbc):
    assert len(fitted.history_.records) == 2
    assert fitted.cohort_report_ is not None and "visits" in str(fitted.cohort_report_).lower()
    cuts = np.asarray(fitted.grid_.cuts)
    assert cuts[0] == 0 and len(cuts) == 9 and np.all(np.diff(cuts) > 0)


def test_predict_survival_is_a_valid_curve_per_patient(fitted, pbc):
    visits, _ = pbc
    times = [0.0, 180.0, 365.0, 1825.0, 20000.0]
    frame = fitted.predict_survival(visits, times)
    assert frame.columns == ["patient_id", "visit_time", "horizon", "survival", "extrapolated"]
    assert frame.height == 120 * len(times)
    curves = frame.sort("patient_id", "horizon")["survival"].to_numpy().reshape(120, len(times))
    assert np.allclose(curves[:, 0], 1.0)
    assert np.all(np.diff(curves, axis=1) <= 1e-7) and np.all((curves >= 0) & (curves <= 1))
    last_visits = visits.group_by("patient_id").agg(pl.col("time").max())
    joined = frame.filter(pl.col("horizon") == 0).join(last_visits, on="patient_id")
    assert (joined["visit_time"] == joined["time"]).all()


def test_at_all_gives_one_prediction_per_visit(fitted, pbc):
    visits, outcomes = pbc
    frame = fitted.predict_risk(visits, 365.0, at="all", outcomes=outcomes)
    assert frame.height == fitted.cohort(visits, outcomes).n_visits
    assert frame["risk"].is_between(0, 1).all()


def test_landmark_risk_is_the_conditional_of_the_last_visit_before_it(fitted, pbc):
    visits, _ = pbc
    s, horizon = 900.0, 365.0
    landmark = fitted.predict_risk(visits, horizon, landmark=s)
    frame, dist = fitted.predict_distribution(visits, landmark=s)
    expected = 1 - dist.survival(torch.tensor(frame["offset"].to_numpy() + horizon, dtype=torch.float32)[:, None])[:, 0] \
        / dist.survival(torch.tensor(frame["offset"].to_numpy(), dtype=torch.float32)[:, None])[:, 0]
    merged = landmark.join(frame.with_columns(pl.Series("expected", expected.numpy())), on="patient_id")
    assert np.allclose(merged["risk"], merged["expected"], atol=1e-5)
    # the prediction is made from the last visit at or before the landmark
    before = visits.filter(pl.col("time") <= s).group_by("patient_id").agg(pl.col("time").max().alias("last"))
    check = landmark.join(before, on="patient_id")
    assert check.height == landmark.height and (check["visit_time"] == check["last"]).all()
    # patients with no visit at or before the landmark get no prediction
    assert fitted.predict_risk(visits, horizon, landmark=-1.0).height == 0


def test_landmark_prediction_ignores_visits_after_the_landmark(fitted, pbc):
    visits, _ = pbc
    s = 700.0
    full = fitted.predict_risk(visits, 365.0, landmark=s)
    truncated = fitted.predict_risk(visits.filter(pl.col("time") <= s), 365.0, landmark=s)
    assert np.allclose(full.sort("patient_id")["risk"], truncated.sort("patient_id")["risk"], atol=1e-6)


def test_save_load_gives_identical_predictions(fitted, pbc, tmp_path):
    visits, _ = pbc
    path = fitted.save(tmp_path / "model")
    assert {p.name for p in path.iterdir()} >= {"manifest.json", "weights.safetensors", "model.json", "features.json"}
    loaded = ehrseq.load(path)
    a = fitted.predict_survival(visits, [100.0, 1000.0])
    b = loaded.predict_survival(visits, [100.0, 1000.0])
    assert a.equals(b)


def test_load_refuses_a_weight_file_from_another_model(fitted, tmp_path, pbc):
    other = DynamicSurvival(head="pmf", grid=5, **FAST).fit(*pbc)
    first = fitted.save(tmp_path / "a")
    second = other.save(tmp_path / "b")
    (first / "weights.safetensors").write_bytes((second / "weights.safetensors").read_bytes())
    with pytest.raises(CheckpointError):
        ehrseq.load(first)


def test_seeded_training_twice_gives_identical_weights(pbc):
    a = DynamicSurvival(seed=3, **FAST).fit(*pbc)
    b = DynamicSurvival(seed=3, **FAST).fit(*pbc)
    for (name, x), (_, y) in zip(a.model_.state_dict().items(), b.model_.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("head", ["lognormal", "pmf", "piecewise_linear_hazard", "weibull_mixture"])
def test_other_heads_fit_and_predict(head, pbc):
    visits, _ = pbc
    model = DynamicSurvival(head=head, grid=6, **FAST).fit(*pbc)
    risk = model.predict_risk(visits, [365.0, 730.0])
    assert risk["risk"].is_between(0, 1).all()
    wide = risk.pivot(on="horizon", index="patient_id", values="risk")
    assert (wide["730.0"] >= wide["365.0"] - 1e-6).all()
    median = model.predict_median(visits)
    assert (median["median_remaining"] > 0).all()


def test_competing_risks_head_predicts_cause_specific_incidence(pbc):
    from ehrseq.datasets import load_pbcseq

    visits, outcomes = load_pbcseq(outcome="competing")
    keep = outcomes["patient_id"].head(120).implode()
    visits, outcomes = visits.filter(pl.col("patient_id").is_in(keep)), outcomes.filter(pl.col("patient_id").is_in(keep))
    model = DynamicSurvival(head="competing_pmf", grid=6, **FAST).fit(visits, outcomes)
    total = model.predict_risk(visits, 1000.0)["risk"].to_numpy()
    death = model.predict_risk(visits, 1000.0, cause=1)["risk"].to_numpy()
    transplant = model.predict_risk(visits, 1000.0, cause=2)["risk"].to_numpy()
    assert np.allclose(death + transplant, total, atol=1e-5)


def test_visit_hazard_head_refuses_day_horizons_and_predicts_next_visit_risk(pbc):
    visits, _ = pbc
    model = DynamicSurvival(head="visit_hazard", **FAST).fit(*pbc)
    with pytest.raises(ConfigError, match="next visit"):
        model.predict_risk(visits, 365.0)
    risk = model.predict_next_visit_risk(visits)
    assert risk.height == 120 and risk["risk"].is_between(0, 1).all()


def test_misuse_is_reported_clearly(fitted, pbc):
    visits, _ = pbc
    with pytest.raises(ConfigError, match="not fitted"):
        DynamicSurvival().predict_risk(visits, 365.0)
    with pytest.raises(ConfigError, match="horizon"):
        fitted.predict_risk(visits, -1.0)
    with pytest.raises(ConfigError, match="at must be"):
        fitted.predict_risk(visits, 1.0, at="first")
    with pytest.raises(ConfigError, match="unknown loss term"):
        DynamicSurvival(loss="likelihood")
    with pytest.raises(ConfigError, match="does not apply"):
        DynamicSurvival(head="lognormal", loss="deephit_ranking", **FAST).fit(*pbc)
    with pytest.raises(ehrseq.DataError):
        fitted.predict_risk(visits.drop("time"), 365.0)
