"""Piecewise survival models on a grid (Holmer, Frisk & Krysander), in the corrected forms of docs/reference.md A16.

With grid τ_0 = 0 < … < τ_L (days), Δτ_l = τ_{l+1} − τ_l and k(t) the bin of t:

* :class:`PiecewiseConstantHazard` — L outputs, h_l = e^{z_l};
  H(t) = Σ_{i<k} Δτ_i h_i + (t − τ_k) h_k.
* :class:`PiecewiseLinearHazard` — L + 1 outputs, hazard linear between h_k = e^{z_k} and h_{k+1};
  H(t) = Σ_{i<k} Δτ_i (h_i + h_{i+1})/2 + h_k (t − τ_k) + (t − τ_k)²/(2Δτ_k)·(h_{k+1} − h_k).
* :class:`PiecewiseConstantDensity` — L + 1 outputs, f_l = e^{z_l}/Z on bin l and tail mass
  S(τ_L) = e^{z_L}/Z, Z = e^{z_L} + Σ_j Δτ_j e^{z_j}.
* :class:`PiecewiseLinearDensity` — L + 2 outputs, density linear between e^{z_k}/Z and e^{z_{k+1}}/Z,
  tail mass e^{z_{L+1}}/Z, Z = e^{z_{L+1}} + Σ_j Δτ_j (e^{z_j} + e^{z_{j+1}})/2.

log S of the density models is the log of the remaining mass (a log-sum-exp of the mass left in the
current bin and of every later bin) minus log Z — never log(1 − cumulative). Beyond τ_L every model
continues with a constant hazard (see :mod:`ehrseq.models.distributions.grid`): the hazard at τ_L for the
hazard models, the mean hazard of the last bin for the density models. The likelihoods of [piecewise]
are the generic MLE of :func:`ehrseq.losses.functional.likelihood.survival_nll` through these classes.
"""

from __future__ import annotations

import math
from abc import abstractmethod

import torch
from torch.autograd.function import once_differentiable

from ehrseq.models.distributions import _native
from ehrseq.models.distributions._math import (
    LOG_2,
    exp_by_exp2,
    gauss_legendre,
    log1mexp,
    log_lerp_exp,
    log_positive,
    stable_quadratic_root,
)
from ehrseq.models.distributions.base import Duration
from ehrseq.models.distributions.grid import (
    ConstantHazardGrid,
    GridDistribution,
    GridLike,
    _KnotLogSurvival,
    _knots_from_steps,
    _suffix_sums,
    gather_last,
    reverse_logcumsumexp,
)

#: Cumulative-hazard levels bounding the integration panels of S^p within a bin of the linear-hazard model.
_HAZARD_LEVELS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
_PANEL_NODES = 16


class _PerUnitRates:
    """Hazard rates given per ``rate_unit`` days: the logits z are log rates per ``rate_unit`` days, so the rate
    per day is e^{z}/``rate_unit``; every method reads the per-day log rates z − log(``rate_unit``) through
    :meth:`_log_rates`, or folds −log(``rate_unit``) into a per-bin constant.

    The families' heads give rates per ``time_scale`` days (a zero output is one event per ``time_scale`` days);
    taking the unit here instead of subtracting log(``time_scale``) from the head's outputs ``[B, M, P]`` leaves
    the padded visits untouched (a loss selects the real visits first) and costs no pass over the outputs where
    the unit is folded (the knots of log S, the tail rate).
    """

    rate_unit: float = 1.0

    def __init__(self, logits: torch.Tensor, grid: GridLike, *, rate_unit: float = 1.0) -> None:
        super().__init__(logits, grid)
        if not (math.isfinite(rate_unit) and rate_unit > 0):
            raise ValueError(f"rate_unit must be a positive number of days, got {rate_unit}")
        self.rate_unit = float(rate_unit)

    @property
    def _log_unit(self) -> float:
        return math.log(self.rate_unit)

    def _log_rates(self) -> torch.Tensor:
        """log h per day at each output, ``[*S, P]`` (the logits themselves when the unit is a day)."""
        if self.rate_unit == 1.0:
            return self.logits
        return self._cached("log_rates", lambda: self.logits - self._log_unit)


