"""Survival-CRPS (Countdown Regression, §A14) and the CRPS of log-time under a Gaussian.

With y the remaining time, c the censoring flag and T the interval bound of a censored visit
(``inf`` = none), the Survival-CRPS of a prediction F = 1 − S is ([countdown] §2.1)

    right-censored:    ∫_0^y F(z)² dz + (1 − c) ∫_y^∞ S(z)² dz
    interval-censored: ∫_0^y F(z)² dz + (1 − c) ∫_y^T S(z)² dz + ∫_T^∞ S(z)² dz

i.e. a lower term 𝓛(y) = ∫_0^y F² plus a tail term 𝓣(a) = ∫_a^∞ S² with a = y for an event, a = T for
a censored visit (𝓣(∞) = 0). It is in days. Three implementations:

* Log-location-scale families, log R = μ + σε with ε of a fixed law G — the log-normal (ε normal:
  :func:`survival_crps_lognormal`, and :func:`survival_crps` on a :class:`LogNormal`) and the Weibull
  (ε = log E, E ~ Exp(1): 1 − G(x) = exp(−eˣ), μ = log λ, σ = 1/k) —
  :func:`location_scale_survival_crps_elementwise`. In standardised log time x = (log z − μ)/σ the terms
  read σe^μ ∫^{x̂_y} G² e^{σx} dx and σe^μ ∫_{x̂_a} (1 − G)² e^{σx} dx. Each is integrated by
  Gauss–Legendre on a window where its integrand is above e⁻²⁵ of its bulk (log-normal: from where
  e^{σx}Φ², log-concave, has fallen that far below min(x̂_y, 0); from the peak of e^{σx}Φ(−x)² on; Weibull:
  from x = −3, below which both integrands are power series in t = eˣ ≤ 0.05 integrated term by term
  (:class:`LeftSeries`), to 3.7 for the lower term and, for the tail term, to 3.7 beyond the peak log(σ/2)
  of e^{σx − 2eˣ}, which falls double-exponentially), the parts where G or 1 − G is exactly 1 in closed form,
  and the tail term only at visits that have one. The
  gradients in μ and log σ are integrals of their own (∂𝓛/∂μ = −2e^μ ∫ G g e^{σx}, …, g = G′), summed at the
  same nodes in the forward pass: the backward pass is elementwise, with no autograd graph through the
  nodes. Default nodes per term, 32 for both, against scipy / mpmath quadrature for medians of 30 days …
  10 years, σ ∈ [0.1, 3] (k ∈ [0.25, 8]), y ∈ [1, 10⁴] days, events, right- and interval-censored visits:
  relative error ≤ 3e-12 (Weibull 1e-11) in value and 6e-10 (Weibull 4e-7 on the smallest gradients, 2e-9
  against the largest of a batch) in gradient in float64; in float32 the error is rounding (median 2e-7).
  ``rule="trapezoid"`` of :func:`survival_crps_lognormal` reproduces [countdown] Appendix A instead:
  trapezoid rule with K intervals on [0, y] for 𝓛 and, for 𝓣, on [0, 1/a] after the map u = 1/z
  (𝓣(a) = ∫_0^{1/a} Φ_{−μ,σ}(log u)² u⁻² du; the appendix's "I⁺ = I(y, z ↦ z)" has an erratum: the weight
  is g ≡ 1). Uniform grids resolve the distribution poorly when y is far from its median: on the same
  inputs the paper's K = 32 has a median relative error of 1e-3 and reaches ~1 when y ≪ median (K = 4096:
  still 0.5).
* :func:`survival_crps` — any :class:`~ehrseq.models.distributions.SurvivalDistribution`: the
  log-location-scale families as above; grid families integrate bin by bin
  (:meth:`~ehrseq.models.distributions.GridDistribution.survival_crps`:
  closed forms for the constant-hazard families — logistic hazard, PMF, piecewise constant hazard: from
  their knot values, the gradient formed in the same pass — the density families and the exponential
  tail, Gauss–Legendre panels for the linear hazard, accurate but several times slower), so their kinks
  cost no accuracy. Other families (Weibull mixtures, log-logistic, ensembles, landmark views) use Gauss–Legendre
  in log time s = log z, through
  :meth:`~ehrseq.models.distributions.SurvivalDistribution.log_survival_log_time` and ``log_cdf_log_time``
  (closed forms in s for the Weibull mixture and the log-logistic), on the distribution's transition
  window: S is evaluated on a ladder of durations y·8^j (j = −20..20) to find
  where F ≤ 1e-8 and where S ≤ 1e-8; the integrals over that window use ``points`` nodes (64), the parts
  outside it are integrated as if F (resp. S) were exactly 0 or 1 (relative error ≤ 2e-8), and the
  tail beyond the point where S ≤ 1e-8 (≤ 1e-8 × the mean residual life there) is neglected, as is
  anything beyond y·8^20. The window is only known to a factor 8 on each side, so sharp distributions
  need more nodes (log-normal with σ = 0.1: 3e-7 at 64 nodes, 3e-10 at 96; mixtures of components far
  apart: up to 3e-3).
* :func:`crps_log_time_normal` — the closed-form CRPS of log R under N(μ, σ²): a *different* proper
  score (in log-days), with G(v) = ∫_{−∞}^v Φ² = vΦ(v)² + 2Φ(v)φ(v) − Φ(√2 v)/√π and ŷ = (log y − μ)/σ:
  σ[G(ŷ) + G(−ŷ)] for an event, σG(ŷ) right-censored, σ[G(ŷ) + G(−T̂)] interval-censored.

Caveat: the censored Survival-CRPS is not a strictly proper scoring rule (Rindt et al., 2022), so a
model trained with it can prefer a biased distribution; always report the held-out likelihood too.

Per-visit use (countdown): y = ``remaining [B, M]``, c = the patient's censoring flag broadcast over
visits, T = ``upper [B, M]``; padded visits are ignored and aggregated with ``visit_weighting``
("visit" is what [countdown] does; the library default "patient" gives every patient weight 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.autograd.function import once_differentiable
from torch.special import log_ndtr

from ehrseq.losses.functional._aggregate import Reduction, VisitWeighting
from ehrseq.losses.functional.likelihood import per_visit_score
from ehrseq.models.distributions import _native
from ehrseq.models.distributions._math import LOG_2, LOG_SQRT_2PI, exp_by_exp2, gauss_legendre, std_normal_cdf
from ehrseq.models.distributions.base import SurvivalDistribution
from ehrseq.models.distributions.grid import GridDistribution, _row_blocks
from ehrseq.models.distributions.parametric import LogNormal, Weibull

Rule = Literal["gauss-legendre", "trapezoid"]

#: Largest argument of erfc in log Φ: erfc(9) = 4e-37 and erfc(26) = 6e-296 are still normal numbers.
_ERFC_CAP = {torch.float32: 9.0, torch.float64: 26.0}
#: Φ(x) is 1 (1 − Φ(x) < 4e-11) beyond this x in the log-normal's windows.
_NORMAL_SATURATED = 6.5
#: 1 − G(x) = exp(−eˣ) of the Weibull's noise is below 1e-16 beyond this x.
_GUMBEL_SATURATED = 3.7
#: exp(−40) = 4e-18: 1 − exp(−eˣ) is 1 in float64 from eˣ = 40.
_GUMBEL_ONE = 40.0
#: Below x = −3 the Weibull's integrands are summed as power series in eˣ of this many terms.
_GUMBEL_SERIES_END = -3.0
_GUMBEL_SERIES_TERMS = 13
#: Gauss–Legendre nodes per term: log-normal and Weibull (relative errors 3e-12 and 1e-11 on typical inputs, module
#: doc), the ladder windows of other families; and the paper's number of trapezoid intervals.
LOGNORMAL_POINTS = 32
WEIBULL_POINTS = 32
DEFAULT_POINTS = 64
PAPER_INTERVALS = 32
#: Generic version: ladder ratio and half-length, and the level below which F or S counts as 0.
_LADDER_RATIO = 8.0
_LADDER_RUNGS = 20
_NEGLIGIBLE = 1e-8


def _gauss_legendre(integrand: Callable[[torch.Tensor], torch.Tensor], lo: torch.Tensor, hi: torch.Tensor, points: int) -> torch.Tensor:
    """∫_lo^hi integrand(x) dx elementwise (``lo``, ``hi`` ``[*S]``; empty when hi ≤ lo).

    The nodes x = lo + (hi − lo)·t_i are ``[*S, points]``; the weighted sum over them is one matrix-vector
    product.
    """
    nodes, weights = gauss_legendre(points, lo.dtype, lo.device)
    width = (hi - lo).clamp_min(0.0)
    x = torch.addcmul(lo.unsqueeze(-1), width.unsqueeze(-1), nodes)
    return width * torch.matmul(integrand(x), weights)


def _log_std_normal_cdf(x: torch.Tensor, sign: float, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """log Φ(sign·x) at nodes (no autograd; into ``out`` if given), several times faster than ``log_ndtr``.

    log Φ(v) = log(erfc(−v/√2)/2): erfc keeps its relative accuracy until it nears its underflow (Φ to
    3e-14 relative in float64), whereas ``ndtr`` = (1 + erf)/2 cancels for v < 0. Where Φ ≈ 1 the tiny
    log Φ has an absolute error of one ulp of 1 (not a relative one as in ``log_ndtr``), which is all an
    integrand needs. The argument of erfc is capped where erfc is still a normal number (v ≥ −12.7 in
    float32, −36.8 in float64): below, Φ² times anything an integrand holds underflows to 0 either way,
    and erfc is several times slower on arguments it underflows.
    """
    cap = _ERFC_CAP.get(x.dtype, 9.0)
    return torch.mul(x, -sign * math.sqrt(0.5), out=out).clamp_max_(cap).erfc_().log_().sub_(LOG_2)


def _interval_target(y: torch.Tensor, observed: torch.Tensor, upper: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, has_tail): the start of the tail term — y for events, T for censored visits — and a ≠ ∞."""
    bound = torch.full_like(y, math.inf) if upper is None else upper
    start = torch.where(observed, y, bound)
    has_tail = torch.isfinite(start)
    return torch.where(has_tail, start, y), has_tail


