"""Heads, the model wrapper and the objective: every head with every supported loss term, the
life-table initialisation, and the globally normalised visit weighting."""

import math

import numpy as np
import pytest
import torch

from ehrseq.data import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.losses.functional.discrete import logistic_hazard_nll
from ehrseq.losses.terms import TERMS
from ehrseq.models.distributions import LogisticHazard
from ehrseq.models.encoders import EncoderConfig
from ehrseq.models.families import FAMILIES, life_table
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import DynamicSurvivalModel, ModelConfig
from ehrseq.objective import Objective, ObjectiveConfig

HEAD_KINDS = list(FAMILIES)

GRID = (0.0, 100.0, 200.0, 400.0, 800.0)


def make_batch(seed=0, b=6, m=5, f=3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1, 4, 2, 5])[:b]
    mask = torch.arange(m)[None] < lengths[:, None]
    time = torch.cumsum(torch.rand(b, m, generator=g) * 100, 1)
    y = time[torch.arange(b), lengths - 1] + torch.rand(b, generator=g) * 600 + 1
    remaining = (y[:, None] - time).clamp_min(1.0)
    bins = (torch.bucketize(remaining, torch.tensor(GRID)) - 1).clamp(0, len(GRID) - 1)
    return SequenceBatch(
        numeric=torch.randn(b, m, f, generator=g), numeric_missing=torch.zeros(b, m, f, dtype=torch.bool),
        categorical=torch.zeros(b, m, 0, dtype=torch.long), codes=torch.randint(0, 7, (b, m, 2), generator=g),
        time=time, gap=torch.diff(time, prepend=time[:, :1]), mask=mask, patient_index=torch.arange(b),
        remaining=remaining, event=torch.tensor([1, 0, 2, 1, 0, 1])[:b], event_visit=lengths - 1, bin=bins,
        upper=torch.full((b, m), math.inf), weight=torch.ones(b),
        event_times=torch.stack([y, y * 0.7], 1), event_flags=torch.tensor([[True, False]] * b),
    )


def model_for(kind, next_visit=True):
    head = HeadConfig(kind=kind, grid=GRID, num_causes=2, event_names=("death", "dm"), time_scale=200.0)
    encoder = EncoderConfig(kind="gru", n_numeric=3, code_vocab_size=7, d_model=16)
    return DynamicSurvivalModel(ModelConfig(encoder, head, next_visit=next_visit))


def term_options(term, kind):
    return {"horizon": 300.0} if term == "ranking" and FAMILIES[kind].in_days else {}


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_supported_term_gives_finite_loss_and_gradients(kind):
    torch.manual_seed(0)
    model = model_for(kind)
    batch = make_batch()
    family = FAMILIES[kind]
    cause = None if family.competing or family.multi_event else 1
    terms = {name: {"weight": 0.5, **term_options(name, kind)} for name, term in TERMS.items()
             if term.applies(FAMILIES[kind])}
    assert "nll" in terms
    for balance in ("fixed", "uncertainty"):
        objective = Objective(ObjectiveConfig.parse(terms, cause=cause, balance=balance), model.config, 4.0)
        result = objective(model(batch), batch)
        result.total.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.isfinite(result.total) and grads and all(torch.isfinite(g).all() for g in grads)
        assert set(result.parts) == set(terms)
        model.zero_grad()


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_heads_produce_valid_distributions(kind):
    model = model_for(kind).eval()
    dist = model(make_batch()).distribution
    assert tuple(dist.batch_shape) == (6, 5)
    family = FAMILIES[kind]
    if not family.in_days:
        return
    marginal = dist.overall() if family.competing else (dist[0] if family.multi_event else dist)
    s = marginal.survival(torch.tensor([0.0, 50.0, 300.0, 5000.0]))
    assert torch.allclose(s[..., 0], torch.ones(6, 5)) and (s.diff(dim=-1) <= 1e-6).all()


def test_unsupported_combinations_are_refused_with_alternatives():
    with pytest.raises(ConfigError, match="supports"):
        Objective(ObjectiveConfig.parse("crps_log_time"), model_for("weibull").config)
    with pytest.raises(ConfigError, match="next_visit=True"):
        Objective(ObjectiveConfig.parse({"nll": 1, "next_visit": 0.1}), model_for("pmf", next_visit=False).config)
    with pytest.raises(ConfigError, match="unknown loss term"):
        ObjectiveConfig.parse("rank")
    with pytest.raises(ConfigError, match="horizon"):
        obj = Objective(ObjectiveConfig.parse({"nll": 1, "ranking": 0.1}), model_for("lognormal").config)
        model = model_for("lognormal")
        obj(model(make_batch()), make_batch())