class PiecewiseConstantHazard(_PerUnitRates, ConstantHazardGrid):
    """Constant hazard h_l = e^{z_l}/u on each bin; ``logits`` ``[*batch, L]``, ``grid`` ``[L+1]``, u =
    ``rate_unit`` (days, default 1: :class:`_PerUnitRates`).

    Beyond τ_L the last hazard h_{L−1} continues.
    """

    def _log_widths_per_unit(self) -> torch.Tensor:
        """log(Δτ_l/u) ``[L]``: ΔH_l = e^{z_l} Δτ_l/u."""
        return torch.log(self.widths) - self._log_unit

    def _log_increments(self) -> torch.Tensor:
        return self.logits + self._log_widths_per_unit()

    def _knot_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log S at the knots, −ΔH, ΔH or empty) of :class:`~ehrseq.models.distributions.grid._KnotLogSurvival`,
        once per memo."""
        return self._cached("knot_table", lambda: _KnotLogSurvival.apply(self.logits, self._log_widths_per_unit()))

    def _log_survival_grid(self) -> torch.Tensor:
        return self._knot_table()[0]

    def _bin_steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self._knot_table()[1]
        return steps, torch.expm1(steps).neg_()

    def _log_tail_rate(self) -> torch.Tensor:
        return self.logits[..., -1] - self._log_unit  # h_{L−1} per day, without the other bins' increments

    def _log_mass_grid(self) -> torch.Tensor:
        log_s = self.log_survival_at_grid()
        inner = log_s[..., :-1] + log1mexp(-self.log_hazard_increments().exp())
        return torch.cat([inner, log_s[..., -1:]], dim=-1)


class _LinearHazardLogSurvival(torch.autograd.Function):
    """log S(τ_k) = −Σ_{l<k} ΔH_l, ΔH_l = c_l (e^{z_l} + e^{z_{l+1}}) with c_l = Δτ_l/(2u), from the knot outputs z
    ``[*S, L+1]`` and c ``[L]`` → ``[*S, L+1]``, in one pass (the trapezoid of the linear hazard per bin).

    The backward pass is ∂/∂z_j = −e^{z_j} (c_j G_j + c_{j−1} G_{j−1}), G_l = Σ_{k>l} g_k (a suffix sum,
    :func:`~ehrseq.models.distributions.grid._suffix_sums`; the terms of l = −1 and l = L are 0), without the
    graph of ``logaddexp``, ``exp``, ``cumsum`` and ``cat``. e^{z} is formed once, and ΔH as a sum of two positive
    terms times a positive constant (no cancellation); e^{z} overflows above z ≈ 88 in float32, a rate of e^{88}
    per unit where S is 0 at every later knot anyway.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, half_widths: torch.Tensor) -> torch.Tensor:
        rates = exp_by_exp2(logits)
        steps = torch.add(rates[..., :-1], rates[..., 1:]).mul_(half_widths).neg_()  # −ΔH_l
        ctx.save_for_backward(rates, half_widths)
        return _knots_from_steps(steps)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        rates, half_widths = ctx.saved_tensors
        weighted = _suffix_sums(grad[..., 1:], negate=True).mul_(half_widths)  # −c_l G_l
        out = torch.empty_like(rates)
        out[..., :-1] = weighted
        out[..., -1] = 0.0
        out[..., 1:] += weighted
        return out.mul_(rates), None


