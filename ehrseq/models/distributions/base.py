"""The per-visit survival distribution: the one object every head produces and everything downstream uses.

A :class:`SurvivalDistribution` describes, for each element of a batch (typically ``[B, M]``: patient ×
visit), the distribution of the remaining time R ≥ 0 from that visit to the event. Subclasses
implement :meth:`log_survival` and :meth:`log_density` (in log space, stable for extreme parameters);
everything else — S, F, f, h, H, quantiles, mean, the landmark view — is derived here, and subclasses
override a derived quantity only where they have a closed form.

Durations ``u`` are broadcast as follows (``batch_shape = [*S]``):

* a scalar or a 1-D tensor ``[U]`` — the same durations for every element → result ``[*S, U]``;
* a tensor ``[*S, U]`` — per-element durations → result ``[*S, U]``.

Guarantees (tested for every family): S(0) = 1, S non-increasing in u, 0 ≤ S ≤ 1, f ≥ 0.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch

from ehrseq.errors import ShapeError
from ehrseq.models.distributions._math import log1mexp

Duration = torch.Tensor | float | Sequence[float]


class SurvivalDistribution(ABC):
    """Distribution of the remaining time R ≥ 0, batched over ``batch_shape``.

    Subclasses store their parameters as tensors whose leading dimensions are ``batch_shape`` and list
    their names in :attr:`batched_fields` (so that indexing and device moves work generically).
    """

    #: Names of attributes holding tensors whose leading dims are the batch dims.
    batched_fields: tuple[str, ...] = ()

    # ------------------------------------------------------------------ to implement
    @property
    @abstractmethod
    def batch_shape(self) -> torch.Size:
        """Leading shape of the batch of distributions (e.g. ``[B, M]``)."""

    @abstractmethod
    def log_survival(self, u: Duration) -> torch.Tensor:
        """log S(u) = log P(R > u), shape ``[*batch_shape, U]``; 0 at u = 0, non-increasing."""

    @abstractmethod
    def log_density(self, u: Duration) -> torch.Tensor:
        """log f(u), shape ``[*batch_shape, U]`` (−inf where the density is 0)."""

    # ------------------------------------------------------------------ support
    @property
    def support_max(self) -> float:
        """Largest duration the model describes (the last grid point for grid heads, ``inf`` otherwise).

        Beyond it, grid-based families extrapolate as documented in each subclass.
        """
        return math.inf

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, self.batched_fields[0]).dtype

    @property
    def device(self) -> torch.device:
        return getattr(self, self.batched_fields[0]).device

    # ------------------------------------------------------------------ broadcasting
    def _durations(self, u: Duration) -> torch.Tensor:
        """Broadcast durations to ``[*batch_shape, U]`` in this distribution's dtype/device."""
        u = torch.as_tensor(u, dtype=self.dtype, device=self.device)
        batch = tuple(self.batch_shape)
        if u.dim() == 0:
            u = u.reshape(1)
        if u.dim() == 1:
            return u.expand(*batch, u.shape[0])
        if u.dim() == len(batch) + 1 and tuple(u.shape[:-1]) == batch:
            return u
        try:
            return u.expand(*batch, u.shape[-1])
        except RuntimeError as exc:
            raise ShapeError(
                f"durations of shape {list(u.shape)} do not broadcast to batch shape {list(batch)} + [U]"
            ) from exc

    # ------------------------------------------------------------------ derived quantities
    def survival(self, u: Duration) -> torch.Tensor:
        """S(u) = P(R > u)."""
        return self.log_survival(u).exp()

    def cdf(self, u: Duration) -> torch.Tensor:
        """F(u) = 1 − S(u), computed as −expm1(log S) (accurate when S is close to 1)."""
        return -torch.expm1(self.log_survival(u))

    def risk(self, horizon: Duration) -> torch.Tensor:
        """Probability of the event within ``horizon`` of the visit: F(horizon)."""
        return self.cdf(horizon)

    def log_survival_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log S(eˢ) at log-durations s (broadcast like durations), for integrals in log time.

        Generic version: ``log_survival(exp(s))``; families with a closed form in s override it (and
        :meth:`log_cdf_log_time`) to skip the exp/log round trip.
        """
        return self.log_survival(torch.as_tensor(log_u, dtype=self.dtype, device=self.device).exp())

    def log_cdf_log_time(self, log_u: torch.Tensor) -> torch.Tensor:
        """log F(eˢ) = log(1 − S(eˢ)) at log-durations s (−inf where F = 0, with a zero gradient there)."""
        return log1mexp(self.log_survival_log_time(log_u).clamp_max(0.0))

    def log_likelihood(self, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """log f(u) where ``observed`` (an event at u), else log S(u) (censored at u); ``[*batch_shape, U]``.

        ``observed`` is a bool tensor broadcastable to the result. Generic version: both terms, then a
        selection; families that share work between log S and log f override it.
        """
        return torch.where(observed, self.log_density(u), self.log_survival(u))

    def selected_log_likelihood(self, index: Any, u: Duration, observed: torch.Tensor) -> torch.Tensor:
        """``self[index].log_likelihood(u, observed)``: the likelihood of the selected batch elements (``u`` and
        ``observed`` broadcast to their batch shape + ``[U]``). Families that can read the selected parameters in
        place, without the gathered copy and its gradient's table, override it."""
        return self[index].log_likelihood(u, observed)

    def density(self, u: Duration) -> torch.Tensor:
        """f(u)."""
        return self.log_density(u).exp()

    def log_hazard(self, u: Duration) -> torch.Tensor:
        """log h(u) = log f(u) − log S(u)."""
        return self.log_density(u) - self.log_survival(u)

    def hazard(self, u: Duration) -> torch.Tensor:
        """h(u) = f(u) / S(u)."""
        return self.log_hazard(u).exp()

    def cumulative_hazard(self, u: Duration) -> torch.Tensor:
        """H(u) = −log S(u)."""
        return -self.log_survival(u)

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log P(lower < R ≤ upper) = log S(lower) + log(1 − S(upper)/S(lower)), shape ``[*batch_shape, U]``.

        Computed without subtracting probabilities (−inf where the interval has no mass; ``upper`` may
        be ``inf``). Families whose cumulative hazard increments have a closed form override it.
        """
        lower, upper = self._interval(lower, upper)
        finite = torch.isfinite(upper)
        log_lower = self.log_survival(lower)
        ratio = self.log_survival(torch.where(finite, upper, lower)) - log_lower
        ratio = torch.where(finite, ratio, torch.full_like(ratio, -math.inf))
        return log_lower + log1mexp(ratio.clamp_max(0.0))

    def _interval(self, lower: Duration, upper: Duration) -> tuple[torch.Tensor, torch.Tensor]:
        """Both bounds broadcast to ``[*batch_shape, U]``; ``ValueError`` unless upper ≥ lower."""
        lower, upper = self._durations(lower), self._durations(upper)
        if torch.any(upper < lower):
            raise ValueError("log_interval_mass needs upper >= lower")
        return lower, upper

    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """Smallest u with F(u) ≥ q, shape ``[*batch_shape, Q]``.

        Generic version: vectorized bisection on a bracket found by doubling (subclasses with a closed
        form override this). Where the distribution never reaches ``q`` (a grid head whose mass beyond
        the grid is larger than 1 − q and whose tail is flat), the result is ``inf``.
        """
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        target = torch.log1p(-q)  # log S at the quantile
        hi = torch.ones_like(q)
        finite_support = math.isfinite(self.support_max)
        scale = self.support_max if finite_support else 1.0
        hi = hi * scale
        # Grow the bracket until log S(hi) <= target (at most 2^60 × the initial scale).
        for _ in range(60):
            above = self.log_survival(hi) > target
            if not torch.any(above):
                break
            hi = torch.where(above, hi * 2.0, hi)
        unreachable = self.log_survival(hi) > target
        lo = torch.zeros_like(q)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            go_right = self.log_survival(mid) > target
            lo = torch.where(go_right, mid, lo)
            hi = torch.where(go_right, hi, mid)
        return torch.where(unreachable, torch.full_like(hi, math.inf), hi)

    def median(self) -> torch.Tensor:
        """Median remaining time, shape ``batch_shape``."""
        return self.quantile(0.5)[..., 0]

    def mean(self, upper: float | None = None, points: int = 2049) -> torch.Tensor:
        """E[min(R, upper)] = ∫_0^upper S(u) du, shape ``batch_shape``.

        With ``upper=None`` the integral runs to the 0.9999 quantile of each distribution (or to
        ``support_max`` when finite), which is the mean up to a negligible tail for families with
        unbounded support and the *restricted* mean for grid heads (documented in each subclass).
        Generic version: trapezoid rule on a grid that is dense near 0 (quadratic spacing).
        """
        if upper is None:
            if math.isfinite(self.support_max):
                limit = torch.full(tuple(self.batch_shape), self.support_max, dtype=self.dtype, device=self.device)
            else:
                limit = self.quantile(0.9999)[..., 0]
        else:
            limit = torch.full(tuple(self.batch_shape), float(upper), dtype=self.dtype, device=self.device)
        fractions = torch.linspace(0.0, 1.0, points, dtype=self.dtype, device=self.device) ** 2
        grid = limit.unsqueeze(-1) * fractions
        return torch.trapezoid(self.survival(grid), grid, dim=-1)

    def conditional(self, elapsed: torch.Tensor | float) -> ConditionalSurvival:
        """The landmark view: the distribution of R − s given R > s.

        ``elapsed`` (s) is a scalar or a tensor of shape ``batch_shape``. The result is again a
        :class:`SurvivalDistribution` with S_s(u) = S(s + u) / S(s).
        """
        return ConditionalSurvival(self, elapsed)

    # ------------------------------------------------------------------ indexing and devices
    def __getitem__(self, index: Any) -> SurvivalDistribution:
        """Select batch elements; ``index`` applies to the leading batch dims of every parameter (a bool mask is
        resolved once, :class:`LeadingRows`)."""
        index = LeadingRows.of(index)
        selected = copy.copy(self)
        for name in self.batched_fields:
            value = getattr(self, name)
            if value is not None:
                setattr(selected, name, index_leading(value, index))
        selected._after_index()
        return selected

    def _after_index(self) -> None:
        """Hook for subclasses that cache values derived from their parameters."""

    def masked(self, keep: torch.Tensor, fill: float = 0.0) -> SurvivalDistribution:
        """A copy whose parameters are replaced by ``fill`` wherever ``keep`` is False.

        ``keep`` is a bool tensor over the leading batch dims (e.g. the ``[B, M]`` visit mask of a
        ``[B, M]`` or ``[B, M, E]`` batch). Losses call it so that padded visits, whose parameters may
        hold anything (NaN included), give finite values and exactly zero gradients. ``fill = 0`` is a
        valid parameter value for every family (logits, log-scales, locations, elapsed time).
        """
        replaced = copy.copy(self)
        for name in self.batched_fields:
            value = getattr(self, name)
            if value is not None:
                setattr(replaced, name, _where_leading(keep, value, fill))
        replaced._after_index()
        return replaced

    def to(self, device: torch.device | str) -> SurvivalDistribution:
        moved = copy.copy(self)
        for name in self.batched_fields:
            value = getattr(self, name)
            if value is not None:
                setattr(moved, name, value.to(device))
        moved._after_index()
        return moved

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={list(self.batch_shape)})"


class LeadingRows:
    """A bool mask over leading batch dims resolved once into the flat indices of its True entries, ``rows`` ``[n]``
    (row-major), so that indexing several parameters (or members, or a base and its elapsed times) by it finds them
    once; ``shape`` is the mask's."""

    __slots__ = ("rows", "shape")

    def __init__(self, rows: torch.Tensor, shape: Sequence[int]) -> None:
        self.rows, self.shape = rows, tuple(int(d) for d in shape)

    @classmethod
    def of(cls, index: Any) -> Any:
        """``index`` with a bool mask (of one or more dims) resolved into :class:`LeadingRows`; anything else as is."""
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool and index.dim() > 0:
            return cls(index.flatten().nonzero().squeeze(1), index.shape)
        return index


