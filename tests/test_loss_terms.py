"""The loss-term registry and the ``nn.Module`` wrappers: every catalogue loss is a term or listed as
not one, names and configuration errors, per-visit normalisation as a property of the term, and
wrappers = functional cores."""

from __future__ import annotations

import inspect

import pytest
import torch
from loss_inputs import EXAMPLES, build, example_inputs

import ehrseq.losses as losses
import ehrseq.losses.functional as LF
from ehrseq.bench._synthetic import model_output, synthetic_step
from ehrseq.errors import ConfigError
from ehrseq.losses import (
    NOT_TERMS,
    TERMS,
    CoxPartialLikelihood,
    DeepHitLoss,
    DiscreteTimeNLL,
    FocalLoss,
    LogisticHazardLoss,
    LossTerm,
    MultiTaskLoss,
    NextVisitLoss,
    RankingLoss,
    get_term,
    register_term,
)
from ehrseq.losses.terms import TermContext
from ehrseq.models.distributions import MultiEvent, SurvivalDistribution
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.families import FAMILIES
from ehrseq.models.model import ModelConfig
from ehrseq.objective import Objective, ObjectiveConfig

MODULES = [value for value in vars(losses).values() if inspect.isclass(value) and issubclass(value, torch.nn.Module)]


def test_every_catalogue_module_belongs_to_one_term_or_is_listed_as_not_a_term():
    owners = {module: [name for name, term in TERMS.items() if module in term.modules] for module in MODULES}
    for module, names in owners.items():
        assert len(names) + (module in NOT_TERMS) == 1, (module.__name__, names)
    assert set(NOT_TERMS) == {CoxPartialLikelihood, MultiTaskLoss}
    assert set(EXAMPLES) == set(MODULES)


