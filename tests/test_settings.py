"""The estimator's settings: one typed configuration behind the constructor, scikit-learn's
get_params/set_params and clone, the JSON round trip of saved models."""

import inspect
from dataclasses import fields

import pytest
from sklearn.base import clone

from ehrseq import DynamicSurvival
from ehrseq.data import TimeGrid
from ehrseq.datasets import simulate
from ehrseq.errors import ConfigError
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.heads import HeadConfig
from ehrseq.objective import ObjectiveConfig
from ehrseq.settings import EstimatorSettings


def configured() -> DynamicSurvival:
    return DynamicSurvival("transformer", {"kind": "pmf", "hidden": [8]}, {"nll": 1.0, "deephit_ranking": 0.1},
                           grid=[0.0, 100.0, 400.0], d_model=8, numeric=["x1"], epochs=3, seed=5, progress=False)


def test_the_constructor_signature_is_the_settings():
    parameters = list(inspect.signature(DynamicSurvival).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in fields(EstimatorSettings) if f.name != "_"]
    assert [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD] == ["encoder", "head", "loss"]
    assert DynamicSurvival("lstm", "pmf").get_params()["head"] == "pmf"
    with pytest.raises(TypeError):
        DynamicSurvival("gru", "pmf", "nll", 20)


def test_clone_gives_an_equal_unfitted_estimator():
    model = configured()
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert copy.settings == model.settings and not hasattr(copy, "model_")
    sim = simulate(30, 0)
    model.set_params(numeric=None, epochs=1)
    model.fit(sim.visits, sim.outcomes, validation=None)
    refit = clone(model)
    assert hasattr(model, "model_") and not hasattr(refit, "model_") and refit.get_params() == model.get_params()


def test_get_params_returns_what_was_given_and_set_params_checks_like_the_constructor():
    encoder = EncoderConfig(kind="gru", d_model=16)
    model = DynamicSurvival(encoder, HeadConfig(kind="lognormal"), "crps", lr=0.01)
    params = model.get_params()
    assert params["encoder"] is encoder and params["loss"] == "crps" and params["lr"] == 0.01
    assert model.encoder is encoder and model.lr == 0.01  # settings read as attributes
    model.set_params(epochs=7, lr=0.5)
    assert model.trainer_config.epochs == 7 and model.get_params()["lr"] == 0.5
    model.patience = None  # an assignment is a set_params, checked and applied at the next fit
    assert model.trainer_config.patience is None
    with pytest.raises(ConfigError, match="unknown loss term 'rank'"):
        model.set_params(loss="rank")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        model.epochs = 0
    with pytest.raises(ConfigError, match="no setting.*learning_rate; valid settings are encoder, head"):
        model.set_params(learning_rate=0.1)
    assert model.get_params()["epochs"] == 7  # a refused change leaves the settings as they were
    with pytest.raises(ConfigError, match="batch_size"):
        DynamicSurvival(batch_size=0)


def test_settings_round_trip_through_json():
    settings = EstimatorSettings(
        EncoderConfig(kind="lstm", d_model=12), HeadConfig(kind="weibull_mixture", num_components=2),
        ObjectiveConfig.parse({"nll": 1.0, "ranking": {"weight": 0.2, "horizon": 365}}, cause=2),
        grid=TimeGrid.manual([0.0, 10.0, 50.0]), hidden=(5, 3), numeric=("a", "b"), event_types=["death", "other"],
        cause=2, seed=9, device="cpu")
    restored = EstimatorSettings.from_dict(settings.to_dict())
    assert restored.to_dict() == settings.to_dict()
    for derived in ("encoder_settings", "head_settings", "objective", "cohort", "trainer"):
        assert getattr(restored, derived)() == getattr(settings, derived)()
    assert restored.grid.cuts.tolist() == [0.0, 10.0, 50.0]
    assert EstimatorSettings.from_dict({"epochs": 4}) == EstimatorSettings(epochs=4)  # missing: the defaults
    with pytest.raises(ConfigError, match="unknown estimator settings"):
        EstimatorSettings.from_dict({"n_model": 3})
