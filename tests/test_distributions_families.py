"""Every survival distribution family against its definition: S(0) = 1, monotone S, f ≥ 0, quadrature of the
hazard and the density (scipy), quantiles, means, the landmark view, indexing, devices and stability."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import integrate, special

from ehrseq.errors import ShapeError
from ehrseq.models.distributions import (
    PMF,
    LogisticHazard,
    LogLogistic,
    LogNormal,
    PiecewiseConstantDensity,
    PiecewiseConstantHazard,
    PiecewiseLinearDensity,
    PiecewiseLinearHazard,
    SurvivalDistribution,
    VisitHazard,
    Weibull,
    WeibullMixture,
)
from ehrseq.models.distributions._math import std_normal_cdf

SETTINGS = settings(max_examples=25, deadline=None)



def random_grid(generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    bins = int(torch.randint(1, 6, (1,), generator=generator))
    widths = torch.exp(torch.empty(bins, dtype=torch.float64).uniform_(math.log(0.5), math.log(500.0), generator=generator))
    return torch.cat([torch.zeros(1, dtype=torch.float64), widths.cumsum(0)]).to(dtype)


def draw(generator: torch.Generator, shape: tuple[int, ...], scale: float, dtype: torch.dtype, low: float = -50.0,
         high: float = 50.0, offset: float = 0.0) -> torch.Tensor:
    return (offset + scale * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(low, high).to(dtype)


@dataclass(frozen=True)
class Family:
    build: Callable[[torch.Generator, float, torch.dtype, tuple[int, ...]], SurvivalDistribution]
    grid: bool = False


def _grid_family(cls: type, extra: int) -> Family:
    def build(g: torch.Generator, scale: float, dtype: torch.dtype, batch: tuple[int, ...]) -> SurvivalDistribution:
        grid = random_grid(g, dtype)
        return cls(draw(g, (*batch, grid.shape[0] - 1 + extra), scale, dtype), grid)

    return Family(build, grid=True)


def _piecewise_hazard(cls: type, extra: int) -> Family:
    # hazards e^z per day: centre the logits on rates of ~1/year so that the curves are not degenerate
    def build(g: torch.Generator, scale: float, dtype: torch.dtype, batch: tuple[int, ...]) -> SurvivalDistribution:
        grid = random_grid(g, dtype)
        return cls(draw(g, (*batch, grid.shape[0] - 1 + extra), scale, dtype, offset=-6.0), grid)

    return Family(build, grid=True)


FAMILIES: dict[str, Family] = {
    "logistic_hazard": _grid_family(LogisticHazard, 0),
    "pmf": _grid_family(PMF, 1),
    "constant_hazard": _piecewise_hazard(PiecewiseConstantHazard, 0),
    "linear_hazard": _piecewise_hazard(PiecewiseLinearHazard, 1),
    "constant_density": _grid_family(PiecewiseConstantDensity, 1),
    "linear_density": _grid_family(PiecewiseLinearDensity, 2),
    "lognormal": Family(lambda g, s, d, b: LogNormal(
        draw(g, b, s / 10, d, -10.0, 20.0, offset=5.0), draw(g, b, s / 20, d, -3.0, 2.0))),
    "weibull": Family(lambda g, s, d, b: Weibull(
        draw(g, b, s / 10, d, -5.0, 15.0, offset=5.0), draw(g, b, s / 40, d, -2.0, 1.3))),
    # σ ≤ 0.33 here, where the mean and its quadrature converge (the mean is infinite for σ ≥ 1); heavier
    # tails are tested against scipy below
    "loglogistic": Family(lambda g, s, d, b: LogLogistic(
        draw(g, b, s / 10, d, -10.0, 20.0, offset=5.0), draw(g, b, s / 40, d, -3.0, -1.1, offset=-1.8))),
    "weibull_mixture": Family(lambda g, s, d, b: WeibullMixture(
        draw(g, (*b, 3), s, d), draw(g, (*b, 3), s / 10, d, -5.0, 15.0, offset=5.0),
        draw(g, (*b, 3), s / 40, d, -2.0, 1.3))),
    "visit_hazard": Family(lambda g, s, d, b: VisitHazard(draw(g, b, s, d))),
}
NAMES = sorted(FAMILIES)
SCALES = st.sampled_from([0.3, 2.0, 10.0, 50.0])
MODERATE = st.sampled_from([0.3, 1.0, 2.0])
SEEDS = st.integers(0, 2**31 - 1)


def build(name: str, seed: int, scale: float, dtype: torch.dtype = torch.float64, batch: tuple[int, ...] = (2, 3)):
    return FAMILIES[name].build(torch.Generator().manual_seed(seed), scale, dtype, batch)


def probe_durations(dist: SurvivalDistribution, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Sorted durations covering 1e-6 … 1e6, the knots of grid families and both sides of each knot."""
    points = [0.0, *np.geomspace(1e-6, 1e6, 37).tolist()]
    grid = getattr(dist, "grid", None)
    if grid is not None:
        for knot in grid.tolist():
            points += [knot, knot * (1 - 1e-9), knot * (1 + 1e-9) + 1e-9]
    return torch.tensor(sorted(set(points)), dtype=dtype)


