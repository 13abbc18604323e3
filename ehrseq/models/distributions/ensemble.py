"""The average of K survival distributions: the prediction of a deep ensemble.

    S(u) = Σ_k w_k S_k(u),      f(u) = Σ_k w_k f_k(u),      w_k ≥ 0, Σ_k w_k = 1 (default w_k = 1/K),

the mixture of the members' distributions (Lakshminarayanan et al., 2017: members trained from different
initialisations and data orders, predictions averaged; unequal weights when an ensemble of two kinds of
member weighs each kind by its validation likelihood, :mod:`ehrseq.models.ensemble`). Averaging survival
curves — not parameters — keeps every member's shape; the result is a proper distribution whose
quantiles, restricted means and landmark views (:meth:`~SurvivalDistribution.conditional`:
S(s + u) / S(s) of the average, which is not the average of the members' conditionals) come from the
generic methods of :class:`SurvivalDistribution`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ehrseq.errors import ShapeError
from ehrseq.models.distributions.base import Duration, LeadingRows, SurvivalDistribution


class EnsembleAverage(SurvivalDistribution):
    """The average of ``members`` (single-event distributions of one batch shape ``[*B]``), with ``weights``
    (K positive numbers summing to 1; equal when omitted)."""

    def __init__(self, members: Sequence[SurvivalDistribution], weights: Sequence[float] | None = None) -> None:
        if not members:
            raise ShapeError("an ensemble needs at least one member distribution")
        shapes = {tuple(m.batch_shape) for m in members}
        if len(shapes) != 1:
            raise ShapeError(f"ensemble members must share one batch shape, got {sorted(shapes)}")
        self.members = list(members)
        if weights is None:
            weights = [1.0 / len(self.members)] * len(self.members)
        weights = [float(w) for w in weights]
        if len(weights) != len(self.members) or min(weights) <= 0 or not math.isclose(sum(weights), 1.0, rel_tol=1e-9):
            raise ShapeError(f"ensemble weights must be {len(self.members)} positive numbers summing to 1, got {weights}")
        self.weights = weights

    @property
    def batch_shape(self) -> torch.Size:
        return self.members[0].batch_shape

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def support_max(self) -> float:
        return max(m.support_max for m in self.members)

    def _average_log(self, values: list[torch.Tensor]) -> torch.Tensor:
        """log Σ_k w_k exp(values_k): logsumexp over members of values_k + log w_k."""
        if len(set(self.weights)) == 1:
            return torch.logsumexp(torch.stack(values), dim=0) - math.log(len(values))
        log_weights = [math.log(w) for w in self.weights]
        return torch.logsumexp(torch.stack([v + lw for v, lw in zip(values, log_weights)]), dim=0)

    def log_survival(self, u: Duration) -> torch.Tensor:
        return self._average_log([m.log_survival(u) for m in self.members]).clamp(max=0.0)

    def log_density(self, u: Duration) -> torch.Tensor:
        return self._average_log([m.log_density(u) for m in self.members])

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        return self._average_log([m.log_interval_mass(lower, upper) for m in self.members])

    def __getitem__(self, index: Any) -> EnsembleAverage:
        index = LeadingRows.of(index)  # a mask resolved once for every member
        return EnsembleAverage([m[index] for m in self.members], self.weights)

    def masked(self, keep: torch.Tensor, fill: float = 0.0) -> EnsembleAverage:
        return EnsembleAverage([m.masked(keep, fill) for m in self.members], self.weights)

    def to(self, device: torch.device | str) -> EnsembleAverage:
        return EnsembleAverage([m.to(device) for m in self.members], self.weights)
