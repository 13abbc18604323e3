"""Mixture of Weibull distributions (Deep Survival Machines, MENSA's per-event marginal)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ehrseq.errors import ShapeError
from ehrseq.models.distributions import _native
from ehrseq.models.distributions._math import exp_by_exp2
from ehrseq.models.distributions.base import Duration, LeadingRows, SurvivalDistribution
from ehrseq.models.distributions.grid import check_parameters
from ehrseq.models.distributions.parametric import (
    Weibull,
    safe_log_duration,
    weibull_log_cumulative_hazard,
    weibull_log_density,
    weibull_log_density_at_zero,
    weibull_log_interval_mass,
    weibull_log_mean,
    weibull_quantile,
)


class WeibullMixture(SurvivalDistribution):
    """S(u) = Σ_c w_c exp(−(u/λ_c)^{k_c}), w = softmax(gate_logits); components in the last dim.

    Parameters
    ----------
    gate_logits, log_scales, log_shapes: ``[*batch, C]``
        Mixture logits, log λ_c and log k_c of the C components.

    log S and log f are log-sum-exps over components of log w_c plus the component's log S or log f.
    The mean is Σ_c w_c λ_c Γ(1 + 1/k_c); quantiles are found by bisection in log time inside the
    bracket [min_c Q_c(q), max_c Q_c(q)] of the component quantiles, which always contains them.
    """

    batched_fields = ("gate_logits", "log_scales", "log_shapes")

    def __init__(self, gate_logits: torch.Tensor, log_scales: torch.Tensor, log_shapes: torch.Tensor) -> None:
        for name, value in (("gate_logits", gate_logits), ("log_scales", log_scales), ("log_shapes", log_shapes)):
            check_parameters(value, name)
            if value.dim() == 0:
                raise ShapeError(f"{name} must have the mixture components in its last dim, got a scalar")
        if not gate_logits.shape == log_scales.shape == log_shapes.shape:
            raise ShapeError(
                "gate_logits, log_scales and log_shapes must have the same shape [*batch, C], got "
                f"{list(gate_logits.shape)}, {list(log_scales.shape)}, {list(log_shapes.shape)}"
            )
        self.gate_logits, self.log_scales, self.log_shapes = gate_logits, log_scales, log_shapes

    @property
    def batch_shape(self) -> torch.Size:
        return self.gate_logits.shape[:-1]

    @property
    def num_components(self) -> int:
        return int(self.gate_logits.shape[-1])

    def log_weights(self) -> torch.Tensor:
        """log w_c, ``[*batch, C]``."""
        return torch.log_softmax(self.gate_logits, dim=-1)

    def components(self) -> Weibull:
        """The components as a :class:`Weibull` of batch shape ``[*batch, C]``."""
        return Weibull(self.log_scales, self.log_shapes)

    def _leading_components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log w_c, log λ_c, log k_c as contiguous ``[C, *batch, 1]``.

        With the components in the leading dim, durations ``[*batch, U]`` broadcast over them and the
        log-sum-exp over them run on contiguous rows (with C innermost every elementwise step and
        reduction would loop over runs of C elements).
        """
        gates, log_scales, log_shapes = (
            value.movedim(-1, 0).unsqueeze(-1).contiguous() for value in (self.gate_logits, self.log_scales, self.log_shapes)
        )
        return torch.log_softmax(gates, dim=0), log_scales, log_shapes

    @staticmethod
    def _mix(log_weights: torch.Tensor, component_values: torch.Tensor) -> torch.Tensor:
        """log Σ_c w_c exp(v_c) for values ``[C, *batch, U]`` → ``[*batch, U]``."""
        return torch.logsumexp(log_weights + component_values, dim=0)

    def log_survival(self, u: Duration) -> torch.Tensor:
        log_u, positive = safe_log_duration(self._durations(u))
        return torch.where(positive, self.log_survival_log_time(log_u), 0.0)

    def log_survival_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log Σ_c w_c exp(−exp(k_c(s − log λ_c))) at log-durations s."""
        log_weights, log_scales, log_shapes = self._leading_components()
        log_h = weibull_log_cumulative_hazard(self._durations(log_u), log_scales, log_shapes)
        # the mixture weights sum to 1 only up to rounding: keep S ≤ 1 exact (and S(0) = 1 in log_survival)
        return self._mix(log_weights, -log_h.exp()).clamp_max(0.0)

    def log_density(self, u: Duration) -> torch.Tensor:
        log_weights, log_scales, log_shapes = self._leading_components()
        return self._mix(log_weights, weibull_log_density(self._durations(u), log_scales, log_shapes))

    def log_likelihood(self, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """log f(u) where ``observed``, else log S(u): one log-sum-exp over the components.

        With H_c = (u/λ_c)^{k_c}, each component contributes log w_c − H_c (log S_c) or
        log w_c + log k_c + log H_c − log u − H_c (log f_c; its limit at u = 0); log H_c and H_c are
        computed once for both, with the gradient of :class:`_MixtureLogLikelihood` where every u > 0.
        """
        u = self._durations(u)
        log_u, positive = safe_log_duration(u)
        log_weights, log_scales, log_shapes = self._leading_components()
        if bool(positive.all()):
            return _MixtureLogLikelihood.apply(log_weights, log_scales, log_shapes,
                                               *torch.broadcast_tensors(log_u, observed))
        log_h = weibull_log_cumulative_hazard(log_u, log_scales, log_shapes)
        hazard = log_h.exp()
        log_density = torch.where(positive, (log_shapes + log_h) - log_u - hazard,
                                  weibull_log_density_at_zero(log_scales, log_shapes))  # the limit at u = 0
        mixed = self._mix(log_weights, torch.where(observed, log_density, -hazard))
        return torch.where(observed, mixed, torch.where(positive, mixed.clamp_max(0.0), 0.0))

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log Σ_c w_c P_c(lower < R ≤ upper), each component's mass computed without cancellation."""
        lower, upper = self._interval(lower, upper)
        log_weights, log_scales, log_shapes = self._leading_components()
        return self._mix(log_weights, weibull_log_interval_mass(lower, upper, log_scales, log_shapes))

    def mean(self, upper: float | None = None, points: int = 2049) -> torch.Tensor:
        """Σ_c w_c λ_c Γ(1 + 1/k_c); with a finite ``upper`` the generic restricted mean."""
        if upper is None or upper == float("inf"):
            return torch.logsumexp(self.log_weights() + weibull_log_mean(self.log_scales, self.log_shapes), dim=-1).exp()
        return super().mean(upper, points)

    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """Smallest u with F(u) ≥ q: ``iterations`` geometric bisection steps in the component bracket."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        _, log_scales, log_shapes = self._leading_components()
        per_component = weibull_quantile(q, log_scales, log_shapes)
        lo, hi = per_component.amin(dim=0).log(), per_component.amax(dim=0).log()
        target = torch.log1p(-q)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            go_right = self.log_survival(mid.exp()) > target
            lo = torch.where(go_right, mid, lo)
            hi = torch.where(go_right, hi, mid)
        return hi.exp()


class _MixtureLogLikelihood(torch.autograd.Function):
    """log f(u) (``observed``) or log S(u) of a Weibull mixture at durations u > 0, with its gradient by hand.

    Inputs: log w_c, log λ_c, log k_c ``[C, *batch, 1]`` (components leading, as
    :meth:`WeibullMixture._leading_components` gives them), log u and ``observed`` ``[*batch, U]``. With
    z_c = min(k_c (log u − log λ_c), cap) (:func:`weibull_log_cumulative_hazard`), H_c = e^{z_c} and

        v_c = log w_c + log k_c + z_c − log u − H_c  (observed),   v_c = log w_c − H_c  (censored),

    the value is m = logsumexp_c v_c (clamped at 0 when censored: S ≤ 1 despite rounding of Σ w_c). With the
    responsibilities r_c = e^{v_c − m} and ∂v_c/∂z_c = 1 − H_c (observed) or −H_c, the gradients are
    ∂m/∂log w_c = r_c, ∂m/∂log λ_c = −r_c k_c ∂v_c/∂z_c, ∂m/∂log k_c = r_c (1_observed + z_c ∂v_c/∂z_c) and
    ∂m/∂log u = Σ_c r_c (k_c ∂v_c/∂z_c − 1_observed) (z_c's terms vanish where the cap binds, as the clamp's
    gradient does; none where m was clamped). The exponentials are :func:`exp_by_exp2`'s (``exp`` slows down
    tenfold where its result underflows, as e^{−H_c} and the responsibilities of far components do).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, log_weights: torch.Tensor, log_scales: torch.Tensor,
                log_shapes: torch.Tensor, log_u: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        cap = math.log(torch.finfo(log_u.dtype).max) - 1.0
        shapes = log_shapes.exp()
        log_h = (log_u - log_scales).mul_(shapes)
        capped = log_h >= cap
        log_h.clamp_max_(cap)
        hazard = exp_by_exp2(log_h)
        density = (log_shapes - log_u) + log_h - hazard
        values = torch.where(observed, density, hazard.neg()).add_(log_weights)
        largest = values.amax(dim=0)
        mixed = exp_by_exp2(values - largest).sum(dim=0).log_().add_(largest)
        result = torch.where(observed, mixed, mixed.clamp_max(0.0))
        ctx.save_for_backward(values, mixed, hazard, log_h, capped, shapes, observed)
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, mixed, hazard, log_h, capped, shapes, observed = ctx.saved_tensors
        passes = observed | (mixed <= 0.0)
        weighted = exp_by_exp2(values - mixed).mul_(torch.where(passes, grad, 0.0))  # r_c · g
        slope = torch.where(observed, 1.0 - hazard, hazard.neg()).masked_fill_(capped, 0.0).mul_(weighted)  # g r_c ∂v/∂z
        indicator = observed.to(weighted.dtype)

        def to_parameter(value: torch.Tensor) -> torch.Tensor:  # sum over the durations U
            return value.sum(dim=-1, keepdim=True)

        grad_log_weights = to_parameter(weighted) if ctx.needs_input_grad[0] else None
        grad_log_scales = to_parameter(slope).mul_(shapes).neg_() if ctx.needs_input_grad[1] else None
        grad_log_shapes = to_parameter(torch.addcmul(weighted * indicator, slope, log_h)) if ctx.needs_input_grad[2] else None
        grad_log_u = None
        if ctx.needs_input_grad[3]:
            grad_log_u = (slope * shapes).sum(dim=0) - weighted.sum(dim=0) * indicator
        return grad_log_weights, grad_log_scales, grad_log_shapes, grad_log_u, None