class _NativeLinearHazardLikelihood(torch.autograd.Function):
    """log f(y) where ``observed``, else log S(y), of :class:`PiecewiseLinearHazard` rows ``logits [N, L+1]`` at one
    duration each, in the native kernel (:func:`~ehrseq.models.distributions._native.linear_hazard_log_likelihood`:
    per row the knots' log S, the target's bin and segment, the density and the tail — the formulas of the family's
    :meth:`~GridDistribution.log_survival` and :meth:`~GridDistribution.log_density`, which stay the reference), the
    gradient in the logits formed per row by the kernel in the backward pass."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, grid: torch.Tensor, y: torch.Tensor,
                observed: torch.Tensor, log_unit: float) -> torch.Tensor:
        ctx.save_for_backward(logits, grid, y, observed)
        ctx.log_unit = log_unit
        return _native.linear_hazard_log_likelihood(logits, grid, y, observed, log_unit)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        logits, grid, y, observed = ctx.saved_tensors
        return _native.linear_hazard_log_likelihood(logits, grid, y, observed, ctx.log_unit, grad), None, None, None, None


class PiecewiseLinearHazard(_PerUnitRates, GridDistribution):
    """Hazard linear between knot values h_j = e^{z_j}/u; ``logits`` ``[*batch, L+1]``, ``grid`` ``[L+1]``, u =
    ``rate_unit`` (days, default 1: :class:`_PerUnitRates`).

    Beyond τ_L the hazard stays at h_L (continuous hazard).
    """

    extra_outputs = 1

    def log_likelihood(self, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """log f(u) where ``observed``, else log S(u); with one duration per element (``u`` ``[*batch, 1]``, as
        the likelihood losses ask) on CPU, in the native kernel (:class:`_NativeLinearHazardLikelihood`)."""
        u = self._durations(u)
        shape = (*self.batch_shape, 1)
        if (u.device.type == "cpu" and tuple(u.shape) == shape and not u.requires_grad and not self.grid.requires_grad
                and _native.available() and self.dtype in (torch.float32, torch.float64) and self.num_bins <= _native.max_bins()):
            flat = self.logits.reshape(-1, self.logits.shape[-1])
            flags = torch.broadcast_to(observed, shape).reshape(-1)
            value = _NativeLinearHazardLikelihood.apply(flat, self.grid, u.reshape(-1), flags, self._log_unit)
            return value.reshape(shape)
        return super().log_likelihood(u, observed)

    def _increments(self) -> torch.Tensor:
        """ΔH_l = Δτ_l (h_l + h_{l+1}) / 2, ``[*S, L]``."""
        z = self.logits
        return (torch.log(self.widths) - (LOG_2 + self._log_unit) + torch.logaddexp(z[..., :-1], z[..., 1:])).exp()

    def _log_survival_grid(self) -> torch.Tensor:
        half_widths = self.widths / (2.0 * self.rate_unit)
        return _LinearHazardLogSurvival.apply(self.logits, half_widths)

    def _log_mass_grid(self) -> torch.Tensor:
        log_s = self.log_survival_at_grid()
        inner = log_s[..., :-1] + log1mexp(-self._increments())
        return torch.cat([inner, log_s[..., -1:]], dim=-1)

    def _log_tail_rate(self) -> torch.Tensor:
        return self.logits[..., -1] - self._log_unit

    def _knot_logits(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the unit taken from the two gathered columns, not from the whole table (a copy of it, and its gradient)
        left, right = self._knots(self.logits, k)
        return left - self._log_unit, right - self._log_unit

    def _log_tail_rate_read(self, k: torch.Tensor) -> torch.Tensor:
        # h_L, the last knot's rate, from the gather of the knot logits (no select of the table's last column)
        return self._knot_reads(self.logits, k)[2] - self._log_unit

    def _segment_log_survival(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z_left, z_right = self._knot_logits(k)
        half_w = 0.5 * t / self.widths[k]
        # H(τ_k + t) − H(τ_k) = t·[(1 − w/2)·h_k + (w/2)·h_{k+1}], a sum of non-negative terms
        segment = t * ((1.0 - half_w) * z_left.exp() + half_w * z_right.exp())
        return self._knots(self.log_survival_at_grid(), k)[0] - segment

    def _segment_log_hazard_between(self, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # H(τ_k + b) − H(τ_k + a) = (b − a)·h at the midpoint (a + b)/2, the hazard being linear
        z_left, z_right = self._knot_logits(k)
        return log_positive(b - a) + log_lerp_exp(z_left, z_right, 0.5 * (a + b) / self.widths[k])

    def _segment_log_density(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z_left, z_right = self._knot_logits(k)
        return log_lerp_exp(z_left, z_right, t / self.widths[k]) + self._segment_log_survival(k, t)

    def _offset_at(self, z_left: torch.Tensor, z_right: torch.Tensor, width: torch.Tensor, increment: torch.Tensor) -> torch.Tensor:
        """The offset t in a bin where H(τ_k + t) − H(τ_k) = increment: h_k t + (h_{k+1} − h_k) t²/(2Δτ).

        Solved after scaling by max(h_k, h_{k+1}), so that nothing overflows.
        """
        top = torch.maximum(z_left, z_right)
        left, right = (z_left - top).exp(), (z_right - top).exp()
        return stable_quadratic_root((right - left) / (2.0 * width), left, increment * (-top).exp()).clamp(max=width)

    def _segment_quantile(self, k: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z_left, z_right = self._knot_logits(k)
        needed = (self._knots(self.log_survival_at_grid(), k)[0] - target).clamp_min(0.0)
        return self._offset_at(z_left, z_right, self.widths[k], needed)

    def _segment_integrals(self, lengths: torch.Tensor, power: int = 1) -> torch.Tensor:
        # S^p is exp(−p·quadratic) inside a bin, as steep as the hazard makes it: Gauss–Legendre on panels
        # where p·H grows by 0, ½, 1, 2, … 64, beyond which S^p falls below e⁻⁶⁴ of its value at τ_k
        z = self._log_rates()
        levels = torch.tensor(_HAZARD_LEVELS, dtype=self.dtype, device=self.device)
        width = self.widths.unsqueeze(-1)
        z_left, z_right = z[..., :-1].unsqueeze(-1), z[..., 1:].unsqueeze(-1)
        t_end = lengths.unsqueeze(-1)
        w_end = 0.5 * t_end / width
        reached = t_end * ((1.0 - w_end) * z_left.exp() + w_end * z_right.exp())  # H over [τ_l, τ_l + e_l]
        # panel edges only place the nodes: no gradient flows through them
        edges = torch.minimum(self._offset_at(z_left, z_right, width, torch.minimum(levels / power, reached)), t_end).detach()
        nodes, weights = gauss_legendre(_PANEL_NODES, self.dtype, self.device)
        spans = (edges[..., 1:] - edges[..., :-1]).unsqueeze(-1)  # [*S, L, P, 1]
        t = edges[..., :-1].unsqueeze(-1) + spans * nodes  # [*S, L, P, n]
        # S(τ_l + t) by broadcasting over the bins (no gathers): S_l·exp(−t[(1 − w/2)h_l + (w/2)h_{l+1}])
        half_w = 0.5 * t / width.unsqueeze(-1)
        h_left, h_right = z_left.exp().unsqueeze(-1), z_right.exp().unsqueeze(-1)
        log_s = self.log_survival_at_grid()[..., :-1, None, None] - t * ((1.0 - half_w) * h_left + half_w * h_right)
        return (spans * weights * (power * log_s).exp()).sum(dim=(-2, -1))


class _DensityGrid(GridDistribution):
    """Density-parametrised grid models: bin masses a_l − log Z from unnormalised log masses a."""

    @abstractmethod
    def _unnormalised_log_masses(self) -> torch.Tensor:
        """a_l, l = 0..L (the last is the tail), with masses e^{a_l}/Z."""

    def _log_tail_sums(self) -> torch.Tensor:
        """log Σ_{j≥l} e^{a_j} for l = 0..L; the first entry is log Z."""
        return self._cached("log_tail_sums", lambda: reverse_logcumsumexp(self._unnormalised_log_masses()))

    def log_normaliser(self) -> torch.Tensor:
        """log Z, shape ``batch_shape``."""
        return self._log_tail_sums()[..., 0]

    def _log_mass_grid(self) -> torch.Tensor:
        return self._unnormalised_log_masses() - self.log_normaliser().unsqueeze(-1)

    def _log_survival_grid(self) -> torch.Tensor:
        remaining = (self._log_tail_sums()[..., 1:] - self.log_normaliser().unsqueeze(-1)).clamp_max(0.0)
        return torch.cat([torch.zeros_like(remaining[..., :1]), remaining], dim=-1)

    def _segment_log_mass_between(self, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # (b − a) times the density at the midpoint (exact for a density constant or linear in the bin)
        return log_positive(b - a) + self._segment_log_density(k, 0.5 * (a + b))

    def _segment_integrals(self, lengths: torch.Tensor, power: int = 1) -> torch.Tensor:
        # S is a polynomial inside a bin, S(τ_l + t) = S_l − f_l t − (g_l/2) t² (g_l = 0 for the constant
        # density): ∫_0^e S and ∫_0^e S² in closed form
        s0, f0, slope = self._bin_polynomials()
        e = lengths
        if power == 1:
            return e * (s0 - e * (f0 / 2.0 + e * slope / 6.0))
        half = slope / 2.0
        return e * (s0 * s0 - e * (s0 * f0 - e * ((f0 * f0 - 2.0 * s0 * half) / 3.0 + e * (f0 * half / 2.0 + e * half * half / 5.0))))

    @abstractmethod
    def _bin_polynomials(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(S(τ_l), f(τ_l⁺), f′ within bin l), each ``[*S, L]``."""

    def _with_remaining_mass(self, k: torch.Tensor, log_left_in_bin: torch.Tensor) -> torch.Tensor:
        """log S = log(mass left in bin k + S(τ_{k+1}))."""
        return torch.logaddexp(self._knots(self.log_survival_at_grid(), k)[1], log_left_in_bin)


