"""Grid families, competing risks and multi-event collections against brute-force definitions written here:
the grid convention, the corrected piecewise formulas of docs/reference.md A16, the documented tail, the
discrete likelihood (and the catalogue's logit losses), CIFs, and argument validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from ehrseq.errors import ConfigError, ShapeError
from ehrseq.losses.functional import logistic_hazard_nll, pmf_nll
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
    Weibull,
    WeibullMixture,
)

GRID = [0.0, 30.0, 90.0, 365.0, 730.0]
TAU = np.array(GRID)
WIDTH = np.diff(TAU)
L = len(GRID) - 1

#: durations: inside bins, on knots, just around knots, beyond the grid
U = [0.0, 1e-6, 7.0, 30.0, 30.0 + 1e-9, 60.0, 90.0, 200.0, 365.0, 500.0, 729.999, 730.0, 731.0, 2000.0, 1e5]


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def segment(u: float) -> tuple[int, float]:
    """(k, t): the bin of u by the right-closed convention and the offset from its left knot (k = L beyond)."""
    for k in range(L):
        if u <= TAU[k + 1]:
            return k, u - TAU[k]
    return L, u - TAU[L]


def logits(shape: tuple[int, ...], seed: int, scale: float = 1.5, offset: float = 0.0) -> torch.Tensor:
    return offset + scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def check_against(dist, reference_log_s, reference_log_f) -> None:
    for b in range(dist.batch_shape[0]):
        expected_s = [reference_log_s(b, u) for u in U]
        expected_f = [reference_log_f(b, u) for u in U[1:]]
        np.testing.assert_allclose(dist[b].log_survival(t64(U)).numpy(), expected_s, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dist[b].log_density(t64(U[1:])).numpy(), expected_f, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- the grid convention
def test_bin_index_is_right_closed_with_beyond_bin():
    dist = LogisticHazard(torch.zeros(L, dtype=torch.float64), GRID)
    expected = [min(segment(u)[0], L) for u in U]
    assert dist.bin_index(t64(U)).tolist() == expected
    assert dist.num_bins == L and dist.support_max == 730.0


# ---------------------------------------------------------------------- discrete heads
def test_logistic_hazard_products_and_constant_hazard_interpolation():
    z = logits((3, L), 0)
    dist = LogisticHazard(z, GRID)
    h = torch.sigmoid(z).numpy()

    def knot_log_s(b: int, k: int) -> float:
        return sum(math.log(1 - h[b, j]) for j in range(k))

    def rate(b: int, k: int) -> float:  # constant hazard of bin k (the last one beyond the grid)
        return -math.log(1 - h[b, min(k, L - 1)]) / WIDTH[min(k, L - 1)]

    def log_s(b: int, u: float) -> float:
        k, t = segment(u)
        return knot_log_s(b, k) - rate(b, k) * t

    check_against(dist, log_s, lambda b, u: math.log(rate(b, segment(u)[0])) + log_s(b, u))
    masses = [[knot_log_s(b, k) + math.log(h[b, k]) for k in range(L)] + [knot_log_s(b, L)] for b in range(3)]
    np.testing.assert_allclose(dist.log_mass().numpy(), masses, rtol=1e-12)
    np.testing.assert_allclose(dist.log_survival_at_grid().numpy(), [[knot_log_s(b, k) for k in range(L + 1)] for b in range(3)], rtol=1e-12)


def test_pmf_remaining_mass_and_last_bin_hazard_beyond_the_grid():
    z = logits((3, L + 1), 1)
    dist = PMF(z, GRID)
    f = torch.softmax(z, -1).numpy()

    def knot(b: int, k: int) -> float:
        return float(f[b, k:].sum())

    def rate(b: int, k: int) -> float:
        k = min(k, L - 1)
        return math.log(knot(b, k) / knot(b, k + 1)) / WIDTH[k]

    def log_s(b: int, u: float) -> float:
        k, t = segment(u)
        return math.log(knot(b, k)) - rate(b, k) * t

    check_against(dist, log_s, lambda b, u: math.log(rate(b, segment(u)[0])) + log_s(b, u))
    np.testing.assert_allclose(dist.log_mass().exp().numpy(), f, rtol=1e-12)


# ---------------------------------------------------------------------- piecewise models (A16, corrected)
@pytest.mark.parametrize("unit", [1.0, 365.25])
def test_piecewise_constant_hazard_formula(unit):
    """h_l = e^{z_l}/u per day, with the outputs per ``rate_unit`` u days (as the family builds them)."""
    z = logits((3, L), 2, offset=-5.0 + math.log(unit))
    dist = PiecewiseConstantHazard(z, GRID, rate_unit=unit)
    h = z.exp().numpy() / unit

    def cumulative(b: int, u: float) -> float:
        k, t = segment(u)
        return sum(WIDTH[i] * h[b, i] for i in range(min(k, L))) + t * h[b, min(k, L - 1)]

    check_against(dist, lambda b, u: -cumulative(b, u), lambda b, u: math.log(h[b, min(segment(u)[0], L - 1)]) - cumulative(b, u))


@pytest.mark.parametrize("unit", [1.0, 365.25])
def test_piecewise_linear_hazard_formula(unit):
    z = logits((3, L + 1), 3, offset=-5.0 + math.log(unit))
    dist = PiecewiseLinearHazard(z, GRID, rate_unit=unit)
    h = z.exp().numpy() / unit

    def cumulative(b: int, u: float) -> float:
        k, t = segment(u)
        inner = sum(WIDTH[i] * (h[b, i] + h[b, i + 1]) / 2 for i in range(min(k, L)))
        if k == L:
            return inner + h[b, L] * t  # beyond τ_L the hazard stays at h_L
        return inner + h[b, k] * t + t * t / (2 * WIDTH[k]) * (h[b, k + 1] - h[b, k])

    def hazard(b: int, u: float) -> float:
        k, t = segment(u)
        return h[b, L] if k == L else h[b, k] + t / WIDTH[k] * (h[b, k + 1] - h[b, k])

    check_against(dist, lambda b, u: -cumulative(b, u), lambda b, u: math.log(hazard(b, u)) - cumulative(b, u))


@pytest.mark.parametrize("cls", [PiecewiseConstantHazard, PiecewiseLinearHazard])
def test_rates_per_unit_equal_the_per_day_rates_of_shifted_logits(cls):
    """Outputs per ``rate_unit`` u days are the per-day model of z − log u in every quantity, after indexing,
    masking and a device move too, and in the Survival-CRPS and its gradient."""
    unit = 365.25
    z = logits((4, L + cls.extra_outputs), 7, offset=-1.0).requires_grad_()
    per_unit, per_day = cls(z, GRID, rate_unit=unit), cls(z - math.log(unit), GRID)
    y, start = t64([5.0, 100.0, 700.0, 900.0]), t64([5.0, math.inf, 800.0, 900.0])
    keep = torch.tensor([True, False, True, True])
    everything = torch.ones(4, dtype=torch.bool)
    for a, b, rows in [(per_unit, per_day, everything), (per_unit[1:3], per_day[1:3], everything[1:3]),
                       (per_unit.masked(keep), per_day.masked(keep), keep),  # the fill is a raw output: kept rows only
                       (per_unit.to("cpu"), per_day.to("cpu"), everything)]:
        n = a.batch_shape[0]
        for name, call in [("log_survival", lambda d: d.log_survival(t64(U))), ("log_density", lambda d: d.log_density(t64(U[1:]))),
                           ("quantile", lambda d: d.quantile(t64([0.1, 0.5, 0.9]))), ("mean", lambda d: d.mean()),
                           ("log_mass", lambda d: d.log_mass()),
                           ("survival_crps", lambda d: d.survival_crps(y[:n], start[:n]))]:
            np.testing.assert_allclose(call(a).detach()[rows].numpy(), call(b).detach()[rows].numpy(), rtol=1e-11,
                                       atol=1e-13, err_msg=name)
    (gradient_unit,) = torch.autograd.grad(per_unit.survival_crps(y, start).sum(), z)
    (gradient_day,) = torch.autograd.grad(per_day.survival_crps(y, start).sum(), z)
    np.testing.assert_allclose(gradient_unit.numpy(), gradient_day.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("cls", [LogisticHazard, PiecewiseConstantHazard, PiecewiseLinearHazard])
@pytest.mark.parametrize("bins", [4, 70])
def test_knot_log_survival_gradients_by_hand_pass_gradcheck(cls, bins):
    """The hand-written backward passes of log S at the knots (both suffix-sum paths: up to 64 bins and beyond)."""
    grid = torch.linspace(0.0, 700.0, bins + 1, dtype=torch.float64)
    z = logits((2, 3, bins + cls.extra_outputs), bins, scale=1.0, offset=-3.0).requires_grad_()
    options = {} if cls is LogisticHazard else {"rate_unit": 30.0}
    assert torch.autograd.gradcheck(lambda z: cls(z, grid, **options).log_survival_at_grid(), (z,))


@pytest.mark.parametrize("size", [1, 5, 64, 65, 130])
@pytest.mark.parametrize("negate", [False, True])
def test_suffix_sums_are_the_sums_of_the_later_columns(size, negate):
    from ehrseq.models.distributions.grid import _suffix_sums

    x = logits((3, 2, size), size)
    x[0, 0, size // 2] = 0.0
    expected = np.array([[[x[i, j, k:].sum().item() for k in range(size)] for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(_suffix_sums(x, negate=negate).numpy(), -expected if negate else expected,
                               rtol=1e-12, atol=1e-12)


def _density_tail_rate(log_s_before: float, log_s_end: float) -> float:
    return (log_s_before - log_s_end) / WIDTH[-1]


def test_piecewise_constant_density_formula():
    z = logits((3, L + 1), 4)
    dist = PiecewiseConstantDensity(z, GRID)
    e = z.exp().numpy()
    norm = e[:, L] + (WIDTH * e[:, :L]).sum(axis=1)

    def survival(b: int, u: float) -> float:  # inside the grid
        k, _ = segment(u)
        later = sum(WIDTH[j] * e[b, j] for j in range(k + 1, L))
        return (e[b, L] + later + (TAU[k + 1] - u) * e[b, k]) / norm[b]

    def tail_rate(b: int) -> float:
        return _density_tail_rate(math.log(survival(b, TAU[L - 1])), math.log(e[b, L] / norm[b]))

    def log_s(b: int, u: float) -> float:
        k, t = segment(u)
        return math.log(e[b, L] / norm[b]) - tail_rate(b) * t if k == L else math.log(survival(b, u))

    def log_f(b: int, u: float) -> float:
        k, _ = segment(u)
        return math.log(tail_rate(b)) + log_s(b, u) if k == L else math.log(e[b, k] / norm[b])

    check_against(dist, log_s, log_f)


def test_piecewise_linear_density_formula():
    z = logits((3, L + 2), 5)
    dist = PiecewiseLinearDensity(z, GRID)
    e = z.exp().numpy()
    norm = e[:, L + 1] + (WIDTH * (e[:, :L] + e[:, 1 : L + 1]) / 2).sum(axis=1)

    def density(b: int, u: float) -> float:
        k, t = segment(u)
        return (e[b, k] + t / WIDTH[k] * (e[b, k + 1] - e[b, k])) / norm[b]

    def survival(b: int, u: float) -> float:  # inside the grid
        k, _ = segment(u)
        later = sum(WIDTH[j] * (e[b, j] + e[b, j + 1]) / 2 for j in range(k + 1, L))
        in_bin = (TAU[k + 1] - u) * (density(b, u) + e[b, k + 1] / norm[b]) / 2
        return (e[b, L + 1] + later) / norm[b] + in_bin

    def tail_rate(b: int) -> float:
        return _density_tail_rate(math.log(survival(b, TAU[L - 1])), math.log(e[b, L + 1] / norm[b]))

    def log_s(b: int, u: float) -> float:
        k, t = segment(u)
        return math.log(e[b, L + 1] / norm[b]) - tail_rate(b) * t if k == L else math.log(survival(b, u))

    def log_f(b: int, u: float) -> float:
        k, _ = segment(u)
        return math.log(tail_rate(b)) + log_s(b, u) if k == L else math.log(density(b, u))

    check_against(dist, log_s, log_f)


@pytest.mark.parametrize("cls,outputs", [
    (LogisticHazard, L), (PMF, L + 1), (PiecewiseConstantHazard, L), (PiecewiseLinearHazard, L + 1),
    (PiecewiseConstantDensity, L + 1), (PiecewiseLinearDensity, L + 2),
])
def test_masses_are_a_distribution_and_discrete_likelihood(cls, outputs):
    dist = cls(logits((4, outputs), 6, offset=-4.0 if "Hazard" in cls.__name__ and cls is not LogisticHazard else 0.0), GRID)
    masses = dist.log_mass()
    assert torch.allclose(masses.exp().sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    log_s = dist.log_survival_at_grid()
    assert torch.allclose(log_s, dist.log_survival(t64(GRID)), atol=1e-12)
    bins = torch.tensor([0, 2, L, 1])
    event = torch.tensor([True, False, True, False])
    expected = [masses[0, 0], log_s[1, 3], masses[2, L], log_s[3, 2]]
    assert torch.allclose(dist.discrete_log_likelihood(bins, event), torch.stack(expected))
    per_u = dist.log_mass(torch.tensor([[0, L], [1, 1], [2, 0], [3, 3]]))
    assert torch.equal(per_u, torch.stack([masses[0, [0, L]], masses[1, [1, 1]], masses[2, [2, 0]], masses[3, [3, 3]]]))


def test_discrete_likelihood_equals_the_catalogue_logit_losses():
    g = torch.Generator().manual_seed(7)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    bins = torch.tensor([[0, 2, L], [1, -1, -1]])
    event = torch.tensor([1, 0])
    hazard_logits = 3 * torch.randn(2, 3, L, generator=g, dtype=torch.float64)
    pmf_logits = 3 * torch.randn(2, 3, L + 1, generator=g, dtype=torch.float64)
    observed = (event > 0).unsqueeze(1).expand(2, 3)
    safe_bins = bins.clamp_min(0)
    for dist, loss in (
        (LogisticHazard(hazard_logits, GRID), logistic_hazard_nll(hazard_logits, bins, event, mask, reduction="none", visit_weighting="visit")),
        (PMF(pmf_logits, GRID), pmf_nll(pmf_logits, bins, event, mask, reduction="none", visit_weighting="visit")),
    ):
        mine = -dist.discrete_log_likelihood(safe_bins, observed)
        assert torch.allclose(mine[mask], loss[mask], rtol=1e-12)


def test_extreme_logits_keep_a_proper_tail():
    # float64: a last bin holding e⁻¹⁰⁰ of the mass gives a tail rate (and quantiles) beyond float32's range
    z = torch.tensor([[50.0, -50.0, 50.0, -50.0, -50.0], [-50.0] * 5], dtype=torch.float64)
    for dist in (PMF(z, GRID), PiecewiseConstantDensity(z, GRID), PiecewiseLinearDensity(torch.cat([z, z[:, :1]], -1), GRID)):
        q = dist.quantile(t64([0.5, 0.999999]))
        assert torch.all(torch.isfinite(q))
        assert torch.all(dist.tail_rate() > 0)
        assert torch.all(dist.log_survival(t64([1e6])) <= dist.log_survival(t64([731.0])))
        assert torch.all(torch.isfinite(dist.mean(math.inf)))


# ---------------------------------------------------------------------- competing risks
def test_competing_pmf_cifs_and_overall():
    k_causes = 2
    z = logits((3, k_causes * L + 1), 8)
    dist = CompetingPMF(z, GRID, k_causes)
    p = torch.softmax(z, -1).numpy()
    cause_mass = p[:, :-1].reshape(3, k_causes, L)
    u = t64(U)
    cif = dist.cif(u).numpy()
    survival = dist.overall().survival(u).numpy()
    np.testing.assert_allclose(cif.sum(axis=1) + survival, 1.0, atol=1e-12)
    knots = dist.cif(t64(GRID)).numpy()
    np.testing.assert_allclose(knots[..., 1:], np.cumsum(cause_mass, axis=-1), rtol=1e-10, atol=1e-14)
    assert np.all(knots[..., 0] == 0)
    np.testing.assert_allclose(dist.cif(t64([1e7])).numpy()[..., 0].sum(-1), 1.0, atol=1e-12)
    totals = PMF(torch.cat([torch.logsumexp(torch.log_softmax(z, -1)[:, :-1].reshape(3, k_causes, L), 1), torch.log_softmax(z, -1)[:, -1:]], -1), GRID)
    assert torch.allclose(dist.overall().log_survival(u), totals.log_survival(u))
    # the cause-specific sub-densities integrate to the CIFs (Gauss–Legendre between knots, scipy nodes)
    x, w = special.roots_legendre(64)
    for end in (60.0, 500.0, 900.0):
        edges = [0.0, *[g for g in GRID[1:] if g < end], end]
        total = np.zeros((3, k_causes))
        for a, b in zip(edges[:-1], edges[1:]):
            nodes = torch.tensor(a + (b - a) * (x + 1) / 2)
            total += (dist.log_cause_density(nodes).exp().numpy() * w).sum(-1) * (b - a) / 2
        np.testing.assert_allclose(total, dist.cif(t64([end])).numpy()[..., 0], rtol=1e-10)
    assert dist.risk(torch.tensor([365.0]), cause=2).shape == (3, 1)


def test_competing_discrete_likelihood_equals_deephit_nll():
    k_causes = 3
    g = torch.Generator().manual_seed(9)
    z = 2 * torch.randn(2, 3, k_causes * L + 1, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    bins = torch.tensor([[0, 3, L], [2, L, -1]])
    event = torch.tensor([2, 0])
    loss = pmf_nll(z, bins, event, mask, num_causes=k_causes, reduction="none", visit_weighting="visit")
    dist = CompetingPMF(z, GRID, k_causes)
    mine = -dist.discrete_log_likelihood(bins.clamp_min(0), event.unsqueeze(1).expand(2, 3))
    assert torch.allclose(mine[mask], loss[mask], rtol=1e-12)
    assert torch.equal(dist[1].log_cif(t64(U)), dist.log_cif(t64(U))[1])
    keep = torch.tensor([[True, False, True], [True, True, False]])
    assert torch.equal(dist.masked(keep).logits[~keep], torch.zeros(2, k_causes * L + 1, dtype=torch.float64))


# ---------------------------------------------------------------------- multi-event
def test_multi_event_stacked_and_listed_agree():
    g = torch.Generator().manual_seed(10)
    gate, scales, shapes = (torch.randn(2, 3, 4, 2, generator=g, dtype=torch.float64) for _ in range(3))
    stacked = MultiEvent.stacked(WeibullMixture(gate, scales + 4, shapes), names=["mi", "stroke", "death", "afib"])
    listed = MultiEvent({n: WeibullMixture(gate[:, :, e], scales[:, :, e] + 4, shapes[:, :, e]) for e, n in enumerate(stacked.names)})
    u = torch.tensor([10.0, 100.0, 1000.0], dtype=torch.float64)
    assert torch.allclose(stacked.log_survival(u), listed.log_survival(u))
    per_event = torch.rand(2, 3, 4, 5, dtype=torch.float64, generator=g) * 500
    assert torch.allclose(stacked.log_density(per_event), listed.log_density(per_event))
    assert torch.allclose(stacked["death"].log_survival(u), stacked[2].log_survival(u))
    assert torch.allclose(stacked[-1].log_survival(u), listed["afib"].log_survival(u))
    assert torch.allclose(stacked.select(1).log_survival(u), stacked.log_survival(u)[1])
    assert torch.allclose(listed.select((slice(None), 0)).risk(u), listed.risk(u)[:, 0])
    assert len(stacked) == 4 and stacked.batch_shape == (2, 3) and [m.batch_shape for m in listed] == [(2, 3)] * 4
    with pytest.raises(KeyError, match="unknown event"):
        stacked["cancer"]
    with pytest.raises(IndexError):
        stacked[4]
    with pytest.raises(ConfigError, match="unique"):
        MultiEvent([LogNormal(torch.zeros(2), torch.zeros(2))] * 2, names=["a", "a"])
    with pytest.raises(ShapeError, match="same batch shape"):
        MultiEvent([LogNormal(torch.zeros(2), torch.zeros(2)), LogNormal(torch.zeros(3), torch.zeros(3))])


# ---------------------------------------------------------------------- validation
def test_invalid_grids_and_parameters_are_named():
    with pytest.raises(ConfigError, match="start at 0"):
        LogisticHazard(torch.zeros(2), [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="strictly increasing"):
        LogisticHazard(torch.zeros(2), [0.0, 2.0, 2.0])
    with pytest.raises(ConfigError, match="at least 2"):
        LogisticHazard(torch.zeros(0), [0.0])
    with pytest.raises(ConfigError, match="finite"):
        PMF(torch.zeros(3), [0.0, 1.0, math.inf])
    with pytest.raises(ShapeError, match="last dimension 5"):
        PMF(torch.zeros(2, 4), GRID)
    with pytest.raises(ShapeError, match="floating-point"):
        PiecewiseConstantHazard(torch.zeros(2, L, dtype=torch.long), GRID)
    for unit in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="rate_unit"):
            PiecewiseLinearHazard(torch.zeros(2, L + 1), GRID, rate_unit=unit)
    with pytest.raises(ShapeError, match="same shape"):
        LogNormal(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ShapeError, match="same shape"):
        WeibullMixture(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="num_causes"):
        CompetingPMF(torch.zeros(9), GRID, 0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Weibull(torch.zeros(2), torch.zeros(2)).quantile(1.0)
    with pytest.raises(ShapeError, match="bin indices"):
        PMF(torch.zeros(2, L + 1), GRID).log_mass(torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("cls,outputs,offset", [(LogisticHazard, 4, 0.0), (PMF, 5, 0.0), (PiecewiseLinearHazard, 5, -5.0),
                                                (PiecewiseLinearDensity, 6, 0.0)])
def test_calls_sharing_their_knots_equal_separate_calls(cls, outputs, offset):
    """Within sharing_knots, log S and log f of one duration tensor locate it once and gather each knot table
    once: the same values and gradients as separate calls (float64)."""
    from ehrseq.models.distributions.grid import sharing_knots

    g = torch.Generator().manual_seed(5)
    logits = offset + torch.randn(7, outputs, generator=g, dtype=torch.float64)
    u = torch.tensor([[1.0], [60.0], [100.0], [365.0], [500.0], [730.0], [2000.0]], dtype=torch.float64)
    results = []
    for shared in (True, False):
        z = logits.clone().requires_grad_()
        dist = cls(z, [0.0, 60.0, 180.0, 365.0, 730.0])
        if shared:
            with sharing_knots(dist):
                values = dist.log_survival(u) + 2.0 * dist.log_density(u)
        else:
            values = dist.log_survival(u) + 2.0 * dist.log_density(u)
        results.append((values, torch.autograd.grad(values.sum(), z)[0]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-14, atol=0.0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_logistic_hazard_knot_log_survival_and_its_gradient_are_the_logsigmoid_cumulative_sum(dtype, rtol):
    """The one-pass log S(τ_l) of the logistic hazard (and its hand-written backward) against autograd through
    cat(0, cumsum(logsigmoid(−z))), for logits of every size (±60 included)."""
    g = torch.Generator().manual_seed(4)
    logits = 6.0 * torch.randn(50, 3, 9, generator=g, dtype=torch.float64)
    logits[0, 0] = torch.tensor([-60.0, 60.0, 0.0, -1e-8, 1e-8, 30.0, -30.0, 5.0, -5.0], dtype=torch.float64)
    weights = torch.randn(50, 3, 10, generator=g, dtype=torch.float64).to(dtype)
    fast, slow = (logits.to(dtype).clone().requires_grad_() for _ in range(2))
    got = LogisticHazard(fast, GRID + [1000.0, 1500.0, 2000.0, 3000.0, 5000.0]).log_survival_at_grid()
    steps = torch.nn.functional.logsigmoid(-slow).cumsum(dim=-1)
    expected = torch.cat([torch.zeros_like(steps[..., :1]), steps], dim=-1)
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol)
    (d_fast,), (d_slow,) = (torch.autograd.grad((value * weights).sum(), leaf) for value, leaf in ((got, fast), (expected, slow)))
    torch.testing.assert_close(d_fast, d_slow, rtol=rtol, atol=rtol * float(d_slow.abs().max()))
    z = torch.randn(4, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: LogisticHazard(x, GRID).log_survival_at_grid(), (z,))
