"""Competing risks on a horizon grid: DeepHit's joint softmax over (cause, bin) and "no event in the grid"."""

from __future__ import annotations

from typing import Any

import torch

from ehrseq.errors import ConfigError, ShapeError
from ehrseq.models.distributions._math import log1mexp
from ehrseq.models.distributions.base import CompetingRisksDistribution, Duration, _where_leading, index_leading
from ehrseq.models.distributions.grid import PMF, GridLike, as_grid, check_parameters, gather_last


class CompetingPMF(CompetingRisksDistribution):
    """K competing causes on a grid: logits ``[*batch, K·L + 1]``, one joint softmax.

    Index k·L + l is cause k + 1 in bin l (k = 0..K−1, l = 0..L−1); the last index is "no event within
    the grid" (R > τ_L). The all-cause distribution (:meth:`overall`) is the :class:`PMF` of the bin
    totals. Between knots and beyond τ_L the all-cause hazard is constant (as for :class:`PMF`) and the
    cause-specific hazards keep the proportions of the current bin — beyond τ_L those of the last bin —
    so that F_k(u) = F_k(τ_l) + π_{k,l}·(S(τ_l) − S(u)) with π_{k,l} = f_{k,l} / Σ_j f_{j,l}, and
    Σ_k F_k(∞) = 1.
    """

    batched_fields = ("logits",)

    def __init__(self, logits: torch.Tensor, grid: GridLike, num_causes: int) -> None:
        if int(num_causes) < 1:
            raise ConfigError(f"num_causes must be >= 1, got {num_causes}")
        check_parameters(logits, "logits")
        self.logits = logits
        self.grid = as_grid(grid, logits)
        self._num_causes = int(num_causes)
        check_parameters(logits, "logits", self._num_causes * (self.grid.shape[0] - 1) + 1)

    # ------------------------------------------------------------------ structure
    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    @property
    def num_causes(self) -> int:
        return self._num_causes

    @property
    def num_bins(self) -> int:
        return int(self.grid.shape[0]) - 1

    def __getitem__(self, index: Any) -> CompetingPMF:
        return CompetingPMF(index_leading(self.logits, index), self.grid, self._num_causes)

    def to(self, device: torch.device | str) -> CompetingPMF:
        return CompetingPMF(self.logits.to(device), self.grid.to(device), self._num_causes)

    def masked(self, keep: torch.Tensor, fill: float = 0.0) -> CompetingPMF:
        """A copy with logits replaced by ``fill`` where ``keep`` (leading batch dims) is False."""
        return CompetingPMF(_where_leading(keep, self.logits, fill), self.grid, self._num_causes)

    def __repr__(self) -> str:
        return f"CompetingPMF(batch_shape={list(self.batch_shape)}, causes={self.num_causes}, bins={self.num_bins})"

    # ------------------------------------------------------------------ discrete quantities
    def log_cause_mass(self) -> torch.Tensor:
        """log f_{k,l} = log P(cause k + 1 in bin l), ``[*batch, K, L]``."""
        log_p = torch.log_softmax(self.logits, dim=-1)
        return log_p[..., :-1].reshape(*self.batch_shape, self.num_causes, self.num_bins)

    def overall(self) -> PMF:
        """All-cause :class:`PMF`: bin masses Σ_k f_{k,l} and the mass beyond the grid."""
        log_p = torch.log_softmax(self.logits, dim=-1)
        totals = torch.logsumexp(self.log_cause_mass(), dim=-2)
        return PMF(torch.cat([totals, log_p[..., -1:]], dim=-1), self.grid)

    def log_survival_at_grid(self) -> torch.Tensor:
        """All-cause log S(τ_l), l = 0..L, ``[*batch, L+1]``."""
        return self.overall().log_survival_at_grid()

    def discrete_log_likelihood(self, bins: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """log f_{Δ,κ} for an event of cause Δ ∈ 1..K, log S(τ_{min(κ+1, L)}) when censored (Δ = 0).

        ``bins`` (κ in 0..L) and ``event`` (int 0..K) have shape ``batch_shape``. An event beyond the
        grid (κ = L), whose cause the grid cannot resolve, scores log S(τ_L).
        """
        if tuple(bins.shape) != tuple(self.batch_shape) or tuple(event.shape) != tuple(self.batch_shape):
            raise ShapeError(f"bins and event must have the batch shape {list(self.batch_shape)}")
        log_s = self.log_survival_at_grid()
        beyond = log_s[..., -1:].unsqueeze(-2).expand(*self.batch_shape, self.num_causes, 1)
        masses = torch.cat([self.log_cause_mass(), beyond], dim=-1)  # [*S, K, L+1]
        cause = (event.long() - 1).clamp(0, self.num_causes - 1)
        per_cause = masses.gather(-2, cause[..., None, None].expand(*self.batch_shape, 1, self.num_bins + 1))
        observed = per_cause.squeeze(-2).gather(-1, bins.long().unsqueeze(-1)).squeeze(-1)
        survived = log_s.gather(-1, (bins.long() + 1).clamp_max(self.num_bins).unsqueeze(-1)).squeeze(-1)
        return torch.where(event > 0, observed, survived)

    # ------------------------------------------------------------------ continuous-time view
    def _log_shares(self) -> torch.Tensor:
        """log π_{k,l} for l = 0..L (the tail repeats the last bin), ``[*batch, K, L+1]``."""
        cause = self.log_cause_mass()
        shares = cause - torch.logsumexp(cause, dim=-2, keepdim=True)
        return torch.cat([shares, shares[..., -1:]], dim=-1)

    def _per_cause(self, values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """values ``[*S, K, N]`` at bins ``k`` ``[*S, U]`` → ``[*S, K, U]``."""
        return gather_last(values, k.unsqueeze(-2).expand(*k.shape[:-1], self.num_causes, k.shape[-1]))

    def log_cif(self, u: Duration) -> torch.Tensor:
        overall = self.overall()
        u = overall._durations(u)
        k = overall.bin_index(u)
        log_s_knot = gather_last(overall.log_survival_at_grid(), k)
        drop = (overall.log_survival(u) - log_s_knot).clamp_max(0.0)  # log(S(u)/S(τ_k))
        gained = (log_s_knot + log1mexp(drop)).unsqueeze(-2)
        increment = self._per_cause(self._log_shares(), k) + gained
        cumulative = torch.logcumsumexp(self.log_cause_mass(), dim=-1)
        knots = torch.cat([torch.zeros_like(cumulative[..., :1]), cumulative], dim=-1)  # F_k(τ_l), l ≥ 1
        start = self._per_cause(knots, k)
        first = (k == 0).unsqueeze(-2)
        combined = torch.logaddexp(torch.where(first, torch.zeros_like(start), start), increment)
        return torch.where(first, increment, combined)

    def log_cause_density(self, u: Duration) -> torch.Tensor:
        """log f_k(u) = log π_{k,κ(u)} + log f(u), the cause-specific sub-density, ``[*batch, K, U]``."""
        overall = self.overall()
        u = overall._durations(u)
        return self._per_cause(self._log_shares(), overall.bin_index(u)) + overall.log_density(u).unsqueeze(-2)
