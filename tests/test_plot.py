"""Plots: the drawn data equal the model's predictions and independently computed Kaplan–Meier numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pytest  # noqa: E402
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402

from ehrseq.baselines import LandmarkCox  # noqa: E402
from ehrseq.datasets import simulate  # noqa: E402
from ehrseq.errors import ConfigError  # noqa: E402
from ehrseq.estimator import DynamicSurvival  # noqa: E402
from ehrseq.plot import calibration_curve, landmark_curves, patient_curves, training_history  # noqa: E402


@pytest.fixture(scope="module")
def data():
    sim = simulate(80, seed=5)
    return sim.visits, sim.outcomes


@pytest.fixture(scope="module")
def network(data):
    return DynamicSurvival(head="logistic_hazard", grid=6, epochs=1, batch_size=32, d_model=8, hidden=(8,),
                           progress=False, device="cpu").fit(*data, validation=None)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("which", ["network", "cox"])
def test_patient_curves_draw_the_per_visit_survival(request, data, which):
    visits, outcomes = data
    model = request.getfixturevalue("network") if which == "network" else LandmarkCox().fit(visits, outcomes)
    pid = outcomes.filter(pl.col("event") == 1)["patient_id"][0]
    patient_visits = visits.filter((pl.col("patient_id") == pid)
                                   & (pl.col("time") < outcomes.filter(pl.col("patient_id") == pid)["time"][0]))
    ax = patient_curves(model, visits, pid, horizon=700.0, outcomes=outcomes, points=15)
    curves = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(curves) == patient_visits.height
    durations = np.linspace(0.0, 700.0, 15)
    for line, visit_time in zip(curves, patient_visits["time"]):
        expected = model.predict_survival(patient_visits.filter(pl.col("time") <= visit_time), durations,
                                          landmark=visit_time if which == "cox" else None,
                                          outcomes=outcomes.filter(pl.col("patient_id") == pid))
        np.testing.assert_allclose(line.get_xdata(), visit_time + durations)
        np.testing.assert_allclose(line.get_ydata(), expected["survival"].to_numpy(), rtol=1e-5, atol=1e-6)
        assert line.get_ydata()[0] == pytest.approx(1.0)
    colors = [tuple(line.get_color()) for line in curves]
    assert len(set(colors)) == len(colors)  # colored by visit order
    marker = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(marker) == 1 and marker[0].get_xdata()[0] == outcomes.filter(pl.col("patient_id") == pid)["time"][0]


def test_patient_curves_rejects_unknown_patient(data, network):
    with pytest.raises(ConfigError, match="no visit"):
        patient_curves(network, data[0], -1)


def test_calibration_curve_groups_predictions_and_kaplan_meier(data):
    visits, outcomes = data
    cox = LandmarkCox().fit(visits, outcomes)
    s, horizon, bins = 200.0, 500.0, 4
    ax = calibration_curve(cox, visits, outcomes, horizon=horizon, landmark=s, bins=bins)
    predicted, observed = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()

    risk = cox.predict_risk(visits, horizon, landmark=s, outcomes=outcomes).join(outcomes, on="patient_id")
    risk = risk.filter(pl.col("time") > s).sort("risk", maintain_order=True)
    groups = np.array_split(np.arange(risk.height), bins)
    for k, rows in enumerate(groups):
        part = risk[rows]
        assert predicted[k] == pytest.approx(part["risk"].mean())
        times, values = kaplan_meier_estimator(part["event"].to_numpy() == 1, part["time"].to_numpy() - s)
        below = times <= horizon
        assert observed[k] == pytest.approx(1.0 - (values[below][-1] if below.any() else 1.0))
    assert np.all(np.diff(predicted) >= 0)
    diagonal = ax.lines[1]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())


def test_landmark_curves_one_line_per_model_and_horizon():
    results = pl.DataFrame({
        "model": ["a"] * 4 + ["b"] * 4,
        "landmark": [365.25, 730.5] * 4,
        "horizon": [365.25, 365.25, 1095.75, 1095.75] * 2,
        "c_index": [0.7, 0.72, 0.65, None, 0.8, 0.81, 0.75, 0.74],
    })
    ax = landmark_curves(results)
    assert len(ax.lines) == 4
    first = ax.lines[0]
    np.testing.assert_allclose(first.get_xdata(), [1.0, 2.0])
    np.testing.assert_allclose(first.get_ydata(), [0.7, 0.72])
    assert len(ax.lines[1].get_xdata()) == 1  # the null value is not drawn
    with pytest.raises(ConfigError, match="no column"):
        landmark_curves(results, metric="auc")


def test_training_history_wraps_the_history(network):
    ax = training_history(network)
    losses = [r["train_loss"] for r in network.history_.records]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), losses)
