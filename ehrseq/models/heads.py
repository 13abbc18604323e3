"""Heads: encoder state per visit ``[B, M, D]`` → the parameters of a per-visit survival distribution.

A head is a small MLP (``hidden`` layers, ReLU, dropout) ending in a linear layer with as many outputs
as its family needs; the family (:mod:`ehrseq.models.families`, where every kind and its
parametrisation is listed) turns the raw outputs ``[B, M, P]`` into the distribution object.
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
from ehrseq.models.families import HeadFamily, Prediction, get_family


@dataclass(frozen=True)
class HeadConfig:
    """Everything that defines a head (JSON round trip with :meth:`to_dict` / :meth:`from_dict`).

    ``kind``: a registered head family (:mod:`ehrseq.models.families`); ``grid``: horizon cut points in
    days (0 = τ_0 < … < τ_L) for grid families; ``num_causes`` K for competing risks; ``event_names``
    for multi-event heads; ``num_components`` C for mixtures; ``hazard_uncertainty`` (``visit_hazard``)
    adds a log-scale output for the logit-normal hazard likelihood.
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
        family = get_family(self.kind)
        if any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden layer sizes must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.time_scale > 0 and math.isfinite(self.time_scale)):
            raise ConfigError(f"time_scale must be a positive number of days, got {self.time_scale}")
        if self.num_components < 1:
            raise ConfigError(f"num_components must be >= 1, got {self.num_components}")
        family.validate(self)

    @property
    def family(self) -> HeadFamily:
        """The registered family of :attr:`kind`."""
        return get_family(self.kind)

    @property
    def num_bins(self) -> int:
        return len(self.grid) - 1 if self.grid is not None else 0

    @property
    def num_outputs(self) -> int:
        """Width of the head's last linear layer."""
        return self.family.num_outputs(self)

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
    family's distribution object (see :mod:`ehrseq.models.families` for every kind's parametrisation)."""

    def __init__(self, config: HeadConfig, input_dim: int) -> None:
        super().__init__()
        self.config = config
        self.family = config.family
        self.net = _mlp(input_dim, config.hidden, config.num_outputs, config.dropout)
        if config.grid is not None:
            self.register_buffer("grid", torch.tensor(config.grid, dtype=torch.float32), persistent=False)
        else:
            self.grid = None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)

    @torch.no_grad()
    def initialize_bias(self, remaining: np.ndarray, event: np.ndarray, last_visit: np.ndarray) -> None:
        """Start from the pooled life table of the training visits (see :meth:`HeadFamily.initial_bias`).

        Gradient steps move a bias by about the learning rate, so without this a grid head needs
        thousands of steps just to bring 20 hazards from σ(0) = 0.5 to realistic values; with it, the
        untrained model already predicts the marginal distribution of the remaining time and training
        only learns how the history shifts it.
        """
        bias = self.family.initial_bias(self.config, remaining, event, last_visit)
        if bias is not None:
            last = self.net[-1]
            last.bias.copy_(torch.as_tensor(bias, dtype=last.bias.dtype))

    def distribution(self, raw: torch.Tensor) -> Prediction:
        """The per-visit distribution of batch shape ``raw.shape[:-1]`` (``[B, M]``)."""
        grid = self.grid.to(raw.dtype) if self.grid is not None else None
        return self.family.distribution(raw, self.config, grid)