def index_leading(value: torch.Tensor, index: Any) -> torch.Tensor:
    """``value[index]``; a bool mask over the leading dims (or its :class:`LeadingRows`) is applied as an
    ``index_select`` of the selected rows of those dims flattened, whose gradient is one ``index_add`` (advanced
    indexing accumulates its gradient through the much slower ``index_put``)."""
    index = LeadingRows.of(index)
    if isinstance(index, LeadingRows):
        if tuple(value.shape[: len(index.shape)]) != index.shape:
            raise ShapeError(f"mask of shape {list(index.shape)} does not match the leading dims of {list(value.shape)}")
        return value.flatten(0, len(index.shape) - 1).index_select(0, index.rows.to(value.device))
    return value[index]


def _where_leading(keep: torch.Tensor, value: torch.Tensor, fill: float) -> torch.Tensor:
    """``value`` where ``keep`` (a mask over its leading dims) is True, ``fill`` elsewhere."""
    if keep.dim() > value.dim() or tuple(value.shape[: keep.dim()]) != tuple(keep.shape):
        raise ShapeError(f"mask of shape {list(keep.shape)} does not match the leading dims of {list(value.shape)}")
    keep = keep.to(device=value.device, dtype=torch.bool).reshape(*keep.shape, *([1] * (value.dim() - keep.dim())))
    return torch.where(keep, value, torch.full_like(value, fill))