class _NativeMixtureLikelihood(torch.autograd.Function):
    """log f(y) where ``observed``, else log S(y), of the Weibull mixtures packed in the rows ``rows [N]`` of a table
    ``[R, K, 3C]`` (K mixtures per row, each [gate logits ; log λ_c − offset ; log k_c]), at ``y [N, K]`` > 0, in the
    native kernel (:func:`~ehrseq.models.distributions._native.weibull_mixture_log_likelihood`): the terms of
    :class:`_MixtureLogLikelihood`, which stays the reference, read from the rows in place, with the gradient of each
    value in its mixture's parameters ``[N, K, 3C]`` (when the table requires grad). Its backward pass scales those
    by the incoming gradient into the whole table, written once (zero outside the rows), where the PyTorch path
    gathers the rows, splits their parameters into components-leading copies and scatters the gradients back into a
    table of zeros."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, table: torch.Tensor, rows: torch.Tensor, y: torch.Tensor,
                observed: torch.Tensor, log_scale_offset: float) -> torch.Tensor:
        result = _native.weibull_mixture_log_likelihood(table, rows, y, observed, log_scale_offset,
                                                        gradient=ctx.needs_input_grad[0])
        if result is None:
            raise RuntimeError("the native Weibull-mixture likelihood was called where it does not apply")
        value, unit = result
        ctx.save_for_backward(unit, rows)
        ctx.total_rows = table.shape[0]
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        unit, rows = ctx.saved_tensors
        return _native.weibull_mixture_gradient(unit, rows, grad, ctx.total_rows), None, None, None, None


class PackedWeibullMixture(WeibullMixture):
    """A :class:`WeibullMixture` whose parameters are the three chunks of one tensor, as a head outputs them.

    ``packed [*batch, 3C]`` = [gate logits ; log λ_c − ``log_scale_offset`` ; log k_c]. It is the only batched
    field, so selecting batch elements (a loss keeping the real visits) gathers one contiguous tensor and
    scatters one gradient, where three strided views would cost three of each and the gradient of the split.
    """

    batched_fields = ("packed",)

    def __init__(self, packed: torch.Tensor, log_scale_offset: float = 0.0) -> None:
        check_parameters(packed, "packed")
        if packed.dim() == 0 or packed.shape[-1] % 3 or packed.shape[-1] == 0:
            raise ShapeError(f"packed must have 3·C parameters in its last dim, got shape {list(packed.shape)}")
        self.packed, self.log_scale_offset = packed, float(log_scale_offset)

    def _chunks(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three chunks of ``packed`` by one ``split``, kept while ``packed`` is the same tensor: however many
        reads of the parameters, their gradients meet in one table (a strided view per read would make one
        table of zeros each in the backward pass)."""
        cached = getattr(self, "_split", None)
        if cached is None or cached[0] is not self.packed:
            cached = (self.packed, self.packed.split(self.packed.shape[-1] // 3, dim=-1))
            self._split = cached
        return cached[1]

    @property
    def gate_logits(self) -> torch.Tensor:  # type: ignore[override]
        return self._chunks()[0]

    @property
    def log_scales(self) -> torch.Tensor:  # type: ignore[override]
        return self._chunks()[1] + self.log_scale_offset

    @property
    def log_shapes(self) -> torch.Tensor:  # type: ignore[override]
        return self._chunks()[2]

    def selected_log_likelihood(self, index: Any, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """``self[index].log_likelihood(u, observed)``. For the rows of a bool mask over the leading batch dims
        (:class:`LeadingRows`), one duration per mixture (``u [N, *rest, 1]`` > 0, not requiring grad; ``*rest`` the
        other batch dims, e.g. the events) and ``packed`` contiguous on the CPU, in the native kernel
        (:class:`_NativeMixtureLikelihood`): the selected rows of ``packed`` are read in place and the gradient is
        written once into a table of its shape."""
        index = LeadingRows.of(index)
        native = self._native_rows(index, u, observed)
        return native if native is not None else self[index].log_likelihood(u, observed)

    def _native_rows(self, index: Any, u: Duration, observed: torch.Tensor) -> torch.Tensor | None:
        """:meth:`selected_log_likelihood` by the native kernel, or ``None`` where it does not apply."""
        packed = self.packed
        if not (isinstance(index, LeadingRows) and _native.available() and packed.device.type == "cpu"
                and packed.dtype in (torch.float32, torch.float64) and packed.is_contiguous()
                and self.num_components <= _native.max_components()
                and tuple(packed.shape[: len(index.shape)]) == index.shape
                and isinstance(observed, torch.Tensor) and observed.dtype == torch.bool):
            return None
        rest = tuple(self.batch_shape[len(index.shape):])
        shape = (index.rows.shape[0], *rest, 1)
        u = torch.as_tensor(u, dtype=packed.dtype, device=packed.device)
        if tuple(u.shape) != shape or u.requires_grad or not bool((u > 0).all()):
            return None
        try:
            flags = torch.broadcast_to(observed, shape)
        except RuntimeError:
            return None
        total, mixtures = math.prod(index.shape), math.prod(rest)
        table = packed.view(total, mixtures, packed.shape[-1])
        value = _NativeMixtureLikelihood.apply(table, index.rows.to(packed.device), u.reshape(-1, mixtures),
                                               flags.reshape(-1, mixtures), self.log_scale_offset)
        return value.reshape(shape)