# ---------------------------------------------------------------------- log-location-scale families
@dataclass(frozen=True)
class LeftSeries:
    """Power series in t = eˣ of the integrands below x = ``end``: for the lower term (p = G) and the tail term
    (p = 1 − G), ``(squared, product)`` with p² = Σ_n squared[n]·tⁿ and p·g = Σ_n product[n]·tⁿ (n = 0, 1, …)."""

    end: float
    lower: tuple[tuple[float, ...], tuple[float, ...]]
    tail: tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class StandardNoise:
    """The standard law G of ε in log R = μ + σε, and the windows of its Survival-CRPS integrals.

    ``log_probability_and_density(x, side, out=None)`` gives (log p(x), log g(x)) at nodes ``x [..., P]`` (into
    the two buffers ``out`` if given) with
    p = G for ``side`` = 1 (the lower term) and p = 1 − G for ``side`` = −1 (the tail term), g = G′.
    ``lower_window(x̂_y, σ)`` is the window [lo, hi] of the lower term (hi = x̂_y, or the point beyond
    which G ≡ 1); ``tail_window(x̂_a, σ)`` that of the tail term (lo = x̂_a, or the point below which
    1 − G ≡ 1); ``points`` the default number of Gauss–Legendre nodes per term. With a ``series``, the
    windows start at its ``end`` and the integrals below it are the series' (:func:`_series_moments`). With
    ``integrands(x, side, sigma, offset, out)``, the panels take e^{c+σx} p² and e^{c+σx} p g from it directly (into
    the first two of the three buffers ``out`` of x's shape; ``sigma``, ``offset`` ``[n, 1]``) instead of from the logs.
    ``native`` names the law in the native kernel (:data:`~ehrseq.models.distributions._native.LOCATION_SCALE_KINDS`),
    which repeats these windows and integrands; ``None``: the PyTorch implementation only.
    """

    log_probability_and_density: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    lower_window: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    tail_window: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    points: int
    series: LeftSeries | None = None
    integrands: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
    native: str | None = None


