"""A blend of two configurations (``DynamicSurvival(blend=..., blend_weight=...)``): the mixture of the two fitted
models, checked against the two models fitted on their own; its settings, saving, scoring and explanation."""

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.base import clone

import ehrseq
from ehrseq.cli import main
from ehrseq.datasets import load_pbcseq
from ehrseq.errors import ConfigError
from ehrseq.explain import explain
from ehrseq.models.model import ModelConfig

TINY = dict(d_model=8, hidden=(8,), epochs=3, n_models=2, linear_members=1, seed=0, progress=False)
#: a second model of another head, without the elapsed-time input: conditioned on survival to a landmark one by one
SECOND = {"head": "weibull", "any_time": False, "n_models": 1, "linear_members": 0, "lr": 3e-3}


@pytest.fixture(scope="module")
def tables():
    visits, outcomes = load_pbcseq(outcome="death")
    patients = outcomes["patient_id"].head(60).to_list()
    return (visits.filter(pl.col("patient_id").is_in(patients)),
            outcomes.filter(pl.col("patient_id").is_in(patients)))


@pytest.fixture(scope="module")
def fitted(tables):
    """The blend (second model weighing 0.3) and its two models fitted on their own."""
    blend = ehrseq.DynamicSurvival(**TINY, blend=SECOND, blend_weight=0.3).fit(*tables)
    first = ehrseq.DynamicSurvival(**TINY).fit(*tables)
    second = ehrseq.DynamicSurvival(**{**TINY, **SECOND}).fit(*tables)
    return blend, first, second


@pytest.mark.parametrize("landmark", [None, 1000.0])
def test_a_blend_predicts_the_mixture_of_its_two_models(fitted, tables, landmark):
    blend, first, second = fitted
    horizons = [365.0, 730.0, 1460.0]
    survival = {name: model.predict_survival(tables[0], horizons, landmark=landmark)["survival"].to_numpy()
                for name, model in (("blend", blend), ("first", first), ("second", second))}
    np.testing.assert_allclose(survival["blend"], 0.7 * survival["first"] + 0.3 * survival["second"], atol=1e-6)
    assert np.abs(survival["first"] - survival["second"]).max() > 0.01  # two different models
    risk = blend.predict_risk(tables[0], horizons, landmark=landmark)["risk"].to_numpy()
    np.testing.assert_allclose(risk, 1.0 - survival["blend"], atol=1e-6)


def test_a_blends_distributions_gathered_over_batches_are_its_predictions(fitted, tables):
    """predict_distribution at a landmark, 16 patients per batch: the members conditioned to the prediction time are
    stacked like the others, and the whole is the blend's prediction."""
    blend, _, _ = fitted
    frame, distribution = blend.predict_distribution(tables[0], landmark=1000.0, batch_size=16)
    assert tuple(distribution.batch_shape) == (frame.height,) and frame.height > 16
    horizons = torch.tensor([365.0, 730.0], dtype=distribution.dtype)
    offsets = torch.as_tensor(frame["offset"].to_numpy(), dtype=distribution.dtype)
    survival = distribution.conditional(offsets).survival(horizons)
    expected = blend.predict_survival(tables[0], [365.0, 730.0], landmark=1000.0, batch_size=16)
    order = np.argsort(frame["patient_id"].to_numpy(), kind="stable")  # the frame is in batch order
    expected = expected.sort("patient_id", "horizon")
    assert frame["patient_id"].to_numpy()[order].tolist() == expected["patient_id"].unique(maintain_order=True).to_list()
    np.testing.assert_allclose(survival[order].reshape(-1).numpy(), expected["survival"].to_numpy(), atol=1e-6)


def test_the_blend_weighs_its_members_and_saves_its_second_configuration(fitted):
    blend, first, second = fitted
    config = blend.model_config_
    weights = config.member_weights()
    assert len(weights) == config.n_members == len(blend.model_.members) == 4  # 2 networks + 1 linear, 1 Weibull
    assert sum(weights[:3]) == pytest.approx(0.7) and weights[3] == pytest.approx(0.3)
    assert config.blend.head.kind == "weibull" and config.member(3).head.kind == "weibull"
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert blend.model_.any_time  # the first model reads the elapsed time; the second is conditioned
    assert blend.reach_.remaining == min(first.reach_.remaining, second.reach_.remaining)
    assert set(blend.history_.to_polars()["member"].unique().to_list()) == {0.0, 1.0, 2.0, 3.0}


