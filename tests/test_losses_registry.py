"""Loss registry and ``nn.Module`` wrappers: names, configuration errors, wrappers = functional cores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ehrseq.losses.functional as LF
from ehrseq.errors import ConfigError
from ehrseq.losses import (
    DeepHitLoss,
    DiscreteTimeNLL,
    LogisticHazardLoss,
    NextVisitLoss,
    available_losses,
    get_loss,
    loss_class,
    registry,
)

CATALOGUE = {
    "calibration", "contrastive", "cox", "deephit", "discrete_time_calibration", "discrete_time_nll", "focal",
    "logistic_hazard", "logistic_hazard_focal", "logit_normal_hazard", "multitask", "next_visit", "ranking",
    "smooth_hazard",
}


def _build(name):
    cls = loss_class(name)
    return get_loss(name, **(cls.example_config() if hasattr(cls, "example_config") else {}))


def test_catalogue_losses_are_registered():
    assert CATALOGUE <= set(available_losses())
    assert available_losses() == sorted(available_losses())


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_registered_loss_runs_on_its_example_inputs(name):
    loss = _build(name)
    inputs = type(loss).example_inputs(6, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = loss.to(torch.float64)(**inputs)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    assert repr(loss).startswith(type(loss).__name__)


def test_unknown_names_and_hyper_parameters_raise_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'deephit'"):
        get_loss("deephitt")
    with pytest.raises(ConfigError, match="accepted: .*temperature"):
        get_loss("ranking", temprature=0.5)
    for name, kwargs, pattern in [
        ("ranking", {"temperature": -1.0}, "temperature"),
        ("discrete_time_nll", {"reduction": "avg"}, "reduction"),
        ("logistic_hazard", {"visit_weighting": "patients"}, "visit_weighting"),
        ("focal", {"gamma": -2.0}, "gamma"),
        ("focal", {"alpha": 2.0}, "alpha"),
        ("multitask", {"tasks": []}, "tasks"),
        ("deephit", {"reduction": "none"}, "reduction"),
        ("deephit", {"num_causes": 2, "cause_weights": [1.0]}, "cause_weights"),
        ("cox", {"ties": "exact"}, "ties"),
        ("discrete_time_nll", {"time_weights": [1.0, -1.0]}, "time_weights"),
        ("discrete_time_nll", {"cause": 0}, "cause"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            get_loss(name, **kwargs)


def test_registering_checks_names_classes_and_duplicates(monkeypatch):
    monkeypatch.setattr(registry, "_LOSSES", dict(registry._LOSSES))

    @registry.register_loss("my_loss")
    class MyLoss(nn.Module):
        def forward(self, x):
            return x.sum()

    assert "my_loss" in available_losses() and isinstance(get_loss("my_loss"), MyLoss)
    with pytest.raises(ValueError, match="already registered"):
        registry.register_loss("my_loss")(DiscreteTimeNLL)
    with pytest.raises(ValueError, match="snake_case"):
        registry.register_loss("My-Loss")
    with pytest.raises(TypeError, match="nn.Module"):
        registry.register_loss("not_a_module")(object)


def test_wrappers_equal_their_functional_cores():
    g = torch.Generator().manual_seed(1)
    visit = DiscreteTimeNLL.example_inputs(7, 5, 3, generator=g, dtype=torch.float64)
    module = DiscreteTimeNLL(censored_survives_last=True, time_weights=[1.0, 2.0], visit_weighting="visit")
    want = LF.discrete_time_nll(**visit, censored_survives_last=True,
                                time_weights=torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64),
                                visit_weighting="visit")
    assert module(**visit).item() == pytest.approx(want.item(), rel=1e-12)

    grid = LogisticHazardLoss.example_inputs(7, 5, 3, generator=g, dtype=torch.float64)
    module = LogisticHazardLoss(bin_weights=[1.0, 0.5, 2.0]).to(torch.float64)
    want = LF.logistic_hazard_nll(**grid, bin_weights=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
    assert module(**grid).item() == pytest.approx(want.item(), rel=1e-12)

    pmf = DeepHitLoss.example_inputs(7, 5, 3, generator=g, dtype=torch.float64)
    module = DeepHitLoss(ranking_weight=0.5, sigma=0.2)
    nll = LF.pmf_nll(pmf["logits"], pmf["bin"], pmf["event"], pmf["mask"], weight=pmf["weight"])
    ranking = LF.deephit_ranking_loss(pmf["logits"], pmf["bin"], pmf["remaining"], pmf["event"], pmf["mask"],
                                      event_visit=pmf["event_visit"], sigma=0.2, weight=pmf["weight"])
    assert module(**pmf).item() == pytest.approx((nll + 0.5 * ranking).item(), rel=1e-12)
    likelihood_only = DeepHitLoss(ranking_weight=0.0)
    assert likelihood_only(pmf["logits"], pmf["bin"], pmf["event"], pmf["mask"], weight=pmf["weight"]).item() == \
        pytest.approx(nll.item(), rel=1e-12)


def test_time_weights_are_cut_or_extended_to_the_batch_and_saved():
    module = DiscreteTimeNLL(time_weights=[3.0, 1.0, 0.5])
    logits = torch.zeros(1, 1, dtype=torch.float64)
    one_visit = module(logits, torch.tensor([1]), torch.tensor([0]), torch.ones(1, 1))
    assert one_visit.item() == pytest.approx(3 * torch.nn.functional.softplus(torch.tensor(0.0)).item())
    restored = DiscreteTimeNLL(time_weights=[0.0, 0.0, 0.0])
    restored.load_state_dict(module.state_dict())
    assert restored.time_weights.tolist() == [3.0, 1.0, 0.5]


def test_next_visit_loss_weights_and_requires_targets():
    g = torch.Generator().manual_seed(2)
    inputs = NextVisitLoss.example_inputs(5, 4, 3, generator=g, dtype=torch.float64)
    module = NextVisitLoss(numeric_weight=0.3, code_weight=2.0)
    numeric = LF.next_visit_numeric_loss(inputs["numeric_prediction"], inputs["numeric"], inputs["numeric_missing"],
                                         inputs["mask"], weight=inputs["weight"])
    codes = LF.next_visit_code_loss(inputs["code_logits"], inputs["codes"], inputs["mask"], weight=inputs["weight"])
    assert module(**inputs).item() == pytest.approx((0.3 * numeric + 2.0 * codes).item(), rel=1e-12)
    with pytest.raises(ValueError, match="numeric_missing"):
        module(inputs["mask"], numeric_prediction=inputs["numeric_prediction"])
    with pytest.raises(ValueError, match="give"):
        module(inputs["mask"])
