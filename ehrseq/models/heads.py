"""Heads: encoder state per visit ``[B, M, D]`` → the parameters of a per-visit survival distribution.

A head is a small MLP (``hidden`` layers, ReLU, dropout) ending in a linear layer with as many outputs
as its family needs, followed by a fixed, documented parametrisation:

=============================  ============  ===============================================================
kind                           outputs       distribution (``ehrseq.models.distributions``)
=============================  ============  ===============================================================
``visit_hazard``               1 (or 2)      :class:`VisitHazard` (h = σ(z); time unit: visit intervals);
                                             with ``hazard_uncertainty`` the logit is N(z_0, e^{2 z_1})
                                             and h is its predictive mean E[σ(z)] (Gauss–Hermite)
``logistic_hazard``            L             :class:`LogisticHazard` on the grid (h_l = σ(z_l))
``pmf``                        L + 1         :class:`PMF` (DeepHit; softmax, last = beyond τ_L)
``piecewise_constant_hazard``  L             :class:`PiecewiseConstantHazard` (h_l = e^{z_l} per day)
``piecewise_linear_hazard``    L + 1         :class:`PiecewiseLinearHazard` (hazard at the knots)
``piecewise_constant_density`` L + 1         :class:`PiecewiseConstantDensity` (L bins + tail mass)
``piecewise_linear_density``   L + 2         :class:`PiecewiseLinearDensity`
``lognormal``                  2             :class:`LogNormal`: loc = z_0 + log(time_scale), log σ = z_1
``weibull``                    2             :class:`Weibull`: log λ = z_0 + log(time_scale), log k = z_1
``weibull_mixture``            3·C           :class:`WeibullMixture` (gates, log λ_c − log(time_scale), log k_c)
``competing_pmf``              K·L + 1       :class:`CompetingPMF` (joint softmax over causes × bins)
``multi_event``                E·3·C         :class:`MultiEvent` of per-event Weibull mixtures (MENSA)
=============================  ============  ===============================================================

``time_scale`` (days) centres the parametric families: with zero outputs, the predicted median remaining
time is about ``time_scale`` (the estimator sets it to the median observed remaining time of the training
data). Hazard-rate families (piecewise hazards) are likewise offset by −log(time_scale) so that a zero
output means a rate of one event per ``time_scale`` days.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ehrseq.errors import ConfigError
from ehrseq.models.distributions import (
    PMF,
    CompetingPMF,
    LogisticHazard,
    LogNormal,
    MultiEvent,
    PiecewiseConstantDensity,
    PiecewiseConstantHazard,
    PiecewiseLinearDensity,
    PiecewiseLinearHazard,
    SurvivalDistribution,
    VisitHazard,
    Weibull,
    WeibullMixture,
)
from ehrseq.models.distributions._math import logit_normal_log_probabilities
from ehrseq.models.distributions.base import CompetingRisksDistribution

Prediction = SurvivalDistribution | CompetingRisksDistribution | MultiEvent

GRID_KINDS = (
    "logistic_hazard",
    "pmf",
    "piecewise_constant_hazard",
    "piecewise_linear_hazard",
    "piecewise_constant_density",
    "piecewise_linear_density",
    "competing_pmf",
)
PARAMETRIC_KINDS = ("lognormal", "weibull", "weibull_mixture", "multi_event")
HEAD_KINDS = ("visit_hazard", *GRID_KINDS, *PARAMETRIC_KINDS)


@dataclass(frozen=True)
class HeadConfig:
    """Everything that defines a head (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    ``grid``: horizon cut points in days (0 = τ_0 < … < τ_L) for grid kinds; ``num_causes`` K for
    ``competing_pmf``; ``event_names`` for ``multi_event``; ``num_components`` C for mixtures;
    ``hazard_uncertainty`` (``visit_hazard`` only) adds a log-scale output for the logit-normal
    hazard likelihood.
    """

    kind: str = "logistic_hazard"
    grid: tuple[float, ...] | None = None
    hidden: tuple[int, ...] = (64,)
    dropout: float = 0.1
    time_scale: float = 365.25
    num_components: int = 3
    num_causes: int = 1
    event_names: tuple[str, ...] = field(default_factory=tuple)
    hazard_uncertainty: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "event_names", tuple(str(e) for e in self.event_names))
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(float(g) for g in self.grid))
        self.validate()

    def validate(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ConfigError(f"unknown head kind {self.kind!r}; choose one of {list(HEAD_KINDS)}")
        if self.kind in GRID_KINDS:
            grid = self.grid
            if grid is None or len(grid) < 2 or grid[0] != 0.0 or any(b <= a for a, b in zip(grid, grid[1:])):
                raise ConfigError(
                    f"head {self.kind!r} needs a grid of at least 2 strictly increasing cut points starting at 0"
                )
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ConfigError(f"time_scale must be a positive number of days, got {self.time_scale}")
        if self.num_components < 1:
            raise ConfigError(f"num_components must be >= 1, got {self.num_components}")
        if self.kind == "competing_pmf" and self.num_causes < 1:
            raise ConfigError(f"num_causes must be >= 1, got {self.num_causes}")
        if self.kind == "multi_event" and not self.event_names:
            raise ConfigError("a multi_event head needs event_names")
        if self.hazard_uncertainty and self.kind != "visit_hazard":
            raise ConfigError("hazard_uncertainty is only available for the visit_hazard head")

    @property
    def num_bins(self) -> int:
        return len(self.grid) - 1 if self.grid is not None else 0

    @property
    def num_outputs(self) -> int:
        """Width of the head's last linear layer."""
        L, C = self.num_bins, self.num_components
        return {
            "visit_hazard": 2 if self.hazard_uncertainty else 1,
            "logistic_hazard": L,
            "pmf": L + 1,
            "piecewise_constant_hazard": L,
            "piecewise_linear_hazard": L + 1,
            "piecewise_constant_density": L + 1,
            "piecewise_linear_density": L + 2,
            "lognormal": 2,
            "weibull": 2,
            "weibull_mixture": 3 * C,
            "competing_pmf": self.num_causes * L + 1,
            "multi_event": len(self.event_names) * 3 * C,
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["grid"] = list(self.grid) if self.grid is not None else None
        values["hidden"] = list(self.hidden)
        values["event_names"] = list(self.event_names)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HeadConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown head settings: {sorted(unknown)}")
        values = dict(values)
        for key in ("grid", "hidden", "event_names"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> HeadConfig:
        return replace(self, **changes)


def life_table(remaining: np.ndarray, event: np.ndarray, grid: Sequence[float],
               num_causes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pooled discrete-time life table of per-visit remaining times on the grid.

    Returns (at_risk ``[L]``, events ``[K, L]``): visits whose remaining time reaches bin l, and those
    among them with an event of cause k inside bin l (the grid convention: censored inside a bin counts
    as surviving it; beyond τ_L nothing is counted).
    """
    cuts = np.asarray(grid, dtype=np.float64)
    bins = np.clip(np.searchsorted(cuts, remaining, side="left") - 1, 0, cuts.size - 1)
    L = cuts.size - 1
    at_risk = np.bincount(np.minimum(bins, L), minlength=L + 1)[::-1].cumsum()[::-1][:L].astype(np.float64)
    events = np.zeros((num_causes, L))
    inside = (bins < L) & (event > 0)
    causes = np.clip(event[inside], 1, num_causes) - 1 if num_causes > 1 else np.zeros(inside.sum(), dtype=np.int64)
    np.add.at(events, (causes, bins[inside]), 1.0)
    return at_risk, events


def initial_bias(config: HeadConfig, remaining: np.ndarray, event: np.ndarray,
                 last_visit: np.ndarray) -> np.ndarray | None:
    """Output-layer bias under which the head predicts the pooled life table of (remaining, event).

    ``remaining`` ``[N]``, ``event`` ``[N]`` (0 censored, 1..K) and ``last_visit`` ``[N]`` (True at each
    patient's last visit) are per training visit. Grid heads get
    their hazards/masses/densities from the life table (hazards clipped to [1e-4, 1 − 1e-4]); the
    visit-indexed head the share of visits followed by the event before the next visit; parametric
    heads keep zero biases (they are centred by ``time_scale``). Returns ``None`` when nothing is set.
    """
    kind = config.kind
    event = np.asarray(event)
    remaining = np.asarray(remaining, dtype=np.float64)
    if kind == "visit_hazard":
        share = float(np.clip(np.mean(np.asarray(last_visit) & (event > 0)), 1e-4, 1 - 1e-4))
        bias = np.zeros(config.num_outputs)
        bias[0] = math.log(share) - math.log1p(-share)
        return bias
    if kind not in GRID_KINDS:
        return None
    causes = config.num_causes if kind == "competing_pmf" else 1
    at_risk, events = life_table(remaining, event if kind == "competing_pmf" else (event > 0).astype(np.int64),
                                 config.grid, causes)
    eps = 1e-4
    hazard_by_cause = events / np.maximum(at_risk, 1.0)
    hazard = np.clip(hazard_by_cause.sum(axis=0), eps, 1 - eps)
    log_survival = np.concatenate([[0.0], np.cumsum(np.log1p(-hazard))])  # log S(τ_l), l = 0..L
    widths = np.diff(np.asarray(config.grid, dtype=np.float64))
    log_mass = log_survival[:-1] + np.log(hazard)  # log P(R in bin l)
    rate = -np.log1p(-hazard) / widths  # constant hazard per day inside each bin
    log_scale = math.log(config.time_scale)
    if kind == "logistic_hazard":
        return np.log(hazard) - np.log1p(-hazard)
    if kind == "pmf":
        return np.concatenate([log_mass, log_survival[-1:]])
    if kind == "competing_pmf":
        share = np.clip(hazard_by_cause, eps, None) / np.clip(hazard_by_cause, eps, None).sum(axis=0)
        per_cause = log_mass[None, :] + np.log(share)
        return np.concatenate([per_cause.reshape(-1), log_survival[-1:]])
    if kind == "piecewise_constant_hazard":
        return np.log(rate) + log_scale
    if kind == "piecewise_linear_hazard":
        knots = np.concatenate([rate[:1], 0.5 * (rate[:-1] + rate[1:]), rate[-1:]])
        return np.log(knots) + log_scale
    density = np.exp(log_mass) / widths
    if kind == "piecewise_constant_density":
        return np.concatenate([np.log(density), log_survival[-1:]])
    knots = np.concatenate([density[:1], 0.5 * (density[:-1] + density[1:]), density[-1:]])
    return np.concatenate([np.log(knots), log_survival[-1:]])  # piecewise_linear_density


def _mlp(input_dim: int, hidden: Sequence[int], output_dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


class SurvivalHead(nn.Module):
    """``forward(states [B, M, D]) -> raw [B, M, P]``; :meth:`distribution` turns raw outputs into the
    family's distribution object (see the module docstring for every kind's parametrisation)."""

    def __init__(self, config: HeadConfig, input_dim: int) -> None:
        super().__init__()
        self.config = config
        self.net = _mlp(input_dim, config.hidden, config.num_outputs, config.dropout)
        self.log_time_scale = math.log(config.time_scale)
        if config.grid is not None:
            self.register_buffer("grid", torch.tensor(config.grid, dtype=torch.float32), persistent=False)
        else:
            self.grid = None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)

    @torch.no_grad()
    def initialize_bias(self, remaining: np.ndarray, event: np.ndarray, last_visit: np.ndarray) -> None:
        """Start from the pooled life table of the training visits (see :func:`initial_bias`).

        Gradient steps move a bias by about the learning rate, so without this a grid head needs
        thousands of steps just to bring 20 hazards from σ(0) = 0.5 to realistic values; with it, the
        untrained model already predicts the marginal distribution of the remaining time and training
        only learns how the history shifts it.
        """
        bias = initial_bias(self.config, remaining, event, last_visit)
        if bias is not None:
            last = self.net[-1]
            last.bias.copy_(torch.as_tensor(bias, dtype=last.bias.dtype))

    def distribution(self, raw: torch.Tensor) -> Prediction:
        """The per-visit distribution of batch shape ``raw.shape[:-1]`` (``[B, M]``)."""
        cfg = self.config
        kind = cfg.kind
        grid = self.grid.to(raw.dtype) if self.grid is not None else None
        shift = self.log_time_scale
        if kind == "visit_hazard":
            if cfg.hazard_uncertainty:
                log_p, log_not_p = logit_normal_log_probabilities(raw[..., 0], raw[..., 1])
                return VisitHazard(log_p - log_not_p)
            return VisitHazard(raw[..., 0])
        if kind == "logistic_hazard":
            return LogisticHazard(raw, grid)
        if kind == "pmf":
            return PMF(raw, grid)
        if kind == "piecewise_constant_hazard":
            return PiecewiseConstantHazard(raw - shift, grid)
        if kind == "piecewise_linear_hazard":
            return PiecewiseLinearHazard(raw - shift, grid)
        if kind == "piecewise_constant_density":
            return PiecewiseConstantDensity(raw, grid)
        if kind == "piecewise_linear_density":
            return PiecewiseLinearDensity(raw, grid)
        if kind == "lognormal":
            return LogNormal(raw[..., 0] + shift, raw[..., 1])
        if kind == "weibull":
            return Weibull(raw[..., 0] + shift, raw[..., 1])
        if kind == "weibull_mixture":
            gates, scales, shapes = raw.chunk(3, dim=-1)
            return WeibullMixture(gates, scales + shift, shapes)
        if kind == "competing_pmf":
            return CompetingPMF(raw, grid, cfg.num_causes)
        # multi_event: [B, M, E·3C] -> one Weibull mixture per event, stacked along a batch dim
        per_event = raw.unflatten(-1, (len(cfg.event_names), 3 * cfg.num_components))
        gates, scales, shapes = per_event.chunk(3, dim=-1)
        return MultiEvent.stacked(WeibullMixture(gates, scales + shift, shapes), cfg.event_names)
