"""The head-family registry: one object per kind, consistent with the head it builds, and the only
place that knows the kinds (the model layer does not reach up into the losses)."""

import ast
import math
from pathlib import Path

import pytest
import torch

import ehrseq
from ehrseq.errors import ConfigError
from ehrseq.models.distributions import CompetingRisksDistribution, MultiEvent, SurvivalDistribution
from ehrseq.models.families import FAMILIES, HeadFamily, Likelihood, get_family, register_family
from ehrseq.models.heads import HeadConfig, SurvivalHead

GRID = (0.0, 50.0, 150.0, 400.0)


def config_for(kind: str, **changes) -> HeadConfig:
    return HeadConfig(kind=kind, grid=GRID, num_causes=3, event_names=("a", "b"), num_components=2,
                      time_scale=120.0, **changes)


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_a_family_builds_a_head_whose_raw_outputs_become_its_distribution(kind):
    config = config_for(kind)
    family = config.family
    head = SurvivalHead(config, input_dim=5)
    assert head.net[-1].out_features == family.num_outputs(config)
    raw = head(torch.randn(4, 3, 5))
    distribution = head.distribution(raw)
    assert isinstance(distribution, family.distribution_class)
    assert tuple(distribution.batch_shape) == (4, 3)
    assert isinstance(distribution, MultiEvent) == family.multi_event
    assert isinstance(distribution, CompetingRisksDistribution) == family.competing
    assert family.num_causes(config) == (3 if family.competing else 1)
    if family.hazard_logits:
        logits = family.hazard_logit(raw, config)
        assert logits.shape[:2] == (4, 3) and torch.equal(torch.sigmoid(logits).clamp(0, 1), torch.sigmoid(logits))
    else:
        with pytest.raises(ConfigError, match="hazard logits"):
            family.hazard_logit(raw, config)


@pytest.mark.parametrize("kind", [k for k, f in FAMILIES.items() if f.grid])
def test_grid_families_refuse_a_config_without_a_valid_grid(kind):
    for grid in (None, (0.0,), (1.0, 2.0), (0.0, 5.0, 5.0)):
        with pytest.raises(ConfigError, match="grid"):
            HeadConfig(kind=kind, grid=grid, num_causes=2, event_names=("a",))


def test_capability_flags_describe_the_distributions():
    """A head in days gives a survival distribution over days; the visit-indexed one does not, and
    only its family accepts the logit-normal hazard option."""
    for kind, family in FAMILIES.items():
        assert family.kind == kind
        if family.likelihood is Likelihood.DURATION:
            assert issubclass(family.distribution_class, SurvivalDistribution) and family.in_days
        if not family.in_days:
            assert family.visit_weighting == "patient"
    having = [kind for kind, family in FAMILIES.items() if family.hazard_uncertainty]
    with pytest.raises(ConfigError, match=f"only available for the {having[0]} head"):
        config_for("logistic_hazard", hazard_uncertainty=True)


def test_hazard_uncertainty_adds_the_log_scale_output_and_marginalises_the_hazard():
    config = HeadConfig(kind="visit_hazard", hazard_uncertainty=True)
    assert config.num_outputs == 2
    raw = torch.tensor([[[0.3, math.log(1e-6)], [-1.0, math.log(2.0)]]], dtype=torch.float64)
    hazard = config.family.distribution(raw, config, None).next_visit_risk()
    # σ → 0: the plain hazard σ(μ); σ = 2: E[σ(z)] by the trapezoid rule on a fine grid
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    expected = torch.trapezoid(torch.sigmoid(-1.0 + 2.0 * z) * density, z)
    assert hazard[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(0.3, dtype=torch.float64)).item(), abs=1e-9)
    assert hazard[0, 1] == pytest.approx(expected.item(), abs=1e-6)  # 32 nodes: 4e-7 on log p for σ ≤ 2


def test_the_registry_refuses_unknown_kinds_and_duplicate_or_malformed_names():
    with pytest.raises(ConfigError, match="unknown head kind 'gamma'"):
        get_family("gamma")
    with pytest.raises(ConfigError, match="unknown head kind"):
        HeadConfig(kind="gamma")

    class Duplicate(HeadFamily):
        kind = "lognormal"

    class Malformed(HeadFamily):
        kind = "Log Normal"

    with pytest.raises(ValueError, match="already registered"):
        register_family(Duplicate())
    with pytest.raises(ValueError, match="snake_case"):
        register_family(Malformed())
    assert get_family("lognormal") is FAMILIES["lognormal"]


def test_model_layer_does_not_import_the_losses():
    """Layering: data → models → losses/metrics → objective → estimator → scoring → CLI."""
    root = Path(ehrseq.__file__).parent / "models"
    imported = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    upward = sorted(m for m in imported if m.split(".")[:2] in (["ehrseq", "losses"], ["ehrseq", "objective"],
                                                                 ["ehrseq", "estimator"], ["ehrseq", "scoring"]))
    assert upward == []