class ConditionalSurvival(SurvivalDistribution):
    """R − s given R > s for a base distribution: S_s(u) = S(s + u) / S(s), f_s(u) = f(s + u) / S(s)."""

    batched_fields = ("elapsed",)

    def __init__(self, base: SurvivalDistribution, elapsed: torch.Tensor | float) -> None:
        self.base = base
        elapsed = torch.as_tensor(elapsed, dtype=base.dtype, device=base.device)
        if elapsed.dim() == 0:
            elapsed = elapsed.expand(tuple(base.batch_shape))
        if tuple(elapsed.shape) != tuple(base.batch_shape):
            raise ShapeError(
                f"elapsed time must be a scalar or have the batch shape {list(base.batch_shape)}, "
                f"got {list(elapsed.shape)}"
            )
        if torch.any(elapsed < 0):
            raise ValueError("elapsed time of a conditional (landmark) distribution must be >= 0")
        self.elapsed = elapsed

    @property
    def batch_shape(self) -> torch.Size:
        return self.base.batch_shape

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def support_max(self) -> float:
        return self.base.support_max  # conservative: the base's support bounds s + u

    def _shifted(self, u: Duration) -> tuple[torch.Tensor, torch.Tensor]:
        u = self._durations(u)
        s = self.elapsed.unsqueeze(-1)
        return u + s, self.base.log_survival(s)

    def log_survival(self, u: Duration) -> torch.Tensor:
        shifted, log_s_elapsed = self._shifted(u)
        return (self.base.log_survival(shifted) - log_s_elapsed).clamp(max=0.0)

    def log_density(self, u: Duration) -> torch.Tensor:
        shifted, log_s_elapsed = self._shifted(u)
        return self.base.log_density(shifted) - log_s_elapsed

    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """P(s + lower < R ≤ s + upper) / S(s), through the base's own interval mass."""
        shifted_lower, log_s_elapsed = self._shifted(lower)
        shifted_upper = self._durations(upper) + self.elapsed.unsqueeze(-1)
        return self.base.log_interval_mass(shifted_lower, shifted_upper) - log_s_elapsed

    def __getitem__(self, index: Any) -> ConditionalSurvival:
        index = LeadingRows.of(index)
        return ConditionalSurvival(self.base[index], index_leading(self.elapsed, index))

    def masked(self, keep: torch.Tensor, fill: float = 0.0) -> ConditionalSurvival:
        return ConditionalSurvival(self.base.masked(keep, fill), _where_leading(keep, self.elapsed, 0.0))

    def to(self, device: torch.device | str) -> ConditionalSurvival:
        return ConditionalSurvival(self.base.to(device), self.elapsed.to(device))