def _log_tiny(dtype: torch.dtype) -> float:
    """log of e × the smallest normal number of ``dtype``: exp of anything above it is a normal number."""
    return math.log(torch.finfo(dtype).tiny) + 1.0


def _normal_logs(x: torch.Tensor, side: int, out: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """log Φ(side·x) and log φ(x) = −x²/2 − log √(2π) (into the buffers ``out`` of x's shape, if given)."""
    log_p, log_density = (torch.empty_like(x), torch.empty_like(x)) if out is None else out
    torch.addcmul(x.new_full((), -LOG_SQRT_2PI), x, x, value=-0.5, out=log_density)
    return _log_std_normal_cdf(x, float(side), out=log_p), log_density


def _min_gumbel_logs(x: torch.Tensor, side: int, out: tuple[torch.Tensor, torch.Tensor] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """G(x) = 1 − exp(−eˣ): log G = log(−expm1(−eˣ)) (exact where eˣ is tiny), log(1 − G) = −eˣ,
    log g = x − eˣ (eˣ by :func:`exp_by_exp2`), into the buffers ``out`` of x's shape if given. Arguments where
    eˣ or expm1 would underflow are clamped (expm1 is several times slower there; the clamped values leave
    G = 1 exactly, and G² ≤ tiny² where an integrand vanishes anyway)."""
    log_p, log_g = (torch.empty_like(x), torch.empty_like(x)) if out is None else out
    e = exp_by_exp2(torch.clamp_min(x, _log_tiny(x.dtype), out=log_g), out=log_g)
    if side > 0:
        torch.clamp_max(e, _GUMBEL_ONE, out=log_p).neg_().expm1_().neg_().log_()
    else:
        torch.neg(e, out=log_p)
    return log_p, torch.sub(x, e, out=log_g)


def _min_gumbel_integrands(x: torch.Tensor, side: int, sigma: torch.Tensor, offset: torch.Tensor,
                           out: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """e^{c+σx} p² and e^{c+σx} p g of the min-Gumbel law with t = eˣ on the windows (x ≥ −3): for the lower term
    p = G = −expm1(−t) and g = e^{x−t}, so G²e^{c+σx} and G e^{c+σx+x−t}; for the tail term (1 − G)² e^{c+σx} =
    e^{c+σx−2t} and (1 − G) g e^{c+σx} = e^{c+σx+x−2t}. Each exponent is formed whole before its exponential (no
    intermediate overflow where the integrand is finite, t = ∞ included) and clamped as in :func:`_min_gumbel_logs`
    (no subnormal results); no logarithm, where the logs of :func:`_min_gumbel_logs` take one. ``out``: the two
    results' buffers and a scratch one, of x's shape."""
    squared, product, scratch = out
    tiny = _log_tiny(x.dtype)
    t = exp_by_exp2(x, out=scratch)
    exponent = torch.addcmul(offset, sigma, x, out=squared)  # c + σx
    if side > 0:
        torch.add(exponent, x, out=product).sub_(t)  # c + σx + x − t
        cdf = t.neg_().expm1_().neg_()  # G, in place of t
        exp_by_exp2(product.clamp_min_(tiny), out=product).mul_(cdf)
        exp_by_exp2(exponent.clamp_min_(tiny), out=squared).mul_(cdf).mul_(cdf)
        return squared, product
    exponent.add_(t, alpha=-2.0)  # c + σx − 2t
    torch.add(exponent, x, out=product)
    exp_by_exp2(product.clamp_min_(tiny), out=product)
    return exp_by_exp2(exponent.clamp_min_(tiny), out=squared), product


def _decay_distance(rate: torch.Tensor) -> torch.Tensor:
    """d ≥ 0 with rate·d + 0.6·d² = 25: how far a log-concave integrand whose log falls at ``rate`` with
    curvature ≤ −1.2 (that of log Φ² and e^{σx}Φ², everywhere) takes to fall by e⁻²⁵."""
    return 50.0 / (rate + torch.sqrt(rate * rate + 60.0))


def _mills(v: torch.Tensor) -> torch.Tensor:
    """≈ φ(v)/Φ(v) for v ≤ 0, (√(v² + 8/π) − v)/2: exact at 0, relative error < 3 % (window placement only)."""
    return 0.5 * (torch.sqrt(v * v + 8.0 / math.pi) - v)


def _normal_lower_window(x_y: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From where e^{σx}Φ(x)², falling at rate σ + 2φ/Φ below min(x̂_y, 0), is e⁻²⁵ of its value there, to
    min(x̂_y, 6.5) (Φ ≡ 1 beyond: 1 − Φ(6.5) = 4e-11)."""
    start = torch.clamp(x_y, max=0.0)
    return start - _decay_distance(sigma + 2.0 * _mills(start)), torch.clamp(x_y, max=_NORMAL_SATURATED)


def _normal_tail_window(x_a: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From max(x̂_a, −6.5) (Φ(−x) ≡ 1 below) to where e^{σx}Φ(−x)², falling at rate 2φ/Φ(−x) − σ above
    max(x̂_a, x*, 0), is e⁻²⁵ of its value there; x* ≈ (σ² − 8/π)/(2σ) is its peak (2φ/Φ(−x) = σ) when
    σ > 1.6."""
    peak = torch.maximum(x_a, ((sigma * sigma - 8.0 / math.pi) / (2.0 * sigma)).clamp_min(0.0))
    end = peak + _decay_distance((2.0 * _mills(-peak) - sigma).clamp_min(0.0))
    return torch.clamp(x_a, min=-_NORMAL_SATURATED), torch.maximum(end, x_a)


#: log R ~ N(μ, σ²) (:class:`LogNormal`).
NORMAL = StandardNoise(_normal_logs, _normal_lower_window, _normal_tail_window, LOGNORMAL_POINTS, native="normal")


def _gumbel_series(terms: int) -> LeftSeries:
    """G = 1 − e^{−t}, g = t e^{−t} (t = eˣ): G² = 1 − 2e^{−t} + e^{−2t} = Σ_n [(−2)ⁿ − 2(−1)ⁿ]/n! tⁿ (n ≥ 2),
    G·g = t(e^{−t} − e^{−2t}) = Σ_n [(−1)^{n−1} − (−2)^{n−1}]/(n − 1)! tⁿ; (1 − G)² = e^{−2t} = Σ_n (−2)ⁿ/n! tⁿ,
    (1 − G)·g = t e^{−2t} = Σ_n (−2)^{n−1}/(n − 1)! tⁿ."""
    n = range(terms)
    lower_squared = tuple(((-2.0) ** k - 2.0 * (-1.0) ** k) / math.factorial(k) if k >= 2 else 0.0 for k in n)
    lower_product = tuple(((-1.0) ** (k - 1) - (-2.0) ** (k - 1)) / math.factorial(k - 1) if k >= 2 else 0.0 for k in n)
    tail_squared = tuple((-2.0) ** k / math.factorial(k) for k in n)
    tail_product = tuple((-2.0) ** (k - 1) / math.factorial(k - 1) if k >= 1 else 0.0 for k in n)
    return LeftSeries(_GUMBEL_SERIES_END, (lower_squared, lower_product), (tail_squared, tail_product))


#: log R = log λ + (1/k)·log E, E ~ Exp(1) (:class:`Weibull`, σ = 1/k). Below x = −3 (t = eˣ ≤ 0.05) the
#: integrands are power series in t (:func:`_gumbel_series`; the first term left out is below 1e-17 of the sum),
#: integrated exactly; above, Gauss–Legendre on [−3, min(x̂_y, 3.7)] for the lower term (1 − G ≤ 1e-16 beyond 3.7)
#: and on [max(x̂_a, −3), max(x̂_a, log(σ/2), 0) + 3.7] for the tail term, whose integrand e^{σx − 2eˣ} peaks at
#: log(σ/2) and falls double-exponentially beyond.
MIN_GUMBEL = StandardNoise(
    _min_gumbel_logs,
    lambda x_y, sigma: (torch.full_like(x_y, _GUMBEL_SERIES_END), torch.clamp(x_y, max=_GUMBEL_SATURATED)),
    lambda x_a, sigma: (torch.clamp(x_a, min=_GUMBEL_SERIES_END),
                        torch.maximum(x_a, torch.log(0.5 * sigma).clamp_min(0.0)) + _GUMBEL_SATURATED),
    WEIBULL_POINTS,
    _gumbel_series(_GUMBEL_SERIES_TERMS),
    _min_gumbel_integrands,
    "min_gumbel",
)


def location_scale_form(distribution: SurvivalDistribution) -> tuple[torch.Tensor, torch.Tensor, StandardNoise] | None:
    """(μ, log σ, noise) of a log-location-scale family (log-normal, Weibull), ``None`` for any other."""
    if type(distribution) is LogNormal:
        return distribution.loc, distribution.log_scale, NORMAL
    if type(distribution) is Weibull:
        return distribution.log_scale, -distribution.log_shape, MIN_GUMBEL
    return None


def _panel_moments(noise: StandardNoise, side: int, lo: torch.Tensor, hi: torch.Tensor, offset: torch.Tensor,
                   sigma: torch.Tensor, points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss–Legendre on [lo, hi] ``[N]`` of I₀ = ∫ e^{c+σx} p², I₁ = ∫ e^{c+σx} p g and I₂ = ∫ x e^{c+σx} p g
    (c = ``offset``); one pass of ``points`` nodes per element, in the row blocks of the constant-hazard grids'
    Survival-CRPS (:func:`~ehrseq.models.distributions.grid._row_blocks`) on three buffers (four with the noise's
    ``integrands``) reused from block to block, instead of a new tensor per operation."""
    nodes, weights = gauss_legendre(points, lo.dtype, lo.device)
    width = (hi - lo).clamp_min(0.0)
    moments = lo.new_empty(3, lo.shape[0])
    tiny = _log_tiny(lo.dtype)  # no subnormal results: arithmetic on them is many times slower
    blocks = _row_blocks(lo.shape[0], points)
    largest = blocks[0].stop - blocks[0].start if blocks else 0
    buffers = [lo.new_empty(largest, points) for _ in range(3 if noise.integrands is None else 4)]
    for rows in blocks:
        x, log_p, log_g, *scratch = (buffer[: rows.stop - rows.start] for buffer in buffers)
        torch.addcmul(lo[rows].unsqueeze(-1), width[rows].unsqueeze(-1), nodes, out=x)
        if noise.integrands is not None:
            squared, product = noise.integrands(x, side, sigma[rows].unsqueeze(-1), offset[rows].unsqueeze(-1),
                                                (log_p, log_g, *scratch))
        else:
            noise.log_probability_and_density(x, side, (log_p, log_g))
            base = log_g.add_(log_p).addcmul_(sigma[rows].unsqueeze(-1), x).add_(offset[rows].unsqueeze(-1))  # log(e^{c+σx} p g)
            squared = log_p.mul_(2.0).addcmul_(sigma[rows].unsqueeze(-1), x).add_(offset[rows].unsqueeze(-1))  # log(e^{c+σx} p²)
            exp_by_exp2(squared.clamp_min_(tiny), out=squared)
            product = exp_by_exp2(base.clamp_min_(tiny), out=base)
        torch.mv(squared, weights, out=moments[0, rows])
        torch.mv(product, weights, out=moments[1, rows])
        torch.mv(product.mul_(x), weights, out=moments[2, rows])
    moments.mul_(width)
    return moments[0], moments[1], moments[2]


def _series_moments(coefficients: tuple[tuple[float, ...], tuple[float, ...]], low: torch.Tensor | None,
                    high: torch.Tensor, offset: torch.Tensor, sigma: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """I₀, I₁, I₂ of :func:`_panel_moments` on [low, high] (``low`` None: −∞) from p² = Σ aₙ e^{nx} and
    p·g = Σ bₙ e^{nx}: with k = σ + n, ∫ e^{c+kx} dx = e^{c+kx}/k and
    ∫ x e^{c+kx} dx = e^{c+kx}(x − 1/k)/k, so I₂ = x·Σ bₙ e^{c+kx}/k − Σ bₙ e^{c+kx}/k²; one ``[N, terms]`` table per
    limit, 1/k formed once."""
    table = torch.tensor(coefficients, dtype=high.dtype, device=high.device)  # [2, T]: a, b
    rates = sigma.unsqueeze(-1) + torch.arange(table.shape[1], dtype=high.dtype, device=high.device)  # k [N, T]
    inverse = rates.reciprocal()
    tiny = _log_tiny(high.dtype)

    def antiderivatives(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scaled = exp_by_exp2(torch.addcmul(offset.unsqueeze(-1), rates, x.unsqueeze(-1)).clamp_min_(tiny)).mul_(inverse)
        sums = scaled @ table.t()  # [N, 2]: Σ aₙ e^{c+kx}/k, Σ bₙ e^{c+kx}/k
        return sums[:, 0], sums[:, 1], torch.addcmul(scaled.mul_(inverse) @ table[1].neg(), x, sums[:, 1])

    upper = antiderivatives(high)
    if low is None:
        return upper
    lower = antiderivatives(low)
    return upper[0] - lower[0], upper[1] - lower[1], upper[2] - lower[2]


def _saturated_part(end: torch.Tensor, log_begin: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """end − e^{log_begin} = end·(1 − e^{log_begin − log end}) where ``where``, else exactly 0."""
    gap = torch.where(where, log_begin - torch.log(end), torch.zeros_like(end))
    return end * -torch.expm1(gap)


def _pytorch_location_scale_crps(loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                                 has_tail: torch.Tensor, noise: StandardNoise, points: int
                                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The score, ∂/∂μ and ∂/∂log σ ``[N]`` of :class:`_LocationScaleCRPS` as whole-tensor operations (the reference
    of the native kernel, :func:`~ehrseq.models.distributions._native.location_scale_crps`)."""
    sigma = log_scale.exp()
    offset = loc + log_scale
    x_y = (torch.log(y) - loc) / sigma
    lo, hi = noise.lower_window(x_y, sigma)
    lower, lower_dloc, lower_dscale = _panel_moments(noise, 1, lo, hi, offset, sigma, points)
    if noise.series is not None:  # below the window: the series
        below = _series_moments(noise.series.lower, None, torch.minimum(x_y, lo), offset, sigma)
        lower, lower_dloc, lower_dscale = lower + below[0], lower_dloc + below[1], lower_dscale + below[2]
    lower = lower + _saturated_part(y, loc + sigma * hi, hi < x_y)  # G ≡ 1 from the window to y
    rows = torch.nonzero(has_tail).squeeze(1)  # the tail term only where there is one
    sigma_t, loc_t, start_t = sigma[rows], loc[rows], start[rows]
    x_a = (torch.log(start_t) - loc_t) / sigma_t
    lo, hi = noise.tail_window(x_a, sigma_t)
    tail, tail_dloc, tail_dscale = _panel_moments(noise, -1, lo, hi, offset[rows], sigma_t, points)
    if noise.series is not None:  # from a to the window: the series
        end = torch.full_like(x_a, noise.series.end)  # [x̂_a, end], empty when x̂_a ≥ end
        below = _series_moments(noise.series.tail, torch.minimum(x_a, end), end, offset[rows], sigma_t)
        tail, tail_dloc, tail_dscale = tail + below[0], tail_dloc + below[1], tail_dscale + below[2]
    else:
        tail = tail + _saturated_part(torch.exp(loc_t + sigma_t * lo), torch.log(start_t), lo > x_a)  # S ≡ 1 from a
    grad_loc = (-2.0 * lower_dloc / sigma).index_add(0, rows, 2.0 * tail_dloc / sigma_t)
    grad_log_scale = (-2.0 * lower_dscale).index_add(0, rows, 2.0 * tail_dscale)
    return lower.index_add(0, rows, tail), grad_loc, grad_log_scale


def _native_location_scale_crps(loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                                has_tail: torch.Tensor, noise: StandardNoise, points: int
                                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`_pytorch_location_scale_crps` in the native kernel, or ``None`` where it does not apply."""
    if noise.native is None or loc.device.type != "cpu" or not _native.available():
        return None
    series = None
    if noise.series is not None:
        series = torch.tensor((*noise.series.lower, *noise.series.tail), dtype=loc.dtype)
    return _native.location_scale_crps(noise.native, loc, log_scale, y, torch.where(has_tail, start, math.inf),
                                       gauss_legendre(points, loc.dtype, loc.device), series)


class _LocationScaleCRPS(torch.autograd.Function):
    """Survival-CRPS of a log-location-scale family, with the gradient as integrals of its own.

    With F(z) = G((log z − μ)/σ), z = e^{μ+σx} (dz = σe^{μ+σx} dx), the terms and their derivatives are

        𝓛 = σe^μ ∫^{x̂_y} G² e^{σx},   ∂𝓛/∂μ = −2e^μ ∫^{x̂_y} G g e^{σx},   ∂𝓛/∂log σ = −2σe^μ ∫^{x̂_y} x G g e^{σx},
        𝓣 = σe^μ ∫_{x̂_a} S² e^{σx},   ∂𝓣/∂μ = 2e^μ ∫_{x̂_a} S g e^{σx},    ∂𝓣/∂log σ = 2σe^μ ∫_{x̂_a} x S g e^{σx}

    (S = 1 − G), plus ∂𝓛/∂y = F(y)² and ∂𝓣/∂a = −S(a)². The forward pass integrates all six at the same
    nodes, so the backward pass is elementwise on ``[N]`` (no graph through the ``[N, P]`` nodes). The parts
    outside the windows, where G or S is exactly 1, are added in closed form (their derivatives vanish). On CPU
    the native kernel (:func:`~ehrseq.models.distributions._native.location_scale_crps`) runs the forward pass
    per row where it was built; :func:`_pytorch_location_scale_crps` elsewhere.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor,
                start: torch.Tensor, has_tail: torch.Tensor, noise: StandardNoise, points: int) -> torch.Tensor:
        inputs = (loc, log_scale, y, start, has_tail, noise, points)
        native = _native_location_scale_crps(*inputs)
        score, grad_loc, grad_log_scale = native if native is not None else _pytorch_location_scale_crps(*inputs)
        ctx.save_for_backward(loc, log_scale, y, start, has_tail, grad_loc, grad_log_scale)
        ctx.noise = noise
        return score

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        loc, log_scale, y, start, has_tail, grad_loc, grad_log_scale = ctx.saved_tensors
        grad_y = grad_start = None
        if ctx.needs_input_grad[2]:  # F(y)²
            x_y = (torch.log(y) - loc) / log_scale.exp()
            grad_y = grad * ctx.noise.log_probability_and_density(x_y.unsqueeze(-1), 1)[0].squeeze(-1).mul(2.0).exp()
        if ctx.needs_input_grad[3]:  # −S(a)² where there is a tail term
            rows = torch.nonzero(has_tail).squeeze(1)
            x_a = (torch.log(start[rows]) - loc[rows]) / log_scale[rows].exp()
            tail_at_start = ctx.noise.log_probability_and_density(x_a.unsqueeze(-1), -1)[0].squeeze(-1).mul(2.0).exp()
            grad_start = torch.zeros_like(grad).index_add(0, rows, -grad[rows] * tail_at_start)
        return grad * grad_loc, grad * grad_log_scale, grad_y, grad_start, None, None, None


def location_scale_survival_crps_elementwise(
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    noise: StandardNoise,
    y: torch.Tensor,
    observed: torch.Tensor,
    upper: torch.Tensor | None = None,
    *,
    points: int | None = None,
) -> torch.Tensor:
    """Survival-CRPS of log R = loc + exp(log_scale)·ε, ε ~ ``noise``, per element (all inputs of one shape).

    Gauss–Legendre in standardised log time on the noise's windows (``points`` nodes per term, default
    the noise's), the tail term only where there is one; analytic gradients (:class:`_LocationScaleCRPS`).
    """
    start, has_tail = _interval_target(y, observed, upper)
    nodes = noise.points if points is None else int(points)
    flat = (value.reshape(-1) for value in (loc, log_scale, y, start, has_tail))
    return _LocationScaleCRPS.apply(*flat, noise, nodes).reshape(y.shape)


def _trapezoid(values: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Trapezoid rule on K + 1 equally spaced values (last dim) with spacing ``step`` ``[*S]``."""
    return step * (values.sum(dim=-1) - 0.5 * (values[..., 0] + values[..., -1]))


def _lognormal_lower_trapezoid(loc: torch.Tensor, log_scale: torch.Tensor, y: torch.Tensor, intervals: int) -> torch.Tensor:
    """[countdown] Appendix A: 𝓛(y) by the trapezoid rule on z_k = y·k/K."""
    fractions = torch.arange(1, intervals + 1, dtype=y.dtype, device=y.device) / intervals
    log_z = torch.log(y).unsqueeze(-1) + torch.log(fractions)
    values = (2.0 * log_ndtr((log_z - loc.unsqueeze(-1)) / log_scale.exp().unsqueeze(-1))).exp()
    values = torch.cat([torch.zeros_like(values[..., :1]), values], dim=-1)  # Φ(log 0)² = 0
    return _trapezoid(values, y / intervals)


def _lognormal_tail_trapezoid(loc: torch.Tensor, log_scale: torch.Tensor, a: torch.Tensor, intervals: int) -> torch.Tensor:
    """[countdown] Appendix A: 𝓣(a) = I⁻(a) by the trapezoid rule on u_k = k/(K·a), u = 1/z."""
    fractions = torch.arange(1, intervals + 1, dtype=a.dtype, device=a.device) / intervals
    log_u = torch.log(fractions) - torch.log(a).unsqueeze(-1)
    values = (2.0 * log_ndtr((log_u + loc.unsqueeze(-1)) / log_scale.exp().unsqueeze(-1)) - 2.0 * log_u).exp()
    values = torch.cat([torch.zeros_like(values[..., :1]), values], dim=-1)  # the integrand vanishes at u = 0
    return _trapezoid(values, 1.0 / (intervals * a))


def lognormal_survival_crps_elementwise(
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    y: torch.Tensor,
    observed: torch.Tensor,
    upper: torch.Tensor | None = None,
    *,
    rule: Rule = "gauss-legendre",
    points: int | None = None,
) -> torch.Tensor:
    """Survival-CRPS of LogNormal(loc, exp(log_scale)) per element (all inputs of one shape).

    ``rule="gauss-legendre"`` (:func:`location_scale_survival_crps_elementwise` with the normal noise,
    ``points`` nodes per term, default 32) or ``"trapezoid"`` ([countdown] Appendix A, ``points``
    intervals, default 32 as in the paper). Inputs are not validated here.
    """
    if rule == "gauss-legendre":
        return location_scale_survival_crps_elementwise(loc, log_scale, NORMAL, y, observed, upper, points=points)
    start, has_tail = _interval_target(y, observed, upper)
    if rule == "trapezoid":
        intervals = PAPER_INTERVALS if points is None else int(points)
        lower = _lognormal_lower_trapezoid(loc, log_scale, y, intervals)
        tail = _lognormal_tail_trapezoid(loc, log_scale, start, intervals)
    else:
        raise ValueError(f'rule must be "gauss-legendre" or "trapezoid", got {rule!r}')
    return lower + torch.where(has_tail, tail, torch.zeros_like(tail))


# ---------------------------------------------------------------------- closed form on log time
def _integrated_squared_cdf(v: torch.Tensor) -> torch.Tensor:
    """G(v) = ∫_{−∞}^v Φ(t)² dt = vΦ(v)² + 2Φ(v)φ(v) − Φ(√2 v)/√π."""
    cdf = std_normal_cdf(v)
    pdf = torch.exp(-0.5 * v * v) / math.sqrt(2.0 * math.pi)
    return v * cdf * cdf + 2.0 * cdf * pdf - std_normal_cdf(math.sqrt(2.0) * v) / math.sqrt(math.pi)


def log_time_normal_crps_elementwise(
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    y: torch.Tensor,
    observed: torch.Tensor,
    upper: torch.Tensor | None = None,
) -> torch.Tensor:
    """Closed-form CRPS of log y under N(loc, exp(log_scale)²), right- or interval-censored, per element."""
    sigma = log_scale.exp()
    start, has_tail = _interval_target(y, observed, upper)
    lower = _integrated_squared_cdf((torch.log(y) - loc) / sigma)
    tail = _integrated_squared_cdf(-(torch.log(start) - loc) / sigma)
    return sigma * (lower + torch.where(has_tail, tail, torch.zeros_like(tail)))


# ---------------------------------------------------------------------- any distribution
def _transition_window(distribution: SurvivalDistribution, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log z_lo, log z_hi ``[*S]``: ladder points y·8^j around where F ≤ 1e-8 and where S ≤ 1e-8."""
    with torch.no_grad():
        steps = torch.arange(-_LADDER_RUNGS, _LADDER_RUNGS + 1, dtype=y.dtype, device=y.device) * math.log(_LADDER_RATIO)
        log_z = torch.log(y).unsqueeze(-1) + steps
        log_s = distribution.log_survival_log_time(log_z)
        negligible_cdf = (log_s >= math.log1p(-_NEGLIGIBLE)).sum(dim=-1)  # F ≤ ε on a prefix of the ladder
        negligible_survival = (log_s <= math.log(_NEGLIGIBLE)).sum(dim=-1)  # S ≤ ε on a suffix
        rungs = steps.shape[0]
        lo = (negligible_cdf - 1).clamp(0, rungs - 1)
        hi = (rungs - negligible_survival).clamp(0, rungs - 1)
        return log_z.gather(-1, lo.unsqueeze(-1)).squeeze(-1), log_z.gather(-1, hi.unsqueeze(-1)).squeeze(-1)


def survival_crps_elementwise(
    distribution: SurvivalDistribution,
    y: torch.Tensor,
    observed: torch.Tensor,
    upper: torch.Tensor | None = None,
    *,
    points: int | None = None,
) -> torch.Tensor:
    """Survival-CRPS of any distribution per element (``y``, ``observed``, ``upper``: its batch shape).

    Grid families integrate bin by bin (:meth:`GridDistribution.survival_crps`, ``points`` unused);
    log-location-scale families (log-normal, Weibull) by :func:`location_scale_survival_crps_elementwise`;
    any other family by Gauss–Legendre in log time on its transition window (module doc). ``points``:
    nodes per term, by default the family's (32 log-normal and Weibull, 64 otherwise).
    """
    if isinstance(distribution, GridDistribution):
        bound = torch.full_like(y, math.inf) if upper is None else upper
        return distribution.survival_crps(y, torch.where(observed, y, bound))
    form = location_scale_form(distribution)
    if form is not None:
        return location_scale_survival_crps_elementwise(*form, y, observed, upper, points=points)
    return _window_survival_crps(distribution, y, observed, upper, DEFAULT_POINTS if points is None else int(points))


def _window_survival_crps(distribution: SurvivalDistribution, y: torch.Tensor, observed: torch.Tensor,
                          upper: torch.Tensor | None, points: int) -> torch.Tensor:
    """Gauss–Legendre in log time on the transition window found by the ladder (module doc)."""
    start, has_tail = _interval_target(y, observed, upper)
    log_y, log_start = torch.log(y), torch.log(start)
    s_lo, s_hi = _transition_window(distribution, y)

    def cdf_squared(s: torch.Tensor) -> torch.Tensor:  # F(z)² dz = F(eˢ)² eˢ ds
        return torch.add(s, distribution.log_cdf_log_time(s), alpha=2.0).exp()

    def survival_squared(s: torch.Tensor) -> torch.Tensor:
        return torch.add(s, distribution.log_survival_log_time(s), alpha=2.0).exp()

    # 𝓛(y): the window [s_lo, min(log y, s_hi)], then F ≈ 1 up to y
    lower_end = torch.minimum(log_y, s_hi)
    lower = _gauss_legendre(cdf_squared, s_lo, lower_end, points) + (y - lower_end.exp()).clamp_min(0.0)
    # 𝓣(a): S ≈ 1 from a to z_lo, then the window up to z_hi
    tail_start = torch.maximum(log_start, s_lo)
    tail = (s_lo.exp() - start).clamp_min(0.0) + _gauss_legendre(
        survival_squared, tail_start, torch.maximum(log_start, s_hi), points
    )
    return lower + torch.where(has_tail, tail, torch.zeros_like(tail))


# ---------------------------------------------------------------------- per-visit losses
def _check_lognormal(distribution: SurvivalDistribution) -> LogNormal:
    if not isinstance(distribution, LogNormal):
        raise TypeError(f"this loss needs a LogNormal distribution, got {type(distribution).__name__}")
    return distribution


def survival_crps(
    distribution: SurvivalDistribution,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    upper: torch.Tensor | None = None,
    points: int | None = None,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Per-visit Survival-CRPS of any ``[B, M]`` distribution (see the module doc; ``points``: nodes per term,
    by default the family's).

    Arguments as :func:`~ehrseq.losses.functional.survival_nll`: ``remaining [B, M]``, ``event [B]``,
    ``mask [B, M]``, ``upper [B, M]`` (interval bound, ``inf`` = none). For log-normal heads prefer
    :func:`survival_crps_lognormal` (exact windows, no ladder search).
    """
    return per_visit_score(
        lambda d, y, observed, bound: survival_crps_elementwise(d, y, observed, bound, points=points),
        distribution, remaining, event, mask, upper=upper, cause=cause, weight=weight, reduction=reduction,
        visit_weighting=visit_weighting,
    )


def survival_crps_lognormal(
    distribution: LogNormal,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    upper: torch.Tensor | None = None,
    rule: Rule = "gauss-legendre",
    points: int | None = None,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Per-visit Survival-CRPS of a ``[B, M]`` :class:`LogNormal` head ([countdown]; module doc for rules)."""
    return per_visit_score(
        lambda d, y, observed, bound: lognormal_survival_crps_elementwise(
            d.loc, d.log_scale, y, observed, bound, rule=rule, points=points
        ),
        _check_lognormal(distribution), remaining, event, mask, upper=upper, cause=cause, weight=weight,
        reduction=reduction, visit_weighting=visit_weighting,
    )


def crps_log_time_normal(
    distribution: LogNormal,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    upper: torch.Tensor | None = None,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Per-visit closed-form CRPS of log-time under the Gaussian of a ``[B, M]`` :class:`LogNormal` head.

    Not the Survival-CRPS: it scores log R (units: log-days) — see the module doc.
    """
    return per_visit_score(
        lambda d, y, observed, bound: log_time_normal_crps_elementwise(d.loc, d.log_scale, y, observed, bound),
        _check_lognormal(distribution), remaining, event, mask, upper=upper, cause=cause, weight=weight,
        reduction=reduction, visit_weighting=visit_weighting,
    )