def test_a_blend_saves_loads_clones_and_scores_as_one_model(fitted, tables, tmp_path):
    blend, _, _ = fitted
    path = blend.save(tmp_path / "blend")
    loaded = ehrseq.load(path)
    expected = blend.predict_risk(tables[0], [365.0, 730.0], landmark=1000.0)
    np.testing.assert_array_equal(loaded.predict_risk(tables[0], [365.0, 730.0], landmark=1000.0)["risk"],
                                  expected["risk"])
    assert loaded.get_params()["blend"] == SECOND and loaded.get_params()["blend_weight"] == 0.3
    assert clone(blend).get_params() == blend.get_params()
    tables[0].write_parquet(tmp_path / "visits.parquet")
    ehrseq.score(path, tmp_path / "visits.parquet", tmp_path / "scores", [365.0, 730.0], landmark=1000.0,
                 progress=False)
    scores = pl.read_parquet(tmp_path / "scores" / "visits.parquet")
    np.testing.assert_allclose(scores["risk"].to_numpy(), expected["risk"].to_numpy(), atol=1e-6)


def test_a_blend_is_explained_by_its_own_risk(fitted, tables):
    blend, _, _ = fitted
    explanation = explain(blend, tables[0], 730.0, landmark=1000.0, at="last")
    assert explanation.relative_gap <= 0.01
    expected = blend.predict_risk(tables[0], 730.0, landmark=1000.0, at="last")
    np.testing.assert_allclose(explanation.risks["risk"], expected["risk"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("settings", "message"), [
    ({"blend": {"origin": "zero"}}, "origin are shared by both models"),
    ({"blend": {"log_skewed": False}}, "log_skewed are shared by both models"),
    ({"blend": {"learning_rate": 1e-3}}, "learning_rate are not settings"),
    ({"blend": {"n_models": 0}}, "blend=: the second model.s settings: n_models must be an int >= 1"),
    ({"blend": {}}, "non-empty mapping"),
    ({"blend": "lstm"}, "non-empty mapping"),
    ({"blend": {"head": "weibull"}, "blend_weight": 1.0}, "blend_weight=1.0"),
    ({"blend_weight": 0}, "blend_weight=0"),
])
def test_a_blend_refuses_settings_it_cannot_honour(settings, message):
    with pytest.raises(ConfigError, match=message):
        ehrseq.DynamicSurvival(**settings)


def test_a_blend_of_a_head_without_curves_in_days_is_refused(tables):
    model = ehrseq.DynamicSurvival(**{**TINY, "n_models": 1, "linear_members": 0}, blend={"head": "visit_hazard",
                                                                                      "any_time": False})
    with pytest.raises(ConfigError, match="a blend averages single-event survival curves in days"):
        model.fit(*tables)


def test_the_command_line_trains_a_blend_and_names_its_flags(tables, tmp_path, capsys):
    tables[0].write_csv(tmp_path / "v.csv")
    tables[1].write_csv(tmp_path / "o.csv")
    argv = ["train", "--visits", str(tmp_path / "v.csv"), "--outcomes", str(tmp_path / "o.csv"), "--d-model", "8",
            "--hidden", "8", "--epochs", "2", "--n-models", "1", "--linear-members", "0", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--blend", '{"encoder": "lstm"}', "--blend-weight", "0.25"]) == 0
    model = ehrseq.load(tmp_path / "m")
    assert model.get_params()["blend"] == {"encoder": "lstm"} and model.model_config_.blend.encoder.kind == "lstm"
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "n"), "--blend", '{"origin": "zero"}']) == 1
    err = capsys.readouterr().err
    assert "--blend: origin are shared by both models" in err and "blend=" not in err
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "n"), "--blend", "[1]"])
    assert "is not a JSON mapping of settings" in capsys.readouterr().err