def test_objective_config_round_trip_and_parse_forms():
    config = ObjectiveConfig.parse({"nll": 1.0, "ranking": {"weight": 0.1, "horizon": 365}}, cause=1)
    assert [t.name for t in config.terms] == ["nll", "ranking"] and config.terms[1].options == {"horizon": 365}
    assert ObjectiveConfig.parse(config.to_dict()) == config


def test_visit_weighting_sums_per_batch_and_normalises_by_a_global_constant():
    """Under visit weighting a batch's loss is Σ per-visit terms / (Σ w × visits per patient): adding
    a patient with many visits to the batch adds its terms with the same per-visit weight."""
    model = model_for("logistic_hazard", next_visit=False)
    batch = make_batch()
    objective = Objective(ObjectiveConfig.parse("nll"), model.config, visits_per_patient=2.5)
    out = model(batch)
    total = logistic_hazard_nll(out.raw, batch.bin, batch.event, batch.mask, visit_weighting="visit", reduction="sum")
    assert torch.allclose(objective(out, batch).total, total / (6 * 2.5))
    auto_visit = Objective(ObjectiveConfig.parse("nll"), model_for("visit_hazard").config)
    assert auto_visit.visit_weighting == "patient"
    assert objective.visit_weighting == "visit"


def test_life_table_counts_match_a_loop():
    rng = np.random.default_rng(0)
    remaining = rng.exponential(300, 500)
    event = rng.integers(0, 3, 500)
    at_risk, events = life_table(remaining, event, GRID, num_causes=2)
    for l in range(len(GRID) - 1):
        in_bin = (remaining > GRID[l]) & (remaining <= GRID[l + 1])
        assert at_risk[l] == np.sum(remaining > GRID[l])
        for k in (1, 2):
            assert events[k - 1, l] == np.sum(in_bin & (event == k))


@pytest.mark.parametrize("kind", ["logistic_hazard", "pmf", "piecewise_constant_hazard", "piecewise_constant_density",
                                  "competing_pmf"])
def test_initial_bias_reproduces_the_life_table_at_the_knots(kind):
    rng = np.random.default_rng(1)
    remaining = rng.exponential(300, 2000)
    event = (rng.random(2000) < 0.6).astype(np.int64) * rng.integers(1, 3, 2000)
    config = HeadConfig(kind=kind, grid=GRID, time_scale=250.0, num_causes=2)
    at_risk, events = life_table(remaining, event, GRID)
    expected = np.concatenate([[1.0], np.cumprod(1 - events[0] / at_risk)])
    model = DynamicSurvivalModel(ModelConfig(EncoderConfig(kind="gru", n_numeric=1, d_model=8), config))
    model.head.initialize_bias(remaining, event, np.zeros(2000, dtype=bool))
    with torch.no_grad():
        model.head.net[-1].weight.zero_()
        dist = model.head.distribution(model.head(torch.zeros(1, 1, 8)))
    if config.family.competing:
        dist = dist.overall()
    assert np.allclose(dist.survival(torch.tensor(GRID))[0, 0].numpy(), expected, atol=1e-4)


def test_initial_bias_visit_hazard_is_the_share_of_event_visits():
    last = np.array([False, True, False, False, True])
    event = np.array([1, 1, 0, 0, 0])
    config = HeadConfig(kind="visit_hazard")
    bias = config.family.initial_bias(config, np.ones(5), event, last)
    assert bias[0] == pytest.approx(math.log(0.2 / 0.8))


def test_logistic_hazard_loss_equals_distribution_likelihood():
    """The logit-based loss and the distribution object agree (one prediction path)."""
    batch = make_batch()
    logits = torch.randn(6, 5, len(GRID) - 1, dtype=torch.float64)
    dist = LogisticHazard(logits, GRID)
    event = (batch.event > 0).long()
    ll = dist.discrete_log_likelihood(batch.bin, event[:, None].expand(-1, 5))
    expected = -(ll * batch.mask).sum() / batch.mask.sum()
    loss = logistic_hazard_nll(logits, batch.bin, event, batch.mask, visit_weighting="visit")
    assert torch.allclose(loss, expected)
