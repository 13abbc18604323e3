"""Distributions defined on a horizon grid, and the two discrete-time heads (logistic hazard, PMF).

Grid convention (shared with the data layer and the discrete losses): cut points τ_0 = 0 < τ_1 < … < τ_L
in days, L bins; the bin of a remaining time R > 0 is κ(R) = l for τ_l < R ≤ τ_{l+1} and κ = L for
R > τ_L ("beyond the grid").

Every grid family is a proper distribution on [0, ∞):

* **inside the grid** each family has its own shape between knots (constant hazard for the discrete
  heads, i.e. log S linear within a bin — never forward fill; linear hazard, constant or linear density
  for the piecewise models of :mod:`ehrseq.models.distributions.piecewise`);
* **beyond τ_L** the hazard is held constant at a rate λ, so S(u) = S(τ_L)·e^{−λ(u − τ_L)}. For the
  hazard-parametrised families (logistic hazard, PMF, piecewise constant and linear hazard) λ is the
  hazard at τ_L (the last bin's hazard for the constant ones); for the density-parametrised families λ is
  the mean hazard of the last bin, (log S(τ_{L−1}) − log S(τ_L)) / Δτ_{L−1}, because their hazard at τ_L
  (last density over tail mass) can be arbitrarily large.

Hence S(0) = 1, S is non-increasing, f ≥ 0 everywhere and every quantile is finite (within the
floating-point range: a last bin holding e⁻¹⁰⁰ of the mass gives a tail rate below float32's range). ``mean()`` is the
**restricted** mean ∫_0^{τ_L} S (what the grid actually describes); ``mean(upper=math.inf)`` includes the
extrapolated exponential tail, ``mean(upper=c)`` restricts to any horizon c.

What the discrete losses need is exposed directly: :meth:`GridDistribution.log_mass` (log P(R ∈ bin l),
l = L being "beyond the grid"), :meth:`GridDistribution.log_survival_at_grid` and
:meth:`GridDistribution.discrete_log_likelihood` (Δ·log f_κ + (1 − Δ)·log S(τ_{min(κ+1, L)}): an event is
scored by its bin's mass, a censored remaining time inside bin κ counts as surviving that bin).
"""

from __future__ import annotations

import contextlib
import functools
import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ehrseq.errors import ConfigError, ShapeError
from ehrseq.models.distributions import _native
from ehrseq.models.distributions._math import (
    LOG_2,
    exp_by_exp2,
    gauss_legendre,
    log_one_minus_exp_neg,
    log_positive,
    log_softplus,
    one_minus_exp_neg_over,
)
from ehrseq.models.distributions.base import Duration, SurvivalDistribution

GridLike = torch.Tensor | Sequence[float]

#: Gauss–Legendre nodes per bin for integrals of S without a closed form (exact for polynomial S).
_NODES_PER_BIN = 16


@contextlib.contextmanager
def sharing_knots(distribution: SurvivalDistribution) -> Iterator[None]:
    """Within the block, a grid distribution computes its knot quantities once for all its calls.

    Losses use it around the several evaluations they make of one distribution (log S and log f, the
    two Survival-CRPS terms); for other families it does nothing. Nothing computed inside outlives the
    block, so every backward pass gets its own graph.
    """
    if not isinstance(distribution, GridDistribution) or distribution._memo is not None:
        yield
        return
    distribution._memo = {}
    try:
        yield
    finally:
        distribution._memo = None


def within_call(method: Callable[..., Any]) -> Callable[..., Any]:
    """Share knot quantities between the helpers of one public call (and only one: no graph outlives it).

    The outermost decorated call opens a memo that :meth:`GridDistribution._cached` fills; it is
    dropped when that call returns, so that nothing computed for one backward pass is reused by another.
    """

    @functools.wraps(method)
    def wrapper(self: GridDistribution, *args: Any, **kwargs: Any) -> Any:
        if self._memo is not None:
            return method(self, *args, **kwargs)
        self._memo = {}
        try:
            return method(self, *args, **kwargs)
        finally:
            self._memo = None

    return wrapper


def as_grid(grid: GridLike, like: torch.Tensor) -> torch.Tensor:
    """Validate a horizon grid and return it as a 1-D tensor in the dtype/device of ``like``.

    Raises :class:`ConfigError` unless the grid is 1-D with at least two finite, strictly increasing
    cut points starting at 0.
    """
    tensor = torch.as_tensor(grid, dtype=like.dtype, device=like.device)
    if tensor.dim() != 1 or tensor.shape[0] < 2:
        raise ConfigError(f"a horizon grid must be a 1-D sequence of at least 2 cut points, got shape {list(tensor.shape)}")
    if not bool(torch.isfinite(tensor).all()):
        raise ConfigError("horizon grid cut points must be finite")
    if tensor[0].item() != 0.0:
        raise ConfigError(f"a horizon grid must start at 0, got {tensor[0].item()}")
    if not bool((tensor[1:] > tensor[:-1]).all()):
        raise ConfigError("horizon grid cut points must be strictly increasing")
    return tensor


def check_parameters(value: torch.Tensor, name: str, last: int | None = None) -> torch.Tensor:
    """Raise :class:`ShapeError` unless ``value`` is a floating tensor (with last dim ``last`` if given)."""
    if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
        raise ShapeError(f"{name} must be a floating-point tensor, got {getattr(value, 'dtype', type(value))}")
    if last is not None and (value.dim() == 0 or value.shape[-1] != last):
        raise ShapeError(f"{name} must have last dimension {last}, got shape {list(value.shape)}")
    return value


#: Spread of a row (max − min) up to which its exponentials, shifted by the max, stay normal in float64.
_FLOAT64_EXP_RANGE = 600.0


def reverse_logcumsumexp(x: torch.Tensor) -> torch.Tensor:
    """y_l = log Σ_{j ≥ l} e^{x_j} along the last dim.

    When every row spans less than 600 nats (always, for logits within ±300), it is a plain cumulative
    sum of e^{x − max} in float64, several times faster on CPU than ``torch.logcumsumexp`` and exact in
    float64; wider rows use ``torch.logcumsumexp``.
    """
    top = x.amax(dim=-1, keepdim=True)
    if x.numel() and bool(((top - x.amin(dim=-1, keepdim=True)) < _FLOAT64_EXP_RANGE).all()):
        shifted = (x - top).to(torch.float64).exp()
        return shifted.flip(-1).cumsum(dim=-1).flip(-1).log().to(x.dtype) + top
    return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)