class PiecewiseConstantDensity(_DensityGrid):
    """Constant density e^{z_l}/Z on bin l, tail mass e^{z_L}/Z; ``logits`` ``[*batch, L+1]``."""

    extra_outputs = 1

    def _unnormalised_log_masses(self) -> torch.Tensor:
        z = self.logits
        return torch.cat([z[..., :-1] + torch.log(self.widths), z[..., -1:]], dim=-1)

    def _segment_log_survival(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        left_in_bin = self._segment_log_density(k, t) + log_positive(self.widths[k] - t)
        return self._with_remaining_mass(k, left_in_bin)

    def _segment_log_density(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gather_last(self.logits, k) - self.log_normaliser().unsqueeze(-1)

    def _bin_polynomials(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        density = (self.logits[..., :-1] - self.log_normaliser().unsqueeze(-1)).exp()
        return self.log_survival_at_grid()[..., :-1].exp(), density, torch.zeros_like(density)

    def _segment_quantile(self, k: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the mass consumed from τ_k, S(τ_k) − e^target, divided by the constant density
        log_left = self._knots(self.log_survival_at_grid(), k)[0]
        log_used = log_left + log1mexp((target - log_left).clamp_max(0.0))
        return (log_used - self._segment_log_density(k, target)).exp().clamp(max=self.widths[k])


class PiecewiseLinearDensity(_DensityGrid):
    """Density linear between e^{z_j}/Z at the knots, tail mass e^{z_{L+1}}/Z; ``logits`` ``[*batch, L+2]``."""

    extra_outputs = 2

    def _unnormalised_log_masses(self) -> torch.Tensor:
        z = self.logits
        inner = torch.log(self.widths) - LOG_2 + torch.logaddexp(z[..., :-2], z[..., 1:-1])
        return torch.cat([inner, z[..., -1:]], dim=-1)

    def _bin_polynomials(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        density = (self.logits[..., :-1] - self.log_normaliser().unsqueeze(-1)).exp()  # at the L + 1 knots
        return self.log_survival_at_grid()[..., :-1].exp(), density[..., :-1], density.diff(dim=-1) / self.widths

    def _segment_log_survival(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # mass left in the bin: (Δτ − t)/2 · [(1 − w) e^{z_k} + (1 + w) e^{z_{k+1}}] / Z
        z_left, z_right = self._knot_logits(k)
        width = self.widths[k]
        w = t / width
        left_in_bin = (
            log_positive(width - t)
            + log_lerp_exp(z_left, z_right, 0.5 * (1.0 + w))
            - self.log_normaliser().unsqueeze(-1)
        )
        return self._with_remaining_mass(k, left_in_bin)

    def _segment_log_density(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z_left, z_right = self._knot_logits(k)
        return log_lerp_exp(z_left, z_right, t / self.widths[k]) - self.log_normaliser().unsqueeze(-1)

    def _segment_quantile(self, k: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # solve f_k t + (f_{k+1} − f_k) t²/(2Δτ) = S(τ_k) − e^target, scaled by max(e^{z_k}, e^{z_{k+1}})/Z
        z_left, z_right = self._knot_logits(k)
        top = torch.maximum(z_left, z_right)
        width = self.widths[k]
        log_left = self._knots(self.log_survival_at_grid(), k)[0]
        log_used = log_left + log1mexp((target - log_left).clamp_max(0.0))
        needed = (log_used + self.log_normaliser().unsqueeze(-1) - top).exp()
        left, right = (z_left - top).exp(), (z_right - top).exp()
        return stable_quadratic_root((right - left) / (2.0 * width), left, needed).clamp(max=width)