class CompetingRisksDistribution(ABC):
    """K mutually exclusive causes: cause-specific cumulative incidence functions F_k(u).

    ``log_cif(u)`` has shape ``[*batch_shape, K, U]``; the all-cause survival is
    S(u) = 1 − Σ_k F_k(u), available as a :class:`SurvivalDistribution` via :meth:`overall`.
    """

    @property
    @abstractmethod
    def batch_shape(self) -> torch.Size: ...

    @property
    @abstractmethod
    def num_causes(self) -> int: ...

    @abstractmethod
    def log_cif(self, u: Duration) -> torch.Tensor:
        """log F_k(u) for every cause, ``[*batch_shape, K, U]``."""

    @abstractmethod
    def overall(self) -> SurvivalDistribution:
        """All-cause survival S(u) = 1 − Σ_k F_k(u)."""

    def cif(self, u: Duration) -> torch.Tensor:
        """Cumulative incidence F_k(u), ``[*batch_shape, K, U]``."""
        return self.log_cif(u).exp()

    def risk(self, horizon: Duration, cause: int) -> torch.Tensor:
        """P(event of ``cause`` (1-based) within ``horizon``), ``[*batch_shape, U]``."""
        if not 1 <= cause <= self.num_causes:
            raise ValueError(f"cause must be in 1..{self.num_causes}, got {cause}")
        return self.cif(horizon)[..., cause - 1, :]