def _leaves(value):
    """The tensors requiring grad in example inputs (distribution parameters included)."""
    if isinstance(value, MultiEvent):
        value = value._stacked
    if isinstance(value, SurvivalDistribution):
        value = {name: getattr(value, name) for name in value.batched_fields}
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value] if isinstance(value, torch.Tensor) and value.requires_grad else []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_module_runs_on_its_example_inputs(module):
    loss = build(module).to(torch.float64)
    inputs = example_inputs(module, 6, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = loss(**inputs)
    assert value.shape == () and torch.isfinite(value)
    value.backward()
    leaves = _leaves(inputs)
    assert leaves and all(leaf.grad is not None and torch.isfinite(leaf.grad).all() for leaf in leaves)
    assert repr(loss).startswith(module.__name__)


def test_unknown_terms_and_invalid_hyper_parameters_raise_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'ranking'"):
        get_term("rankin")
    with pytest.raises(ConfigError, match="unknown loss term"):
        ObjectiveConfig.parse({"nll": 1.0, "smoothing": 0.1})
    for module, kwargs, pattern in [
        (RankingLoss, {"temperature": -1.0}, "temperature"),
        (DiscreteTimeNLL, {"reduction": "avg"}, "reduction"),
        (LogisticHazardLoss, {"visit_weighting": "patients"}, "visit_weighting"),
        (FocalLoss, {"gamma": -2.0}, "gamma"),
        (FocalLoss, {"alpha": 2.0}, "alpha"),
        (MultiTaskLoss, {"tasks": []}, "tasks"),
        (DeepHitLoss, {"reduction": "none"}, "reduction"),
        (DeepHitLoss, {"num_causes": 2, "cause_weights": [1.0]}, "cause_weights"),
        (CoxPartialLikelihood, {"ties": "exact"}, "ties"),
        (DiscreteTimeNLL, {"time_weights": [1.0, -1.0]}, "time_weights"),
        (DiscreteTimeNLL, {"cause": 0}, "cause"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            module(**kwargs)


def test_registering_checks_names_and_duplicates():
    term = TERMS["smooth"]
    with pytest.raises(ValueError, match="already registered"):
        register_term(term)
    with pytest.raises(ValueError, match="snake_case"):
        register_term(LossTerm("Smooth-2", term.compute, term.applies, True, "a copy"))
    assert get_term("smooth") is term


@pytest.mark.parametrize("name", sorted(TERMS))
def test_a_term_is_normalised_per_visit_exactly_when_it_is_registered_per_visit(name):
    """Under visit weighting the objective divides a per-visit term's batch sum by Σ w × visits per
    patient and leaves the other terms as they are; a term not registered per visit may not ask for
    the per-visit aggregation."""
    term = TERMS[name]
    kind = next(kind for kind, family in FAMILIES.items() if term.applies(family) and family.visit_weighting == "visit")
    head, batch, leaves = synthetic_step(kind, 5, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    options = {"horizon": 300.0} if name == "ranking" else {}
    config = ModelConfig(EncoderConfig(kind="gru", n_numeric=leaves["next_numeric"].shape[-1],
                                       code_vocab_size=leaves["next_code_logits"].shape[-1]), head.config,
                         next_visit=term.needs_next_visit)
    objective = Objective(ObjectiveConfig.parse({name: {"weight": 1.0, **options}}), config, visits_per_patient=2.5)
    assert objective.visit_weighting == "visit"
    total = objective(model_output(head, leaves), batch).total
    context = TermContext(head.config, "visit", None, name, term.per_visit)
    raw = term.compute(model_output(head, leaves), batch, context, dict(options))
    expected = raw / (float(batch.weight.sum()) * 2.5) if term.per_visit else raw
    assert torch.allclose(total, expected, rtol=1e-12)
    if not term.per_visit:
        with pytest.raises(ConfigError, match="not registered as per_visit"):
            context.per_visit_options(batch)


def test_the_objective_refuses_terms_that_do_not_apply_naming_the_heads_they_apply_to():
    head, batch, leaves = synthetic_step("weibull", 4, 3, 3, generator=torch.Generator().manual_seed(0))
    config = ModelConfig(EncoderConfig(kind="gru", n_numeric=2), head.config)
    with pytest.raises(ConfigError, match=r"does not apply to a 'weibull' head; it supports \['lognormal'\]"):
        Objective(ObjectiveConfig.parse("crps_log_time"), config)
    with pytest.raises(ConfigError, match="next_visit=True"):
        Objective(ObjectiveConfig.parse({"nll": 1.0, "next_visit": 0.1}), config)
    assert torch.isfinite(Objective(ObjectiveConfig.parse("crps"), config)(model_output(head, leaves), batch).total)


def test_wrappers_equal_their_functional_cores():
    g = torch.Generator().manual_seed(1)
    visit = example_inputs(DiscreteTimeNLL, 7, 5, 3, generator=g, dtype=torch.float64)
    module = DiscreteTimeNLL(censored_survives_last=True, time_weights=[1.0, 2.0], visit_weighting="visit")
    want = LF.discrete_time_nll(**visit, censored_survives_last=True,
                                time_weights=torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64),
                                visit_weighting="visit")
    assert module(**visit).item() == pytest.approx(want.item(), rel=1e-12)

    grid = example_inputs(LogisticHazardLoss, 7, 5, 3, generator=g, dtype=torch.float64)
    module = LogisticHazardLoss(bin_weights=[1.0, 0.5, 2.0]).to(torch.float64)
    want = LF.logistic_hazard_nll(**grid, bin_weights=torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64))
    assert module(**grid).item() == pytest.approx(want.item(), rel=1e-12)

    pmf = example_inputs(DeepHitLoss, 7, 5, 3, generator=g, dtype=torch.float64)
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
    inputs = example_inputs(NextVisitLoss, 5, 4, 3, generator=g, dtype=torch.float64)
    module = NextVisitLoss(numeric_weight=0.3, code_weight=2.0)
    numeric = LF.next_visit_numeric_loss(inputs["numeric_prediction"], inputs["numeric"], inputs["numeric_missing"],
                                         inputs["mask"], weight=inputs["weight"])
    codes = LF.next_visit_code_loss(inputs["code_logits"], inputs["codes"], inputs["mask"], weight=inputs["weight"])
    assert module(**inputs).item() == pytest.approx((0.3 * numeric + 2.0 * codes).item(), rel=1e-12)
    with pytest.raises(ValueError, match="numeric_missing"):
        module(inputs["mask"], numeric_prediction=inputs["numeric_prediction"])
    with pytest.raises(ValueError, match="give"):
        module(inputs["mask"])