def parameters(dist: SurvivalDistribution) -> list[torch.Tensor]:
    return [getattr(dist, name) for name in dist.batched_fields]


def with_grad(dist: SurvivalDistribution) -> SurvivalDistribution:
    """A copy whose parameters are leaf tensors requiring gradients."""
    copy = dist[...]
    for name in dist.batched_fields:
        setattr(copy, name, getattr(dist, name).detach().clone().requires_grad_())
    return copy


# ---------------------------------------------------------------------- guarantees of every family
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@SETTINGS
@given(seed=SEEDS, scale=SCALES)
def test_valid_distribution_with_finite_values_and_gradients(name, dtype, seed, scale):
    dist = with_grad(build(name, seed, scale, dtype))
    u = probe_durations(dist, dtype)
    log_s, log_f = dist.log_survival(u), dist.log_density(u[1:])
    assert log_s.shape == (2, 3, u.shape[0]) and log_s.dtype == dtype
    assert torch.all(log_s[..., 0] == 0), "S(0) = 1 exactly"
    assert torch.all(torch.isfinite(log_s)) and torch.all(log_s <= 0)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.all(log_s.diff(dim=-1) <= tolerance * (1 + log_s[..., 1:].abs())), "S non-increasing"
    assert torch.all(torch.isfinite(log_f)), "f > 0 and finite at positive durations"
    (log_s.sum() + log_f.sum()).backward()
    for p in parameters(dist):
        assert p.grad is not None and torch.all(torch.isfinite(p.grad))
    # log_likelihood: log f where observed, else log S (the mixture computes both in one pass)
    observed = torch.rand(2, 3, u.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5
    expected = torch.where(observed, dist.log_density(u), log_s)
    torch.testing.assert_close(dist.log_likelihood(u, observed), expected, rtol=tolerance, atol=tolerance)
    dist.log_likelihood(u[1:], observed[..., 1:]).sum().backward()  # f may be infinite at u = 0
    for p in parameters(dist):
        assert torch.all(torch.isfinite(p.grad))


def knots_of(dist: SurvivalDistribution) -> list[float]:
    """Breakpoints for ``integrate_to``: the grid's knots, then the exponential tail's e-folds 1/λ after τ_L.

    The tail rate λ (last density over tail mass) can be arbitrarily large, so one Gauss–Legendre panel from τ_L
    to a far target would miss a tail that dies within a fraction of it; panels at τ_L + 2^j/λ (j = −3 … 6, for
    every element's λ) leave less than e⁻⁶⁴ of the tail beyond them.
    """
    grid = getattr(dist, "grid", None)
    if grid is None:
        return []
    folds = 1.0 / dist.tail_rate().reshape(-1)
    tail = (grid[-1] + folds.unsqueeze(-1) * 2.0 ** torch.arange(-3, 7, dtype=grid.dtype)).reshape(-1)
    return sorted({*grid[1:].tolist(), *tail[torch.isfinite(tail)].tolist()})


def integrate_to(integrand: Callable[[torch.Tensor], torch.Tensor], upper: torch.Tensor, knots: list[float],
                 nodes: int = 200) -> np.ndarray:
    """∫_0^{upper} g for every entry of ``upper`` ``[*S, U]``, vectorized over the entries.

    Grid families: composite Gauss–Legendre (scipy's nodes) between the knots, where each family is
    analytic. Parametric families: scipy ``quad_vec``, adaptive (a Weibull density of shape < 1 is
    singular at 0).
    """
    if not knots:
        # x = upper·s¹⁰ turns a density singular like x^{k−1} at 0 (k ≥ 0.13) into a bounded integrand
        def scaled(fraction: float) -> np.ndarray:
            fraction = max(fraction, 1e-30)
            return (10.0 * fraction**9 * upper * integrand(upper * fraction**10)).numpy()

        return integrate.quad_vec(scaled, 0.0, 1.0, epsabs=1e-13, epsrel=1e-11, limit=500)[0]
    x, w = special.roots_legendre(nodes)
    flat = upper.reshape(upper.shape[0], -1).numpy()
    points = np.broadcast_to(flat[..., None], (*flat.shape, (len(knots) + 1) * nodes)).copy()  # padding: weight 0
    weights = np.zeros_like(points)
    for i, j in np.ndindex(*flat.shape):
        edges = [0.0, *[k for k in knots if k < flat[i, j]], flat[i, j]]
        for s_, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            points[i, j, s_ * nodes:(s_ + 1) * nodes] = a + (b - a) * (x + 1) / 2
            weights[i, j, s_ * nodes:(s_ + 1) * nodes] = (b - a) / 2 * w
    values = integrand(torch.as_tensor(points.reshape(flat.shape[0], -1))).numpy().reshape(points.shape)
    return (values * weights).sum(axis=-1).reshape(upper.shape)


def integrate_tail(integrand: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, scale: torch.Tensor,
                   nodes: int = 400) -> np.ndarray:
    """∫_{start}^∞ g for every entry of ``start`` ``[*S]``: Gauss–Legendre (scipy's nodes) in t after
    x = start + scale·t/(1 − t); ``scale`` (any positive value) only sets where the nodes fall."""
    x, w = special.roots_legendre(nodes)
    t = torch.as_tensor((x + 1) / 2)
    jacobian = scale.unsqueeze(-1) / (1 - t) ** 2
    values = integrand(start.unsqueeze(-1) + scale.unsqueeze(-1) * t / (1 - t)) * jacobian
    return (values * torch.as_tensor(w / 2)).sum(dim=-1).numpy()


QUADRATURE = settings(max_examples=10, deadline=None)


@pytest.mark.parametrize("name", NAMES)
@QUADRATURE
@given(seed=SEEDS, scale=MODERATE)
def test_survival_matches_quadrature_of_hazard_and_density(name, seed, scale):
    dist = build(name, seed, scale, batch=(3,))
    medians = dist.median().unsqueeze(-1)
    extra = [1.7 * float(dist.grid[-1])] if knots_of(dist) else []
    u = torch.cat([medians * torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64),
                   torch.tensor(extra, dtype=torch.float64).expand(3, len(extra))], dim=-1)  # [3, U]
    mass = integrate_to(dist.density, u, knots_of(dist))
    cumulative_hazard = integrate_to(dist.hazard, u, knots_of(dist))
    survival = dist.survival(u).numpy()
    np.testing.assert_allclose(survival, 1.0 - mass, atol=1e-6, rtol=0)
    np.testing.assert_allclose(survival, np.exp(-cumulative_hazard), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
@QUADRATURE
@given(seed=SEEDS, scale=MODERATE)
def test_mean_is_the_integral_of_survival(name, seed, scale):
    dist = build(name, seed, scale, batch=(3,))
    knots = knots_of(dist)
    if knots:
        end = torch.full((3, 1), float(dist.grid[-1]), dtype=torch.float64)
        restricted = integrate_to(dist.survival, end, knots)[:, 0]
        np.testing.assert_allclose(dist.mean().numpy(), restricted, rtol=1e-8, atol=1e-10)
        full = restricted + integrate_tail(dist.survival, end[:, 0], 1.0 / dist.tail_rate())  # scale: the tail's e-fold
        np.testing.assert_allclose(dist.mean(math.inf).numpy(), full, rtol=1e-8, atol=1e-10)
        inside = torch.full((3, 1), 0.6 * float(dist.grid[-1]), dtype=torch.float64)
        part = integrate_to(dist.survival, inside, knots)[:, 0]
        np.testing.assert_allclose(dist.mean(0.6 * float(dist.grid[-1])).numpy(), part, rtol=1e-8, atol=1e-10)
    else:
        median = dist.median()
        spread = dist.quantile(0.999)[:, 0] - median
        full = integrate_to(dist.survival, median.unsqueeze(-1), [])[:, 0] + integrate_tail(dist.survival, median, spread)
        np.testing.assert_allclose(dist.mean().numpy(), full, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(seed=SEEDS, scale=SCALES, elapsed=st.floats(0.0, 2000.0))
def test_conditional_is_the_landmark_ratio(name, seed, scale, elapsed):
    dist = build(name, seed, scale)
    u = probe_durations(dist)[::3]
    conditional = dist.conditional(elapsed)
    expected = dist.log_survival(u + elapsed) - dist.log_survival(torch.tensor([elapsed], dtype=torch.float64))
    finite = torch.isfinite(expected)
    assert torch.allclose(conditional.log_survival(u)[finite], expected.clamp_max(0.0)[finite], atol=1e-9)
    lower, upper = u[1:-1], u[1:-1] * 2
    mass = conditional.log_interval_mass(lower, upper).exp()
    reference = conditional.survival(lower) - conditional.survival(upper)
    # both sides subtract log S(s): its rounding (amplified by the shape of log S) bounds the agreement
    conditioning = dist.log_survival(torch.tensor([elapsed], dtype=torch.float64)).abs()
    slack = 1e-9 + 1e-12 * (1 + conditioning)
    assert torch.all((mass - reference).abs() <= slack)


@pytest.mark.parametrize("name", NAMES)
def test_indexing_to_and_masked_keep_values(name):
    dist = build(name, 7, 2.0, batch=(3, 4))
    u = probe_durations(dist)
    full = dist.log_survival(u)
    same = dict(rtol=1e-13, atol=0.0)
    torch.testing.assert_close(dist[1].log_survival(u), full[1], **same)
    torch.testing.assert_close(dist[:, 2:].log_survival(u), full[:, 2:], **same)
    torch.testing.assert_close(dist[1, 3].log_survival(u), full[1, 3], **same)
    torch.testing.assert_close(dist.to("cpu").log_density(u), dist.log_density(u), **same)
    keep = torch.tensor([[True, False, True, True]] * 3)
    # a bool mask selects the rows where it is True, row-major (resolved once for every parameter)
    torch.testing.assert_close(dist[keep].log_survival(u[keep] if u.dim() == 3 else u), full[keep], **same)
    with pytest.raises(ShapeError, match="leading dims"):
        dist[torch.ones(4, 3, dtype=torch.bool)]
    poisoned = dist[...]
    for field in dist.batched_fields:
        value = getattr(dist, field).clone()
        value[~keep] = torch.nan
        setattr(poisoned, field, value)
    cleaned = poisoned.masked(keep).log_survival(u)
    torch.testing.assert_close(cleaned[keep], full[keep], **same)
    assert torch.all(torch.isfinite(cleaned))


def test_per_element_durations_broadcast():
    dist = build("pmf", 3, 2.0)
    u = torch.rand(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 800
    per_element = dist.log_survival(u)
    for b in range(2):
        for m in range(3):
            assert torch.allclose(per_element[b, m], dist[b, m].log_survival(u[b, m]))


# ---------------------------------------------------------------------- parametric families vs scipy
def test_lognormal_and_weibull_match_scipy():
    from scipy import stats

    g = torch.Generator().manual_seed(1)
    loc, log_scale = 5 + torch.randn(6, generator=g, dtype=torch.float64), 0.5 * torch.randn(6, generator=g, dtype=torch.float64)
    u = torch.tensor([0.5, 10.0, 150.0, 1e3, 1e5], dtype=torch.float64)
    levels = np.array([0.05, 0.5, 0.95])
    dist = LogNormal(loc, log_scale)
    ref = stats.lognorm(s=log_scale.exp().numpy()[:, None], scale=loc.exp().numpy()[:, None])
    np.testing.assert_allclose(dist.log_survival(u).numpy(), ref.logsf(u.numpy()), rtol=1e-10)
    np.testing.assert_allclose(dist.log_density(u).numpy(), ref.logpdf(u.numpy()), rtol=1e-10)
    np.testing.assert_allclose(dist.quantile(torch.tensor(levels)).numpy(), ref.ppf(levels), rtol=1e-10)
    np.testing.assert_allclose(dist.mean().numpy(), ref.mean().ravel(), rtol=1e-12)
    restricted = stats.lognorm(s=float(log_scale[0].exp()), scale=float(loc[0].exp()))
    expected = integrate.quad(restricted.sf, 0, 200.0, limit=200)[0]
    assert float(dist.mean(200.0)[0]) == pytest.approx(expected, rel=1e-9)

    log_shape = 0.4 * torch.randn(6, generator=g, dtype=torch.float64)
    dist = Weibull(loc, log_shape)
    ref = stats.weibull_min(c=log_shape.exp().numpy()[:, None], scale=loc.exp().numpy()[:, None])
    np.testing.assert_allclose(dist.log_survival(u).numpy(), ref.logsf(u.numpy()), rtol=1e-10)
    np.testing.assert_allclose(dist.log_density(u).numpy(), ref.logpdf(u.numpy()), rtol=1e-10)
    np.testing.assert_allclose(dist.quantile(torch.tensor(levels)).numpy(), ref.ppf(levels), rtol=1e-10)
    np.testing.assert_allclose(dist.mean().numpy(), ref.mean().ravel(), rtol=1e-12)


def test_loglogistic_matches_scipy_fisk():
    """S, F, f, h, quantiles, interval masses and the mean against scipy's fisk (c = 1/σ, scale = α = e^loc),
    for shapes on both sides of 1 (decreasing and unimodal hazards, finite and infinite means).

    scipy's ``logsf`` is log1p(−cdf), which cancels where S is tiny; the reference for S there is the
    symmetry of the log-logistic about its median, S(u) = F(α²/u), through scipy's accurate ``logcdf``."""
    from scipy import stats

    g = torch.Generator().manual_seed(3)
    loc = 5 + 1.5 * torch.randn(8, generator=g, dtype=torch.float64)
    log_scale = torch.linspace(-2.5, 1.5, 8, dtype=torch.float64)[torch.randperm(8, generator=g)]
    dist = LogLogistic(loc, log_scale)
    alpha = loc.exp().numpy()[:, None]
    ref = stats.fisk(c=(-log_scale).exp().numpy()[:, None], scale=alpha)
    u = np.array([1e-3, 0.5, 10.0, 150.0, 1e3, 1e5, 1e8])
    log_sf = ref.logcdf(alpha**2 / u)
    with np.errstate(divide="ignore"):  # scipy's logsf and sf where S rounds to 0
        scipy_log_sf, scipy_sf = ref.logsf(u), ref.sf(u)
    resolved = scipy_sf > 1e-6  # the symmetry, where scipy's logsf is accurate
    np.testing.assert_allclose(log_sf[resolved], scipy_log_sf[resolved], rtol=1e-9)
    ut = torch.tensor(u, dtype=torch.float64)
    np.testing.assert_allclose(dist.log_survival(ut).numpy(), log_sf, rtol=1e-12)
    np.testing.assert_allclose(dist.log_cdf_log_time(ut.log()).numpy(), ref.logcdf(u), rtol=1e-12)
    np.testing.assert_allclose(dist.log_survival_log_time(ut.log()).numpy(), log_sf, rtol=1e-12)
    np.testing.assert_allclose(dist.survival(ut).numpy()[resolved], scipy_sf[resolved], rtol=1e-9)
    np.testing.assert_allclose(dist.log_density(ut).numpy(), ref.logpdf(u), rtol=1e-12)
    np.testing.assert_allclose(dist.log_hazard(ut).numpy(), ref.logpdf(u) - log_sf, rtol=1e-12, atol=1e-12)
    body = scipy_sf > 1e-3
    np.testing.assert_allclose(dist.hazard(ut).numpy()[body], ref.pdf(u)[body] / scipy_sf[body], rtol=1e-10)
    levels = np.array([1e-4, 0.05, 0.5, 0.95, 0.9999])
    np.testing.assert_allclose(dist.quantile(torch.tensor(levels)).numpy(), ref.ppf(levels), rtol=1e-10)
    np.testing.assert_allclose(dist.median().numpy(), ref.median().ravel(), rtol=1e-12)
    lower, upper = u[:-1], u[1:]
    below = ref.cdf(upper) - ref.cdf(lower)  # accurate below the median
    above = ref.cdf(alpha**2 / lower) - ref.cdf(alpha**2 / upper)  # S(a) − S(b), accurate above it
    expected = np.where(ref.cdf(upper) < 0.5, below, above)
    mass = dist.log_interval_mass(torch.tensor(lower), torch.tensor(upper)).exp().numpy()
    np.testing.assert_allclose(mass, expected, rtol=1e-9)
    mean = ref.mean().ravel()  # scipy: inf for c <= 1
    assert np.array_equal(np.isinf(dist.mean().numpy()), log_scale.numpy() >= 0)
    np.testing.assert_allclose(dist.mean().numpy(), np.where(np.isfinite(mean), mean, np.inf), rtol=1e-10)
    # the density at 0: its limit, 0, 1/α or +inf for σ below, at or above 1
    at_zero = LogLogistic(torch.zeros(3, dtype=torch.float64), torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64))
    assert at_zero.log_density(0.0)[:, 0].tolist() == [-math.inf, 0.0, math.inf]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loglogistic_density_is_minus_the_derivative_of_survival(dtype):
    g = torch.Generator().manual_seed(4)
    loc = (5 + torch.randn(6, generator=g, dtype=torch.float64)).to(dtype)
    log_scale = (0.8 * torch.randn(6, generator=g, dtype=torch.float64)).to(dtype)
    dist = LogLogistic(loc, log_scale)
    u = torch.exp(torch.empty(6, 9, dtype=torch.float64).uniform_(-2.0, 12.0, generator=g)).to(dtype).requires_grad_()
    (derivative,) = torch.autograd.grad(dist.survival(u).sum(), u)
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(-derivative, dist.density(u).detach(), rtol=rtol, atol=0.0)


def test_loglogistic_heavy_tails_stay_finite_in_float32():
    """σ up to e²: S, f, interval masses and their gradients finite from 1e-6 to 1e6 days."""
    loc = torch.tensor([-10.0, 0.0, 5.0, 20.0]).repeat_interleave(3)
    log_scale = torch.tensor([-3.0, 0.0, 2.0]).repeat(4)
    loc.requires_grad_(), log_scale.requires_grad_()
    dist = LogLogistic(loc, log_scale)
    u = torch.tensor([0.0, *np.geomspace(1e-6, 1e6, 13).tolist()])
    log_s, log_f = dist.log_survival(u), dist.log_density(u[1:])
    mass = dist.log_interval_mass(u[:-1], u[1:] * 1.5)
    assert torch.all(log_s[:, 0] == 0) and torch.all(torch.isfinite(log_s)) and torch.all(torch.isfinite(log_f))
    assert torch.all(torch.isfinite(mass))
    (log_s.sum() + log_f.sum() + mass.sum()).backward()
    assert torch.all(torch.isfinite(loc.grad)) and torch.all(torch.isfinite(log_scale.grad))


@pytest.mark.parametrize("dtype, lowest, rtol", [(torch.float32, -13.0, 2e-5), (torch.float64, -37.0, 1e-13)])
def test_standard_normal_cdf_has_a_small_relative_error_in_both_tails(dtype, lowest, rtol):
    x = torch.linspace(lowest, 8.0, 2001, dtype=dtype)
    np.testing.assert_allclose(std_normal_cdf(x).double().numpy(), special.ndtr(x.double().numpy()), rtol=rtol)
    assert torch.isfinite(torch.func.grad(lambda v: std_normal_cdf(v).sum())(x)).all()


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_lognormal_restricted_mean_keeps_its_precision_far_below_the_median(dtype, rtol):
    """E[min(R, c)] = e^{μ+σ²/2}·Φ(x − σ) + c·Φ(−x): for wide distributions and small c the first term
    needs Φ far in its lower tail (x − σ down to −9 here), where (1 + erf)/2 rounds to 0 in float32."""
    loc = torch.tensor([0.0, 0.0, 1.0, 5.0, 5.0], dtype=dtype)
    sigma = torch.tensor([4.0, 5.0, 6.0, 3.0, 2.0], dtype=dtype)
    x = torch.tensor([-2.5, -3.0, -3.0, -2.0, 1.0], dtype=torch.float64)
    c = torch.exp(loc.double() + sigma.double() * x)
    dist = LogNormal(loc, sigma.log())
    mu, s = loc.double().numpy(), sigma.double().numpy()
    expected = np.exp(mu + s**2 / 2) * special.ndtr(x.numpy() - s) + c.numpy() * special.ndtr(-x.numpy())
    np.testing.assert_allclose(dist.mean(c.to(dtype)).double().numpy(), expected, rtol=rtol)


def test_weibull_mixture_is_the_weighted_sum_of_its_components():
    from scipy import stats

    g = torch.Generator().manual_seed(2)
    gate, log_scales, log_shapes = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    log_scales = log_scales + 4
    dist = WeibullMixture(gate, log_scales, log_shapes)
    u = torch.tensor([1.0, 30.0, 100.0, 900.0], dtype=torch.float64)
    w = torch.softmax(gate, dim=-1).numpy()
    sf = sum(w[:, c, None] * stats.weibull_min(c=log_shapes[:, c].exp().numpy()[:, None],
                                               scale=log_scales[:, c].exp().numpy()[:, None]).sf(u.numpy()) for c in range(3))
    pdf = sum(w[:, c, None] * stats.weibull_min(c=log_shapes[:, c].exp().numpy()[:, None],
                                                scale=log_scales[:, c].exp().numpy()[:, None]).pdf(u.numpy()) for c in range(3))
    np.testing.assert_allclose(dist.survival(u).numpy(), sf, rtol=1e-10)
    np.testing.assert_allclose(dist.density(u).numpy(), pdf, rtol=1e-10)
    assert torch.allclose(dist.components().log_survival(u)[:, 1], Weibull(log_scales[:, 1], log_shapes[:, 1]).log_survival(u))


def test_weibull_mixture_log_likelihood_gradients_by_hand_equal_autograd_of_the_formula():
    """log f (events) / log S (censored) of a mixture through _MixtureLogLikelihood: the values of log_density and
    log_survival, and gradients in every parameter and in u equal to autograd through them — including hazards
    capped at the dtype's limit, several durations per element and a broadcast ``observed`` — and gradcheck."""
    from ehrseq.models.distributions.mixture import _MixtureLogLikelihood

    g = torch.Generator().manual_seed(11)
    gate, log_scales, log_shapes = (torch.randn(5, 4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    parameters = [gate.requires_grad_(), (log_scales + 4).requires_grad_(), (0.8 * log_shapes).requires_grad_()]
    u = torch.rand(5, 4, 2, generator=g, dtype=torch.float64) * 500 + 0.5
    u[0, 0, 0] = 1e300  # H capped
    u = u.requires_grad_()
    observed = torch.rand(5, 4, 2, generator=g) < 0.5
    dist = WeibullMixture(*parameters)
    fused = dist.log_likelihood(u, observed)
    reference = torch.where(observed, dist.log_density(u), dist.log_survival(u))
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=0.0)
    weights = torch.randn(fused.shape, generator=g, dtype=torch.float64)
    by_hand = torch.autograd.grad((fused * weights).sum(), [*parameters, u])
    by_autograd = torch.autograd.grad((reference * weights).sum(), [*parameters, u])
    for got, expected in zip(by_hand, by_autograd):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    broadcast = dist.log_likelihood(u, torch.tensor([True, False]))  # observed [U] against u [5, 4, U]
    torch.testing.assert_close(broadcast, torch.cat([dist.log_density(u[..., :1]), dist.log_survival(u[..., 1:])], -1))
    small = [p.detach()[:2, :2].clone().requires_grad_() for p in parameters]
    log_weights = torch.log_softmax(small[0].movedim(-1, 0).unsqueeze(-1), dim=0)
    inputs = (log_weights, small[1].movedim(-1, 0).unsqueeze(-1), small[2].movedim(-1, 0).unsqueeze(-1),
              torch.log(u.detach()[1:3, :2]).requires_grad_(), observed[1:3, :2])
    assert torch.autograd.gradcheck(_MixtureLogLikelihood.apply, inputs)
    (first,) = torch.autograd.grad(dist.log_likelihood(u.detach(), observed).sum(), parameters[1], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):  # second derivatives would miss terms: refused
        torch.autograd.grad(first.sum(), parameters[1])


def test_packed_weibull_mixture_equals_the_mixture_of_its_chunks_selected_and_masked():
    """A head's packed [gates ; log λ − offset ; log k] gives the mixture of its chunks: values, selections of
    batch elements by a mask (one gather), masked copies and gradients."""
    from ehrseq.models.distributions.mixture import PackedWeibullMixture

    g = torch.Generator().manual_seed(5)
    packed = torch.randn(6, 4, 9, generator=g, dtype=torch.float64).requires_grad_()
    keep = torch.rand(6, 4, generator=g) < 0.6
    u = torch.tensor([1.0, 30.0, 400.0], dtype=torch.float64)
    results = []
    for build in (lambda p: PackedWeibullMixture(p, 5.0),
                  lambda p: WeibullMixture(p[..., :3], p[..., 3:6] + 5.0, p[..., 6:])):
        dist = build(packed)
        selected, masked = dist[keep], dist.masked(keep)
        value = selected.log_survival(u).sum() + masked.log_density(u).sum() + dist.mean().sum()
        results.append((selected.log_survival(u).detach(), torch.autograd.grad(value, packed)[0]))
        assert tuple(selected.batch_shape) == (int(keep.sum()),) and selected.num_components == 3
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=0.0)
    with pytest.raises(ShapeError, match="3·C"):
        PackedWeibullMixture(torch.zeros(2, 4))  # not 3·C parameters


def test_weibull_density_limit_at_zero():
    dist = Weibull(torch.zeros(3, dtype=torch.float64), torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64))
    assert dist.log_density(0.0)[:, 0].tolist() == [-math.inf, 0.0, math.inf]


# ---------------------------------------------------------------------- visit-indexed head
def test_visit_hazard_is_geometric_in_visit_intervals():
    logits = torch.tensor([-50.0, -2.0, 0.0, 3.0, 50.0], dtype=torch.float64)
    dist = VisitHazard(logits)
    h = torch.sigmoid(logits)
    assert torch.equal(dist.next_visit_risk(), h)
    assert torch.allclose(dist.survival(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
                          torch.stack([torch.sigmoid(-logits) ** j for j in (1, 2, 3)], dim=-1), rtol=1e-12, atol=0)
    assert torch.allclose(dist.log_survival(1.0)[:, 0], torch.nn.functional.logsigmoid(-logits), rtol=1e-12, atol=0)
    assert torch.allclose(dist.log_next_visit_risk(), torch.nn.functional.logsigmoid(logits))
    moderate = VisitHazard(torch.tensor([-5.0, 0.0, 4.0], dtype=torch.float64))
    for i, q in enumerate(1 - moderate.next_visit_risk().tolist()[j] for j in range(3)):
        assert float(moderate.mean()[i]) == pytest.approx(integrate.quad(lambda x: q**x, 0, math.inf)[0], rel=1e-9)
        assert float(moderate.mean(2.0)[i]) == pytest.approx((1 - q**2) / -math.log(q), rel=1e-9)


# ---------------------------------------------------------------------- interval masses (interval-censored likelihood)
@pytest.mark.parametrize("name", NAMES)
@QUADRATURE
@given(seed=SEEDS, scale=MODERATE)
@example(seed=833495, scale=2.0)  # a PMF tail of e-fold 0.23 days after its last knot, targets 3,000 days further
def test_log_interval_mass_is_the_integral_of_the_density(name, seed, scale):
    dist = build(name, seed, scale, batch=(3,))
    lower = dist.quantile(torch.tensor([0.2, 0.6], dtype=torch.float64))
    upper = lower * torch.tensor([1.5, 4.0], dtype=torch.float64)
    expected = integrate_to(dist.density, upper, knots_of(dist)) - integrate_to(dist.density, lower, knots_of(dist))
    np.testing.assert_allclose(dist.log_interval_mass(lower, upper).exp().numpy(), expected, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(dist.log_interval_mass(lower, torch.full_like(lower, math.inf)).numpy(),
                               dist.log_survival(lower).numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(seed=SEEDS, scale=SCALES)
def test_log_interval_mass_keeps_its_precision_in_float32(name, seed, scale):
    """Tiny interval masses far in either tail: float32 agrees with float64 (no subtraction of log S)."""
    dist64 = build(name, seed, scale)
    dist32 = build(name, seed, scale, dtype=torch.float32)
    lower = torch.tensor([1e-6, 1e-3, 1.0, 50.0, 400.0, 1e4, 1e6], dtype=torch.float64)
    upper = lower * 1.5
    exact = dist64.log_interval_mass(lower, upper)
    approx = dist32.log_interval_mass(lower.float(), upper.float()).double()
    representable = torch.isfinite(exact) & (exact > -80.0)
    assert torch.all(torch.isfinite(approx[representable]))
    assert torch.allclose(approx[representable], exact[representable], rtol=1e-3, atol=1e-3)
