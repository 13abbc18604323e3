"""Example inputs of the ``nn.Module`` loss wrappers: keyword arguments of ``forward`` for a synthetic
batch of B patients × M visits (L grid bins), and the constructor arguments a wrapper needs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ehrseq.bench._synthetic import synthetic_logits, synthetic_targets
from ehrseq.losses import (
    CalibrationLoss,
    ContrastiveLoss,
    CoxPartialLikelihood,
    DeepHitLoss,
    DiscreteTimeCalibrationLoss,
    DiscreteTimeNLL,
    FocalLoss,
    LogisticHazardFocalLoss,
    LogisticHazardLoss,
    LogitNormalHazardNLL,
    LogNormalSurvivalCRPSLoss,
    LogTimeNormalCRPSLoss,
    MENSALoss,
    MultiTaskLoss,
    NextVisitLoss,
    RankingLoss,
    SmoothHazardPenalty,
    SurvivalCRPSLoss,
    SurvivalNLLLoss,
)
from ehrseq.models.distributions import LogNormal, MultiEvent, WeibullMixture

Inputs = Callable[[int, int, int, torch.Generator, torch.dtype], dict[str, Any]]


def _visit(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, 1, generator=g, dtype=dtype)
    return {"logits": synthetic_logits(b, m, scale=2.0, generator=g, dtype=dtype),
            **{k: labels[k] for k in ("event", "event_visit", "mask", "weight")}}


def _grid(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, bins, generator=g, dtype=dtype)
    return {"logits": synthetic_logits(b, m, bins, scale=2.0, generator=g, dtype=dtype),
            **{k: labels[k] for k in ("bin", "event", "mask", "weight")}}


def _deephit(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, bins, generator=g, dtype=dtype)
    return {"logits": synthetic_logits(b, m, bins + 1, scale=2.0, generator=g, dtype=dtype),
            **{k: labels[k] for k in ("bin", "event", "mask", "remaining", "event_visit", "weight")}}


def _ranking(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, bins, generator=g, dtype=dtype)
    return {"risk": synthetic_logits(b, generator=g, dtype=dtype),
            "time": labels["remaining"][torch.arange(b), labels["event_visit"]],
            "event": labels["event"], "weight": labels["weight"]}


def _cox(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    example = _ranking(b, m, bins, g, dtype)
    example["time"] = example["time"].round()  # whole days: tied times, as in real data
    return example


def _multitask(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    death, progression = (synthetic_logits(generator=g, dtype=dtype).detach().abs().requires_grad_() for _ in range(2))
    return {"losses": {"death": death, "progression": progression}}


def _contrastive(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, bins, generator=g, dtype=dtype)
    return {"states": synthetic_logits(b, m, 64, generator=g, dtype=dtype),
            **{k: labels[k] for k in ("event", "event_visit", "mask", "weight")}}


def _smooth(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    example = _grid(b, m, bins, g, dtype)
    return {k: example[k] for k in ("logits", "mask", "weight")}


def _logit_normal(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    example = _visit(b, m, bins, g, dtype)
    return {"mean_logits": example.pop("logits"),
            "log_scale": synthetic_logits(b, m, scale=0.5, generator=g, dtype=dtype), **example}


def _next_visit(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, bins, generator=g, dtype=dtype)
    features, vocabulary = 16, 64
    return {
        "mask": labels["mask"],
        "numeric_prediction": synthetic_logits(b, m, features, generator=g, dtype=dtype),
        "numeric": torch.randn(b, m, features, generator=g, dtype=dtype),
        "numeric_missing": torch.rand(b, m, features, generator=g) < 0.3,
        "code_logits": synthetic_logits(b, m, vocabulary, generator=g, dtype=dtype),
        "codes": torch.rand(b, m, vocabulary, generator=g) < 0.05,
        "weight": labels["weight"],
    }


def _lognormal(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    labels = synthetic_targets(b, m, 1, generator=g, dtype=dtype)
    loc = (math.log(365.0) + torch.randn(b, m, generator=g, dtype=dtype)).requires_grad_()
    log_scale = (0.3 * torch.randn(b, m, generator=g, dtype=dtype)).requires_grad_()
    return {"distribution": LogNormal(loc, log_scale), **{k: labels[k] for k in ("remaining", "event", "mask", "weight")}}


def _mensa(b: int, m: int, bins: int, g: torch.Generator, dtype: torch.dtype) -> dict[str, Any]:
    events, components = 3, 3
    labels = synthetic_targets(b, m, 1, generator=g, dtype=dtype)
    last_time = labels["time"].amax(dim=1, keepdim=True)
    spread = torch.empty(b, events, dtype=dtype).exponential_(1 / 365.0, generator=g)

    def parameter(offset: float, scale: float) -> torch.Tensor:
        return (offset + scale * torch.randn((b, m, events, components), generator=g, dtype=dtype)).requires_grad_()

    mixture = WeibullMixture(parameter(0.0, 1.0), parameter(math.log(365.0), 0.5), parameter(0.0, 0.3))
    return {
        "distribution": MultiEvent.stacked(mixture, names=("first", "second", "third")),
        "event_times": last_time + 1.0 + spread.cumsum(dim=1),  # event 0 before 1 before 2
        "event_flags": torch.rand(b, events, generator=g) < 0.5,
        "time": labels["time"], "mask": labels["mask"], "weight": labels["weight"],
    }


#: every wrapper exported by ehrseq.losses → its example inputs
EXAMPLES: dict[type, Inputs] = {
    DiscreteTimeNLL: _visit, LogisticHazardLoss: _grid, DeepHitLoss: _deephit, CalibrationLoss: _grid,
    DiscreteTimeCalibrationLoss: _visit, RankingLoss: _ranking, FocalLoss: _visit, LogisticHazardFocalLoss: _grid,
    MultiTaskLoss: _multitask, ContrastiveLoss: _contrastive, SmoothHazardPenalty: _smooth,
    LogitNormalHazardNLL: _logit_normal, NextVisitLoss: _next_visit, CoxPartialLikelihood: _cox,
    SurvivalNLLLoss: _lognormal, SurvivalCRPSLoss: _lognormal, LogNormalSurvivalCRPSLoss: _lognormal,
    LogTimeNormalCRPSLoss: _lognormal, MENSALoss: _mensa,
}
#: constructor arguments a wrapper cannot do without
CONFIGS: dict[type, dict[str, Any]] = {MultiTaskLoss: {"tasks": ["death", "progression"]},
                                       MENSALoss: {"trajectories": [[0, 2]]}}


def example_inputs(cls: type, batch_size: int, visits: int, bins: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    return EXAMPLES[cls](batch_size, visits, bins, generator, dtype)


def build(cls: type) -> torch.nn.Module:
    return cls(**CONFIGS.get(cls, {}))