def gather_last(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[..., index]`` elementwise: values ``[*S, N]``, index ``[*S, U]`` → ``[*S, U]``."""
    return values.expand(*index.shape[:-1], values.shape[-1]).gather(-1, index)


class GridDistribution(SurvivalDistribution):
    """Base of the grid families: knots, bins, the exponential tail and the discrete-loss accessors.

    Subclasses define the values at the knots (:meth:`_log_survival_grid`, :meth:`_log_mass_grid`) and
    the shape inside a bin (:meth:`_segment_log_survival`, :meth:`_segment_log_density`,
    :meth:`_segment_quantile`), each evaluated for bin indices ``k`` in 0..L−1 and offsets
    0 ≤ t ≤ Δτ_k from the bin's left knot.
    """

    batched_fields = ("logits",)
    #: Head outputs beyond one per inner bin: L + ``extra_outputs`` logits in the last dim.
    extra_outputs: int = 0
    grid: torch.Tensor
    _memo: dict[str, Any] | None = None

    def __init__(self, logits: torch.Tensor, grid: GridLike) -> None:
        self.logits = check_parameters(logits, "logits")
        self.grid = as_grid(grid, logits)
        check_parameters(logits, "logits", self.num_bins + self.extra_outputs)

    @property
    def batch_shape(self) -> torch.Size:
        return self.logits.shape[:-1]

    def _cached(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self._memo is None:
            return compute()
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _cached_for(self, name: str, inputs: tuple[torch.Tensor, ...], compute: Callable[[], Any]) -> Any:
        """``compute()``, shared within the memo by the calls on the same input tensors (by identity: the memo
        holds them, so that no other tensor can take their place)."""
        if self._memo is None:
            return compute()
        key = f"{name}:" + ":".join(str(id(value)) for value in inputs)
        entry = self._memo.get(key)
        if entry is not None and all(a is b for a, b in zip(entry[0], inputs)):
            return entry[1]
        value = compute()
        self._memo[key] = (inputs, value)
        return value

    def _knots(self, values: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values[..., k], values[..., k + 1]) of a knot table ``[*S, L+1]`` (log S, knot logits): the first two
        of :meth:`_knot_reads`."""
        left, right, _ = self._knot_reads(values, k)
        return left, right

    def _knot_reads(self, values: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values[..., k], values[..., k + 1], values[..., L:]) by one gather, shared by the calls of one memo on
        the same ``k``: the backward pass of every read of the table is one scatter into one new gradient (a slice
        of the last column apart would cost another table of zeros)."""

        def reads() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            last = torch.full_like(k[..., :1], self.num_bins)
            return gather_last(values, torch.cat([k, k + 1, last], dim=-1)).split([k.shape[-1], k.shape[-1], 1], dim=-1)

        return self._cached_for("knots", (values, k), reads)

    def _after_index(self) -> None:
        self.grid = self.grid.to(device=self.logits.device, dtype=self.logits.dtype)
        self._memo = None

    # ------------------------------------------------------------------ grid geometry
    @property
    def num_bins(self) -> int:
        """L, the number of bins inside the grid."""
        return int(self.grid.shape[0]) - 1

    @property
    def support_max(self) -> float:
        return float(self.grid[-1])

    @property
    def widths(self) -> torch.Tensor:
        """Δτ_l = τ_{l+1} − τ_l, shape ``[L]``."""
        return self._cached("widths", lambda: self.grid[1:] - self.grid[:-1])

    def bin_index(self, u: Duration) -> torch.Tensor:
        """κ(u): l for τ_l < u ≤ τ_{l+1}, L beyond τ_L (and 0 at u = 0), int64 ``[*batch_shape, U]``."""
        u = self._durations(u).contiguous()
        return (torch.bucketize(u, self.grid, right=False) - 1).clamp(0, self.num_bins)

    # ------------------------------------------------------------------ values at the knots
    @abstractmethod
    def _log_survival_grid(self) -> torch.Tensor:
        """log S(τ_l) for l = 0..L, ``[*S, L+1]``, with an exact 0 at l = 0."""

    @abstractmethod
    def _log_mass_grid(self) -> torch.Tensor:
        """log P(R ∈ bin l) for l = 0..L−1 and log P(R > τ_L) at l = L, ``[*S, L+1]``."""

    @within_call
    def log_survival_at_grid(self) -> torch.Tensor:
        """log S(τ_l) for l = 0..L, ``[*batch_shape, L+1]``."""
        return self._cached("log_survival", self._log_survival_grid)

    @within_call
    def log_mass(self, bins: torch.Tensor | None = None) -> torch.Tensor:
        """log P(R ∈ bin l); l = L is the mass beyond the grid, log S(τ_L).

        Without ``bins``: all masses, ``[*batch_shape, L+1]``. With ``bins`` (int64, values in 0..L) of
        shape ``batch_shape`` or ``[*batch_shape, U]``: the masses of those bins, in that shape.
        """
        masses = self._cached("log_mass", self._log_mass_grid)
        if bins is None:
            return masses
        return self._gather_bins(masses, bins)

    @within_call
    def discrete_log_likelihood(self, bins: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        """Δ·log f_κ + (1 − Δ)·log S(τ_{min(κ+1, L)}), the grid likelihood of a bin label.

        ``bins`` holds κ (0..L) and ``event`` the event indicator (bool or 0/1), both of shape
        ``batch_shape`` (or ``[*batch_shape, U]``). A censored remaining time inside bin κ counts as
        surviving bin κ; censoring beyond the grid counts as surviving to τ_L.
        """
        survived = self._gather_bins(self.log_survival_at_grid(), (bins + 1).clamp_max(self.num_bins))
        observed = self._gather_bins(self.log_mass(), bins)
        return torch.where(event.to(torch.bool), observed, survived)

    def _gather_bins(self, values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
        batch = tuple(self.batch_shape)
        bins = torch.as_tensor(bins, device=values.device)
        if bins.dtype.is_floating_point or bins.dtype == torch.bool:
            raise ShapeError(f"bin indices must be an integer tensor, got {bins.dtype}")
        if tuple(bins.shape) == batch:
            return gather_last(values, bins.unsqueeze(-1).long()).squeeze(-1)
        if bins.dim() == len(batch) + 1 and tuple(bins.shape[:-1]) == batch:
            return gather_last(values, bins.long())
        raise ShapeError(f"bin indices must have shape {list(batch)} or {list(batch)} + [U], got {list(bins.shape)}")

    # ------------------------------------------------------------------ the tail beyond τ_L
    def _log_tail_rate(self) -> torch.Tensor:
        """log λ, ``[*S]``: by default the mean hazard of the last bin, log S(τ_{L−1}) − log S(τ_L) over Δτ_{L−1}.

        The increment is softplus(log f_{L−1} − log S(τ_L)), exact even when it is tiny.
        """
        log_s = self.log_survival_at_grid()
        log_m = self.log_mass()
        return log_softplus(log_m[..., -2] - log_s[..., -1]) - torch.log(self.widths[-1])

    @within_call
    def tail_rate(self) -> torch.Tensor:
        """λ, the constant hazard beyond τ_L, shape ``batch_shape``."""
        return self._cached("log_tail_rate", self._log_tail_rate).exp()

    def _log_tail_rate_read(self, k: torch.Tensor) -> torch.Tensor:
        """log λ ``[*S, 1]`` for the tail terms of log S and log f at targets located in bins ``k`` ``[*S, U]``: the
        family's cached rate; a family whose λ is its last output reads it with its knot logits (one gather)."""
        return self._cached("log_tail_rate", self._log_tail_rate).unsqueeze(-1)

    # ------------------------------------------------------------------ the shape inside a bin
    @abstractmethod
    def _segment_log_survival(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log S(τ_k + t) for bins k in 0..L−1 and 0 ≤ t ≤ Δτ_k (``k``, ``t``: ``[*S, U]``)."""

    @abstractmethod
    def _segment_log_density(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log f(τ_k + t) for bins k in 0..L−1 and 0 ≤ t ≤ Δτ_k."""

    @abstractmethod
    def _segment_quantile(self, k: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The offset t in bin k where log S(τ_k + t) = target (log S(τ_{k+1}) ≤ target < log S(τ_k))."""

    def _knot_logits(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits at the two knots of bin k (for families with one output per knot)."""
        return self._knots(self.logits, k)

    def _locate(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bin (clamped to the last inner bin), offset within it (clamped to the bin), inside-grid flag; shared
        by the calls of one memo on the same ``u`` (log S and log f of a likelihood)."""

        def locate() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            k = (torch.bucketize(u.contiguous(), self.grid, right=False) - 1).clamp(0, self.num_bins - 1)
            t = torch.minimum((u - self.grid[k]).clamp_min(0.0), self.widths[k])
            return k, t, u <= self.grid[-1]

        return self._cached_for("locate", (u,), locate)

    # ------------------------------------------------------------------ the distribution
    @within_call
    def log_survival(self, u: Duration) -> torch.Tensor:
        u = self._durations(u)
        k, t, inside = self._locate(u)
        left, right, last = self._knot_reads(self.log_survival_at_grid(), k)
        # rounding must not lift S above its knot values (S(0) = 1 exactly, S monotone across knots)
        segment = torch.maximum(torch.minimum(self._segment_log_survival(k, t), left), right)
        segment = torch.where(t > 0, segment, left)
        beyond = (u - self.grid[-1]).clamp_min(0.0)
        tail = last - self._log_tail_rate_read(k).exp() * beyond
        return torch.where(inside, segment, tail)

    @within_call
    def log_interval_mass(self, lower: Duration, upper: Duration) -> torch.Tensor:
        """log P(lower < R ≤ upper): a log-sum-exp of the mass of (lower, upper] in each bin and in the tail.

        Each partial mass is computed in closed form from the hazard accumulated over it (or directly for
        the density families), so no two probabilities or cumulative hazards are subtracted: a tiny
        interval mass keeps its precision, and O(1) gradients, even in float32.
        """
        lower, upper = self._interval(lower, upper)
        finite = torch.isfinite(upper)
        upper = torch.where(finite, upper, lower + 1.0)  # T = ∞ gives log S(lower), computed apart
        knots = self.grid[:-1]
        start = torch.minimum((lower.unsqueeze(-1) - knots).clamp_min(0.0), self.widths)  # [*S, U, L]
        end = torch.minimum((upper.unsqueeze(-1) - knots).clamp_min(0.0), self.widths)
        k = torch.arange(self.num_bins, device=self.device).repeat(lower.shape[-1]).expand(*lower.shape[:-1], -1)
        inside = self._segment_log_mass_between(k, start.flatten(-2), end.flatten(-2)).reshape(start.shape)
        last = self.grid[-1]
        tail_start, tail_end = torch.clamp(lower, min=last), torch.clamp(upper, min=last)
        log_rate = self._cached("log_tail_rate", self._log_tail_rate).unsqueeze(-1)
        tail = (
            self.log_survival_at_grid()[..., -1:] - log_rate.exp() * (tail_start - last)
            + log_one_minus_exp_neg(log_rate + log_positive(tail_end - tail_start))
        )
        log_mass = torch.logsumexp(torch.cat([inside, tail.unsqueeze(-1)], dim=-1), dim=-1)
        return torch.where(finite, log_mass, self.log_survival(lower))

    def _segment_log_mass_between(self, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """log P(τ_k + a < R ≤ τ_k + b) for 0 ≤ a ≤ b ≤ Δτ_k: S(τ_k + a)·(1 − e^{−(hazard accumulated)})."""
        return self._segment_log_survival(k, a) + log_one_minus_exp_neg(self._segment_log_hazard_between(k, a, b))

    def _segment_log_hazard_between(self, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """log(H(τ_k + b) − H(τ_k + a)) (−inf when a = b); the hazard families override it in closed form."""
        return log_positive(self._segment_log_survival(k, a) - self._segment_log_survival(k, b))

    @within_call
    def log_density(self, u: Duration) -> torch.Tensor:
        u = self._durations(u)
        k, t, inside = self._locate(u)
        beyond = (u - self.grid[-1]).clamp_min(0.0)
        log_rate = self._log_tail_rate_read(k)
        tail = log_rate + self._knot_reads(self.log_survival_at_grid(), k)[2] - log_rate.exp() * beyond
        return torch.where(inside, self._segment_log_density(k, t), tail)

    @within_call
    def quantile(self, q: Duration, iterations: int = 64) -> torch.Tensor:
        """Smallest u with F(u) ≥ q, in closed form (``iterations`` is not used)."""
        q = self._durations(q)
        if torch.any((q <= 0) | (q >= 1)):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        target = torch.log1p(-q)
        log_s = self.log_survival_at_grid()
        # first bin whose right knot has log S <= target; L when the quantile lies beyond the grid
        k = torch.searchsorted((-log_s[..., 1:]).contiguous(), (-target).contiguous(), side="left")
        inner = k.clamp_max(self.num_bins - 1)
        inside = self.grid[inner] + self._segment_quantile(inner, target)
        tail = self.grid[-1] + (log_s[..., -1:] - target).clamp_min(0.0) / self.tail_rate().unsqueeze(-1)
        return torch.where(k < self.num_bins, inside, tail)

    @within_call
    def mean(self, upper: float | torch.Tensor | None = None, points: int = 2049) -> torch.Tensor:
        """E[min(R, upper)] = ∫_0^upper S(u) du, shape ``batch_shape``.

        ``upper=None`` gives the restricted mean up to τ_L; ``math.inf`` includes the exponential tail
        (S(τ_L)/λ beyond τ_L). Bins use a closed form or 16-point Gauss–Legendre per bin (exact when S is
        polynomial within bins); ``points`` is not used.
        """
        upper_t = self._upper(upper)
        inside = self._segment_integrals(self._lengths_before(upper_t)).sum(dim=-1)
        return inside + self._tail_integral(torch.zeros_like(upper_t), upper_t, 1)

    def _lengths_before(self, point: torch.Tensor) -> torch.Tensor:
        """e_l = clamp(point − τ_l, 0, Δτ_l): how much of each inner bin lies before ``point`` ``[*S]``."""
        return torch.minimum((point.unsqueeze(-1) - self.grid[:-1]).clamp_min(0.0), self.widths)

    def _tail_integral(self, start: torch.Tensor, end: torch.Tensor, power: int) -> torch.Tensor:
        """∫ S(u)^p du over [start, end] ∩ [τ_L, ∞), the exponential tail; ``end`` may be ``inf``.

        With a = max(start, τ_L), b = max(end, τ_L): S(a)^p·(b − a)·(1 − e^{−pλ(b−a)})/(pλ(b−a)), or
        S(a)^p/(pλ) (in log space) for b = ∞ — never a difference of two tail integrals.
        """
        last = self.grid[-1]
        a, b = torch.clamp(start, min=last), torch.clamp(end, min=last)
        log_rate = self._cached("log_tail_rate", self._log_tail_rate)
        log_start = power * (self.log_survival_at_grid()[..., -1] - log_rate.exp() * (a - last))
        log_rate = log_rate + math.log(power)
        finite = torch.isfinite(b)
        length = torch.where(finite, b - a, torch.zeros_like(a))
        partial = log_start.exp() * length * one_minus_exp_neg_over(log_rate.exp() * length)
        # the unused branch must not overflow: its gradient would be 0·∞
        whole = torch.where(finite, torch.full_like(a, -math.inf), log_start - log_rate).exp()
        return torch.where(finite, partial, whole)

    @within_call
    def survival_crps(self, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """∫_0^y F(u)² du + ∫_start^∞ S(u)² du, elementwise for ``y``, ``start`` of shape ``batch_shape``.

        The two terms of the Survival-CRPS (``start`` = ∞: no tail term), integrated bin by bin — in closed form
        for the constant-hazard and density families and the exponential tail, by Gauss–Legendre on
        cumulative-hazard panels for the linear hazard (128 evaluations per bin: slow for large L) — so
        the kinks at the knots cost no accuracy. F² = 1 − 2S + S², so 𝓛(y) loses relative (not absolute)
        accuracy where F is tiny.
        """
        zero = torch.zeros_like(y)
        before_y = self._lengths_before(y)
        lower = (before_y - 2.0 * self._segment_integrals(before_y) + self._segment_integrals(before_y, 2)).sum(dim=-1)
        lower = lower + (y - self.grid[-1]).clamp_min(0.0) - 2.0 * self._tail_integral(zero, y, 1) + self._tail_integral(zero, y, 2)
        finite = torch.isfinite(start)
        safe_start = torch.where(finite, start, y)
        whole = self._segment_integrals(self.widths.expand_as(before_y), 2)
        after_start = (whole - self._segment_integrals(self._lengths_before(safe_start), 2)).sum(dim=-1)
        # no tail term (start = ∞): an empty interval, so that nothing unused can overflow
        tail = after_start + self._tail_integral(safe_start, torch.where(finite, torch.inf, safe_start), 2)
        return lower + torch.where(finite, tail, torch.zeros_like(tail))

    def _upper(self, upper: float | torch.Tensor | None) -> torch.Tensor:
        if upper is None:
            upper = self.grid[-1]
        upper_t = torch.as_tensor(upper, dtype=self.dtype, device=self.device)
        if torch.any(upper_t < 0):
            raise ValueError("the upper limit of a restricted mean must be >= 0")
        return upper_t.expand(tuple(self.batch_shape))

    def _segment_integrals(self, lengths: torch.Tensor, power: int = 1) -> torch.Tensor:
        """∫_0^{e_l} S(τ_l + s)^p ds for every inner bin l, ``lengths`` e ``[*S, L]`` → ``[*S, L]``.

        16-point Gauss–Legendre per bin, exact while S^p is a polynomial of degree ≤ 31 in the bin.
        """
        nodes, weights = gauss_legendre(_NODES_PER_BIN, self.dtype, self.device)
        t = lengths.unsqueeze(-1) * nodes  # [*S, L, n]
        k = torch.arange(self.num_bins, device=self.device).repeat_interleave(nodes.shape[0])
        flat_t = t.reshape(*t.shape[:-2], -1)
        values = (power * self._segment_log_survival(k.expand_as(flat_t), flat_t)).exp().reshape(t.shape)
        return lengths * (values * weights).sum(dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={list(self.batch_shape)}, bins={self.num_bins})"


#: Up to this many columns a suffix sum is one product with a triangular matrix of ones (L multiply-adds per
#: element, in one BLAS call): on a 2-core EPYC, [16,369, 32] in 0.3 ms against 0.4–1.9 ms for a reversed
#: ``cumsum`` (two copies by ``flip``); at 128 columns the product is slower.
_SUFFIX_BY_PRODUCT = 64


@functools.lru_cache(maxsize=32)
def _suffix_matrix(size: int, dtype: torch.dtype, device: torch.device, negate: bool) -> torch.Tensor:
    """T ``[size, size]``, T_kj = ±1_{k ≥ j}: x @ T is the suffix sum Σ_{k≥j} x_k of every row of x."""
    return torch.ones(size, size, dtype=dtype, device=device).tril_().mul_(-1.0 if negate else 1.0)


def _suffix_sums(x: torch.Tensor, *, negate: bool = False) -> torch.Tensor:
    """Σ_{k≥j} x_k along the last dimension (negated if ``negate``), a new tensor of the shape of ``x``.

    Each output sums the same terms as a reversed ``cumsum`` (only the order of the additions differs);
    up to :data:`_SUFFIX_BY_PRODUCT` columns as one matrix product, beyond as a reversed ``cumsum``.
    """
    size = x.shape[-1]
    if size <= _SUFFIX_BY_PRODUCT:
        return x @ _suffix_matrix(size, x.dtype, x.device, negate)
    sums = x.flip(-1).cumsum_(dim=-1).flip(-1)
    return sums.neg_() if negate else sums


def _knots_from_steps(steps: torch.Tensor) -> torch.Tensor:
    """log S at the knots ``[*S, L+1]`` from the steps −ΔH_l ``[*S, L]``: a leading 0, then their running sums
    (written in place into one new table, no ``cat``)."""
    log_s = steps.new_empty(*steps.shape[:-1], steps.shape[-1] + 1)
    log_s[..., 0] = 0.0
    torch.cumsum(steps, dim=-1, out=log_s[..., 1:])
    return log_s


#: Elements per row block of the Survival-CRPS of constant-hazard grids: a block's scratch buffers (1 MB each in
#: float32) stay in cache; on a 2-core EPYC a block of 2^18 was about 1.8× faster than one of 2^20 or 2^14.
_BLOCK_ELEMENTS = 1 << 18


def _row_blocks(rows: int, width: int) -> list[slice]:
    """Slices of about :data:`_BLOCK_ELEMENTS` elements over ``rows`` rows of ``width`` columns, of equal
    sizes (a remainder block of a few rows would cost a block's dozens of operations for nothing)."""
    count = max(1, round(rows * max(width, 1) / _BLOCK_ELEMENTS))
    step = max(1, -(-rows // count))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _phi(increments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(φ(u), e^{−u}) for u ≥ 0, φ(x) = (1 − e^{−x})/x = ∫_0^1 e^{−xv} dv by expm1 (exact at any u, 1 at u = 0)."""
    safe = increments.clamp_min(1e-30)
    decay = safe.neg().expm1_()
    return decay.div(safe).neg_(), decay.add_(1.0)


def _psi(increments: torch.Tensor, phi: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """ψ(u) = ∫_0^1 v e^{−uv} dv = (φ(u) − e^{−u})/u from φ(u) and e^{−u}.

    The quotient loses ε/u of relative accuracy as u → 0; below c (1e-2 in float32, 1e-4 in float64) it is
    blended arithmetically with ½ − u/3: ψ ≈ (φ − e^{−u})/c + (1 − u/c)(½ − u/3), relative error below
    ε/c + c²/4 (2e-5 in float32, 3e-9 in float64) — ``torch.where`` is many times slower on CPU.
    """
    cut = 1e-2 if increments.dtype == torch.float32 else 1e-4
    floor = increments.clamp_min(cut)
    psi = (phi - decay).div_(floor)
    share = increments.div(floor).neg_().add_(1.0)
    return psi.addcmul_(share, increments.mul(-1.0 / 3.0).add_(0.5))


def _full_bins(log_s: torch.Tensor, grid: torch.Tensor, y: torch.Tensor, start: torch.Tensor, gradients: bool,
               steps: tuple[torch.Tensor, torch.Tensor] | None, located: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``[N, L]`` part of :func:`_pytorch_crps`:
    ½ Σ_l [1_{l<κ}(2Δτ_l − 4M_l + 2Q_l) + 1_{l>κ_a} 2Q_l] ``[N]`` and, if ``gradients``, its gradient in log S
    ``[N, L+1]``; #{l: τ_{l+1} < y} and #{l < L: τ_l ≥ a} are written into ``located`` (int64 ``[2, N]``).

    Runs in row blocks of :data:`_BLOCK_ELEMENTS` on scratch buffers reused from block to block.
    """
    rows_total, num_bins = log_s.shape[0], log_s.shape[1] - 1
    dtype = log_s.dtype
    widths = grid[1:] - grid[:-1]
    double_widths = widths * 2.0
    # per row, #{l: τ_{l+1} < y} = κ (the bin of y, L beyond the grid) and #{l < L: τ_l ≥ a} (a = ∞: none), as
    # sums of the masks each block forms anyway (cheaper on CPU than a searchsorted of the rows in the grid)
    counts = y.new_empty(2, rows_total)
    score = torch.empty_like(y)
    grad = torch.empty_like(log_s) if gradients else None
    blocks = _row_blocks(rows_total, num_bins)
    if not blocks:  # no rows
        return score, grad
    size = blocks[0].stop - blocks[0].start
    scratch = [log_s.new_empty(size, num_bins) for _ in range(11)]
    knots_scratch = log_s.new_empty(size, num_bins + 1)
    cut = 1e-2 if dtype == torch.float32 else 1e-4  # of ψ (:func:`_psi`)
    for rows in blocks:
        n = rows.stop - rows.start
        phi, decay, scaled, mass, squared, first, second, drop, before, beyond, third = (t[:n] for t in scratch)
        block = log_s[rows]
        knots = exp_by_exp2(block, out=knots_scratch[:n])
        left = knots[:, :-1]
        if steps is None:
            torch.sub(block[:, 1:], block[:, :-1], out=drop)  # −ΔH_l ≤ 0
            torch.clamp_max(drop, -1e-30, out=second)  # φ(ΔH) = expm1(−ΔH)/(−ΔH)
            torch.expm1(second, out=decay)
        else:  # the family's own −ΔH and 1 − e^{−ΔH}, both floored as above (φ → 1 where both underflow)
            drop = steps[0][rows]
            torch.clamp_max(drop, -1e-30, out=second)
            torch.neg(steps[1][rows], out=decay).clamp_max_(-1e-30)
        torch.div(decay, second, out=phi)
        torch.mul(left, widths, out=scaled)  # Δτ S_l
        torch.mul(phi, scaled, out=mass)  # M_l
        torch.add(left, knots[:, 1:], out=squared).mul_(mass)  # 2Q_l
        torch.gt(y[rows].unsqueeze(1), grid[1:], out=before)  # 1_{l<κ} = 1_{τ_{l+1} < y}
        torch.ge(grid[:-1], start[rows].unsqueeze(1), out=beyond)  # 1_{l>κ_a} = 1_{τ_l ≥ a}
        torch.sum(before, dim=1, out=counts[0, rows])
        torch.sum(beyond, dim=1, out=counts[1, rows])
        # 2[Σ_{l<κ} (Δτ − 2M + Q) + Σ_{l>κ_a} Q]: sums of selected terms, no difference of two integrals
        torch.add(squared, mass, alpha=-4.0, out=first).add_(double_widths).mul_(before).addcmul_(squared, beyond)
        torch.sum(first, dim=1, out=score[rows])
        if not gradients:
            continue
        # ψ(ΔH) (:func:`_psi`: with c' = max(ΔH, c), ψ = [φ − e^{−ΔH} + (c' − ΔH)(½ − ΔH/3)]/c'), then
        # −W_l = −Δτ S_l ψ(ΔH_l) = −∂M_l/∂log S_{l+1}
        decay.add_(1.0)  # e^{−ΔH}
        torch.clamp_max(drop, -cut, out=second)  # −c'
        torch.sub(drop, second, out=first)  # c' − ΔH
        torch.add(drop, 1.5, out=third)  # 3(½ − ΔH/3)
        phi.sub_(decay).addcmul_(first, third, value=1.0 / 3.0).mul_(scaled).div_(second)  # −W
        # 2R_l = S_l((1 + e^{−ΔH})W + e^{−ΔH}M) = S_l(W + e^{−ΔH}(M + W))
        torch.sub(mass, phi, out=second).mul_(decay).sub_(phi).mul_(left)
        either = torch.add(before, beyond, out=scaled)
        out = grad[rows]
        # ∂/∂log S_l: 2[1_{l<κ}(Q + W − M) + 1_{l>κ_a} Q] − (1_{l<κ} + 1_{l>κ_a}) R
        #           = (1_{l<κ} + 1_{l>κ_a})(2Q − R) − 2·1_{l<κ}(M − W)
        torch.add(squared, second, alpha=-0.5, out=out[:, :-1]).mul_(either)
        out[:, :-1].addcmul_(before, torch.add(mass, phi, out=first), value=-2.0)
        out[:, -1] = 0.0
        # ∂/∂log S_{l+1}: (1_{l<κ} + 1_{l>κ_a}) R − 2·1_{l<κ} W
        out[:, 1:].addcmul_(second, either, value=0.5).addcmul_(before, phi, value=2.0)

    score.mul_(0.5)  # the blocks summed twice the terms
    located.copy_(counts)
    return score, grad


def _pytorch_crps(log_s: torch.Tensor, log_rate: torch.Tensor, grid: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                  gradients: bool, steps: tuple[torch.Tensor, torch.Tensor] | None, cdf: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """:class:`_ConstantHazardCRPS` as whole-tensor operations (any device; the reference of the native kernel,
    :func:`~ehrseq.models.distributions._native.grid_crps`, which returns the same): the score ``[N]`` and, if
    ``gradients``, its gradient in log S ``[N, L+1]`` and in log λ ``[N]``, F(y)² ``[N]`` (if ``cdf``; else None)
    and S(a)² ``[N]`` (0 without a tail term), the gradients in y and a; without ``gradients`` those are None.
    """
    rows_total, num_bins = log_s.shape[0], log_s.shape[1] - 1
    dtype = log_s.dtype
    widths = grid[1:] - grid[:-1]
    has_tail = start.abs() < math.inf  # isfinite, in two fast kernels instead of its several
    # knot indices κ, κ_a, min(κ, L−1), min(κ_a, L−1), their right neighbours and L: columns of [N, L+1]; the
    # full bins give the first two rows as #{l: τ_{l+1} < y} and #{l < L: τ_l ≥ a}
    index = torch.empty(7, rows_total, dtype=torch.long, device=y.device)
    score, grad = _full_bins(log_s, grid, y, start, gradients, steps, index[:2])
    # y's own bin (or the exponential tail): ∫_0^e (1 − S_κ e^{−rs})² ds; a's own bin to its right knot, then
    # (after the full bins) the exponential tail from max(a, τ_L). Rows 0 (y) and 1 (a) of [2, N]: the bin κ
    # (κ_a = L − 1 − #{l < L: τ_l ≥ a} when τ_0 < a ≤ τ_L, else L), log S at the knot κ, the rate r of bin
    # min(κ, L − 1) and the offset e of the target from τ_κ (a row without a tail term takes a = τ_L, κ_a = L,
    # and its terms are masked). Tables of rows are filled in place: no stacks of [N] vectors.
    inside = has_tail & (start <= grid[-1])
    tail_mask, inside_mask = has_tail.to(dtype), inside.to(dtype)
    located, rate_bins = index[:2], index[2:4]
    located[1] = torch.where(inside, num_bins - 1 - located[1], num_bins)
    torch.clamp_max(located, num_bins - 1, out=rate_bins)
    torch.add(rate_bins, 1, out=index[4:6])
    index[6] = num_bins
    bin_widths = widths.index_select(0, rate_bins.reshape(-1)).view(2, rows_total)
    offsets = y.new_empty(2, rows_total)
    offsets[0] = y
    torch.where(has_tail, start, grid[-1], out=offsets[1])
    offsets.sub_(grid.index_select(0, located.reshape(-1)).view(2, rows_total))
    at_knots = log_s.t().gather(0, index[:6])  # [6, N], from the columns of log S (no transposed copy)
    rates = torch.sub(at_knots[2:4], at_knots[4:], out=at_knots[4:]).div_(bin_widths)
    (log_knot, log_knot_a), (rate, rate_a), (e, e_a), (width, width_a) = at_knots[:2], rates, offsets, bin_widths
    w = torch.sub(width_a, e_a).mul_(inside_mask)
    arguments = torch.mul(rates, offsets)
    arguments[1] = w * rate_a * 2.0  # [r e, 2 r_a w]
    phis, decays = _phi(arguments)
    (phi1, phi_a), decay1 = phis, decays[0]
    phi2 = phi1 * (1.0 + decay1) * 0.5  # φ(2re)
    rate_tail = exp_by_exp2(log_rate)
    beyond = e_a * (1.0 - inside_mask)  # b − τ_L, b = max(a, τ_L)
    # S_κ, S_κ², S(a)² and E = S(b)²/(2λ): exponents ≤ 0 but the last one's (−∞ without a tail term)
    powers = torch.empty(4, rows_total, dtype=dtype, device=y.device)
    powers[0] = log_knot
    torch.mul(log_knot, 2.0, out=powers[1])
    torch.addcmul(log_knot_a, rate_a, e_a, value=-1.0, out=powers[2]).mul_(2.0)
    torch.addcmul(log_s[:, -1], rate_tail, beyond, value=-1.0, out=powers[3]).mul_(2.0).sub_(log_rate)
    powers[3].sub_(LOG_2).masked_fill_(~has_tail, -math.inf)
    exp_by_exp2(powers, out=powers)
    s1, s2, at_a, exponential = powers[0].mul_(e), powers[1].mul_(e), powers[2].mul_(tail_mask), powers[3]
    partial = at_a * w * phi_a
    score = score + e - 2.0 * s1 * phi1 + s2 * phi2 + partial + exponential
    if gradients:
        psi1, psi_a = _psi(arguments, phis, decays)
        psi2 = (psi1 * (1.0 + decay1) + decay1 * phi1) * 0.25  # ψ(2re)
        # through the knots of y's and a's bins, and through the ΔH_k = log S_k − log S_{k+1} of their rates
        value = torch.empty(7, rows_total, dtype=dtype, device=y.device)  # in the order of ``index``
        torch.mul(s2, phi2, out=value[0]).sub_(s1 * phi1).mul_(2.0)
        torch.mul(partial, 2.0, out=value[1])
        torch.mul(s1, psi1, out=value[2]).sub_(s2 * psi2).mul_(e).mul_(2.0).div_(width)
        torch.mul(e_a, phi_a, out=value[3]).addcmul_(w, psi_a).mul_(at_a).mul_(w).mul_(-2.0).div_(width_a)
        torch.neg(value[2:4], out=value[4:6])
        torch.mul(exponential, 2.0, out=value[6])
        grad.t().scatter_add_(0, index, value)
        # E = S(b)²/(2λ) with S(b) = S_L e^{−λ(b − τ_L)}: ∂E/∂log λ = −(2λ(b − τ_L) + 1)E; ∂/∂y = F(y)², ∂/∂a = −S(a)²
        rate_gradient = -(2.0 * rate_tail * beyond + 1.0) * exponential
        cdf_squared = torch.expm1(log_knot - rate * e).square() if cdf else None
        return score, grad, rate_gradient, cdf_squared, at_a
    return score, None, None, None, None


class _ConstantHazardCRPS(torch.autograd.Function):
    """The Survival-CRPS of a constant-hazard grid from its knot values log S(τ_l), differentiated by hand.

    Between knots log S is linear, S(τ_l + s) = S_l e^{−r_l s} with r_l = ΔH_l/Δτ_l and ΔH_l =
    log S_l − log S_{l+1}; beyond τ_L the rate λ continues, given as ``log_rate`` (computed by the family
    without cancellation: a tiny λ is not lost in the rounding of the knots, 1/λ is what the tail needs). With M_l = Δτ_l S_l φ(ΔH_l) = ∫_bin S
    and Q_l = M_l(S_l + S_{l+1})/2 = ∫_bin S², y in bin κ at offset e (κ = L: beyond the grid, e = y − τ_L)
    and the start a in bin κ_a at offset e_a:

        𝓛 = Σ_{l<κ} (Δτ_l − 2M_l + Q_l) + e − 2S_κ e φ(r e) + S_κ² e φ(2r e)
        𝓣 = S(a)² w φ(2r w) + Σ_{κ_a<l<L} Q_l + S(max(a, τ_L))²/(2λ)     (w = Δτ_{κ_a} − e_a; 0 if κ_a = L)

    (φ: :func:`_phi`; the suffix sums run from the end: no difference of two integrals). The gradient in
    log S ``[N, L+1]`` is formed in the same pass when one is wanted (``gradients``), so that the backward
    pass only scales it by the incoming gradient. S is log-linear between the two knots of its bin, so a
    full bin's integral of S^p depends on its left knot through ∫ p S^p (1 − s/Δτ) and on its right knot
    through ∫ p S^p s/Δτ: ∂M_l/∂log S_{l+1} = W_l = Δτ S_l ψ(ΔH_l), ∂M_l/∂log S_l = M_l − W_l,
    ∂Q_l/∂log S_{l+1} = R_l = Δτ S_l²(ψ(ΔH)(1 + e^{−ΔH}) + e^{−ΔH}φ(ΔH))/2 (= 2Δτ S_l² ψ(2ΔH)),
    ∂Q_l/∂log S_l = 2Q_l − R_l, over the bins l < κ (of 𝓛) and κ_a < l (of 𝓣; ψ: :func:`_psi`); the
    partial bins and the exponential tail likewise in closed form (the tail's derivative in log λ apart).
    The work has no autograd graph of intermediates: on CPU it runs in the native kernel
    (:func:`~ehrseq.models.distributions._native.grid_crps`, one fused pass per row) where the package was built
    with it, else as whole-tensor operations (:func:`_pytorch_crps`, the full bins in row blocks). ``steps``:
    (−ΔH, 1 − e^{−ΔH}) ``[N, L]`` each when the family has them directly (:meth:`ConstantHazardGrid._bin_steps`;
    the logistic and piecewise-constant hazards), else ``None`` and they are formed from the knots (a difference
    and an ``expm1``).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, log_s: torch.Tensor, log_rate: torch.Tensor, grid: torch.Tensor,
                y: torch.Tensor, start: torch.Tensor, gradients: bool,
                steps: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        cdf = gradients and ctx.needs_input_grad[3]  # F(y)² only when y itself wants a gradient (a loss's targets do not)
        result = None
        if log_s.device.type == "cpu" and _native.available():
            if steps is None:
                drops = torch.sub(log_s[:, 1:], log_s[:, :-1])
                steps = drops, torch.clamp_max(drops, -1e-30).expm1_().neg_()
            result = _native.grid_crps(log_s, exp_by_exp2(log_s), steps, log_rate, grid, y, start, gradients, cdf)
        if result is None:
            result = _pytorch_crps(log_s, log_rate, grid, y, start, gradients, steps, cdf)
        score, grad, rate_gradient, cdf_squared, at_a = result
        if gradients:
            ctx.save_for_backward(grad, rate_gradient, cdf_squared, at_a)
        return score

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_score: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, rate_gradient, cdf_squared, at_a = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        return (grad * grad_score.unsqueeze(1) if wanted[0] else None, rate_gradient * grad_score if wanted[1] else None,
                None, grad_score * cdf_squared if wanted[3] else None, -grad_score * at_a if wanted[4] else None, None,
                None)


class ConstantHazardGrid(GridDistribution):
    """Grid family with a constant hazard inside every bin: log S is linear in u between knots.

    Subclasses give the knot values and the log hazard increments log ΔH_l, ΔH_l = H(τ_{l+1}) − H(τ_l).
    """

    @abstractmethod
    def _log_increments(self) -> torch.Tensor:
        """log ΔH_l for l = 0..L−1, ``[*S, L]`` (computed without cancellation)."""

    @within_call
    def log_hazard_increments(self) -> torch.Tensor:
        """log ΔH_l = log(H(τ_{l+1}) − H(τ_l)), ``[*batch_shape, L]``."""
        return self._cached("log_increments", self._log_increments)

    def _log_tail_rate(self) -> torch.Tensor:
        return self.log_hazard_increments()[..., -1] - torch.log(self.widths[-1])

    def _bin_steps(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(−ΔH_l, 1 − e^{−ΔH_l}) ``[*S, L]`` without gradient, when the family has them directly (the
        logistic hazard: −softplus(z_l) and σ(z_l); the piecewise-constant hazard: −e^{z_l}Δτ_l and its
        ``expm1``); ``None``: the Survival-CRPS forms them from log S."""
        return None

    def _segment_log_survival(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_s = self.log_survival_at_grid()
        left, right = self._knots(log_s, k)
        return left + (t / self.widths[k]) * (right - left)

    def _segment_log_density(self, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        log_rate = gather_last(self.log_hazard_increments(), k) - torch.log(self.widths[k])
        return log_rate + self._segment_log_survival(k, t)

    def _segment_log_hazard_between(self, k: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return log_positive(b - a) - torch.log(self.widths[k]) + gather_last(self.log_hazard_increments(), k)

    def _segment_quantile(self, k: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_s = self.log_survival_at_grid()
        left, right = self._knots(log_s, k)
        drop = left - right
        safe = torch.where(drop > 0, drop, torch.ones_like(drop))
        fraction = torch.where(drop > 0, ((left - target) / safe).clamp(0.0, 1.0), torch.zeros_like(drop))
        return fraction * self.widths[k]

    @within_call
    def survival_crps(self, y: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """∫_0^y F(u)² du + ∫_start^∞ S(u)² du in closed form from the knot values (:class:`_ConstantHazardCRPS`),
        elementwise for ``y``, ``start`` of shape ``batch_shape`` (both > 0; ``start`` = ∞: no tail term); the
        gradient is computed by hand."""
        if not bool(torch.all(y > 0)) or not bool(torch.all(start > 0)):
            raise ValueError("the Survival-CRPS needs y > 0 and start > 0 (start = inf: no tail term), NaN excluded")
        log_s = self.log_survival_at_grid().reshape(-1, self.num_bins + 1)
        log_rate = self._cached("log_tail_rate", self._log_tail_rate).reshape(-1)
        gradients = torch.is_grad_enabled() and any(v.requires_grad for v in (log_s, log_rate, y, start))
        steps = self._bin_steps()
        if steps is not None:
            steps = tuple(t.reshape(-1, self.num_bins) for t in steps)
        score = _ConstantHazardCRPS.apply(log_s, log_rate, self.grid, y.reshape(-1), start.reshape(-1), gradients,
                                          steps)
        return score.reshape(y.shape)

    def _segment_integrals(self, lengths: torch.Tensor, power: int = 1) -> torch.Tensor:
        # ∫_0^e (S_l e^{−r s})^p ds = S_l^p · e · (1 − e^{−p r e}) / (p r e)
        rate = (self.log_hazard_increments() - torch.log(self.widths)).exp()
        knots = (power * self.log_survival_at_grid()[..., :-1]).exp()
        return knots * lengths * one_minus_exp_neg_over(power * rate * lengths)


class _KnotLogSurvival(torch.autograd.Function):
    """log S(τ_l) = −Σ_{j<l} ΔH_j for l = 0..L from outputs z ``[*S, L]`` → ``[*S, L+1]``, in one pass, for the
    constant-hazard families whose increment ΔH_l is a function of z_l alone:

    * ``log_widths`` None — the logistic hazard: ΔH = softplus(z), ∂ΔH/∂z = σ(z) (= 1 − e^{−ΔH});
    * ``log_widths`` log Δτ ``[L]`` — the piecewise-constant hazard: ΔH = e^{z} Δτ, ∂ΔH/∂z = ΔH.

    The steps −ΔH_l are summed into the knot table with its leading 0; the backward pass is
    ∂/∂z_j = −(∂ΔH_j/∂z_j) Σ_{l>j} g_l (a suffix sum, :func:`_suffix_sums`), without the graph of ``softplus``
    or ``exp``, ``cumsum`` and ``cat`` (about half their time on CPU, fewer buffers). Also returned, without
    gradient: the steps ``[*S, L]`` and, when z requires a gradient, the slopes ∂ΔH/∂z ``[*S, L]`` that the
    backward pass uses (an empty tensor otherwise) — the logistic hazard's are its hazards σ(z), which the
    Survival-CRPS reads with the steps.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, log_widths: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        wanted = ctx.needs_input_grad[0]
        if log_widths is None:
            # −softplus(z): torch's fused softplus is a few times faster on CPU than log1p(e^{−|z|}) + max(z, 0)
            # in separate kernels (log1p alone is not vectorised); above the threshold it returns z, and e^{−40}
            # is below the rounding of 40 in float64
            steps = F.softplus(logits, threshold=40.0).neg_()
            slopes = torch.sigmoid(logits) if wanted else logits.new_empty(0)
        else:
            increments = exp_by_exp2(logits + log_widths)
            steps = torch.neg(increments)
            slopes = increments if wanted else logits.new_empty(0)
        ctx.save_for_backward(slopes)
        ctx.mark_non_differentiable(steps, slopes)
        ctx.set_materialize_grads(False)  # no zero gradients made for the steps and slopes
        return _knots_from_steps(steps), steps, slopes

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor | None, *unused: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, None]:
        if grad is None:
            return None, None
        (slopes,) = ctx.saved_tensors
        return _suffix_sums(grad[..., 1:], negate=True).mul_(slopes), None


class LogisticHazard(ConstantHazardGrid):
    """Discrete-time logistic hazard on a grid (Nnet-survival): h_l = σ(z_l) = P(R ∈ bin l | R > τ_l).

    Parameters
    ----------
    logits: ``[*batch, L]``
        z_l, one per bin.
    grid: ``[L+1]``
        Cut points τ_0 = 0 < … < τ_L (days).

    S(τ_{l+1}) = Π_{j≤l} (1 − h_j); constant hazard −log(1 − h_l)/Δτ_l inside bin l and, beyond τ_L, the
    last bin's hazard. Every quantity is computed from the logits with ``logsigmoid``/``softplus``.
    """

    def _knot_table(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log S at the knots, −ΔH, σ(z) or empty) of :class:`_KnotLogSurvival`, once per memo."""
        return self._cached("knot_table", lambda: _KnotLogSurvival.apply(self.logits, None))

    def _log_survival_grid(self) -> torch.Tensor:
        return self._knot_table()[0]

    def _bin_steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        _, steps, hazards = self._knot_table()
        return steps, hazards if hazards.numel() else torch.sigmoid(self.logits.detach())

    def _log_mass_grid(self) -> torch.Tensor:
        log_s = self.log_survival_at_grid()
        return torch.cat([log_s[..., :-1] + F.logsigmoid(self.logits), log_s[..., -1:]], dim=-1)

    def _log_increments(self) -> torch.Tensor:
        return log_softplus(self.logits)

    def _log_tail_rate(self) -> torch.Tensor:
        return log_softplus(self.logits[..., -1]) - torch.log(self.widths[-1])  # without the other bins' increments


class PMF(ConstantHazardGrid):
    """Discrete-time probability mass function on a grid (DeepHit): softmax over L + 1 outputs.

    Parameters
    ----------
    logits: ``[*batch, L+1]``
        f_l = softmax(z)_l = P(R ∈ bin l) for l < L and f_L = P(R > τ_L).
    grid: ``[L+1]``
        Cut points τ_0 = 0 < … < τ_L (days).

    log S(τ_l) = log Σ_{j≥l} f_j (a reverse ``logcumsumexp``, never log(1 − cumulative)); constant
    hazard inside each bin and, beyond τ_L, the last bin's hazard.
    """

    extra_outputs = 1

    def _log_mass_grid(self) -> torch.Tensor:
        return torch.log_softmax(self.logits, dim=-1)

    def _log_survival_grid(self) -> torch.Tensor:
        remaining = reverse_logcumsumexp(self.log_mass())[..., 1:].clamp_max(0.0)
        return torch.cat([torch.zeros_like(remaining[..., :1]), remaining], dim=-1)

    # the last increment alone, softplus(log f_{L−1} − log S(τ_L)), without the other bins'
    _log_tail_rate = GridDistribution._log_tail_rate

    def _log_increments(self) -> torch.Tensor:
        # ΔH_l = log(f_l + S(τ_{l+1})) − log S(τ_{l+1}) = softplus(log f_l − log S(τ_{l+1}))
        return log_softplus(self.log_mass()[..., :-1] - self.log_survival_at_grid()[..., 1:])

