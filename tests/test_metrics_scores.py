"""Distribution scores (CRPS, CoV sharpness, Survival-AUPRC, held-out NLL) against numerical integration
and closed forms, and every metric's distribution input path against its array path."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import lognorm, norm
from sksurv.metrics import brier_score as sk_brier
from sksurv.util import Surv

from ehrseq.errors import ShapeError
from ehrseq.metrics import (
    CensoringDistribution,
    antolini_c,
    brier_score,
    coefficient_of_variation,
    coefficient_of_variation_lognormal,
    cumulative_dynamic_auc,
    d_calibration,
    held_out_nll,
    mae,
    survival_at,
    survival_auprc,
    survival_auprc_lognormal,
    survival_crps,
)
from ehrseq.models.distributions.base import SurvivalDistribution


class LogNormal(SurvivalDistribution):
    """log R ~ N(mu, sigma²), written here from scipy's definitions (independent of ehrseq's heads)."""

    batched_fields = ("mu", "sigma")

    def __init__(self, mu, sigma):
        self.mu, self.sigma = torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(sigma, dtype=torch.float64)

    @property
    def batch_shape(self):
        return self.mu.shape

    def _z(self, u):
        u = self._durations(u)
        return (torch.log(u) - self.mu[..., None]) / self.sigma[..., None], u

    def log_survival(self, u):
        z, _ = self._z(u)
        return torch.special.log_ndtr(-z)

    def log_density(self, u):
        z, u = self._z(u)
        return -0.5 * z**2 - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma[..., None]) - torch.log(u)


def cohort(n, seed):
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(1.0, 0.4, n), rng.uniform(0.4, 1.3, n)
    event_time = np.exp(mu + sigma * rng.normal(size=n))
    censor_time = rng.exponential(8.0, n)
    return np.minimum(event_time, censor_time), event_time <= censor_time, mu, sigma


def lognormal_curves(mu, sigma, grid):
    return norm.sf((np.log(grid)[None, :] - mu[:, None]) / sigma[:, None])


def curve_function(knots, values, interpolation):
    """S(z) of one subject from its grid values, (0, 1) prepended, held after the last knot."""
    knots, values = np.r_[0.0, knots], np.r_[1.0, values]
    if interpolation == "linear":
        return lambda z: float(np.interp(z, knots, values))
    return lambda z: float(values[np.searchsorted(knots, z, side="right") - 1])


def integral(f, lo, hi, knots):
    if hi <= lo:
        return 0.0
    breaks = [k for k in knots if lo < k < hi]
    return quad(f, lo, hi, points=breaks or None, limit=400, epsabs=1e-13, epsrel=1e-12)[0]


# ---------------------------------------------------------------- reading curves


@pytest.mark.parametrize("interpolation", ["linear", "step"])
@pytest.mark.parametrize("grid", [np.array([0.5, 1.0, 3.0]), np.array([0.0, 1.0, 3.0])])
def test_survival_at_reads_curves_between_before_and_beyond_the_grid(interpolation, grid):
    surv = np.array([[0.9, 0.6, 0.2], [0.95, 0.95, 0.5], [1.0, 0.3, 0.0]])
    at = np.array([0.25, 1.0, 7.0])  # before the grid, on a knot, beyond the grid
    got = survival_at(surv, grid, at, interpolation=interpolation)
    expected = [curve_function(grid[grid > 0], surv[i, grid > 0] if grid[0] > 0 else surv[i, 1:], interpolation)(a)
                for i, a in enumerate(at)]
    if grid[0] == 0:  # a grid starting at 0 uses the given S(0) instead of 1
        expected[0] = np.interp(0.25, grid, surv[0]) if interpolation == "linear" else surv[0, 0]
    np.testing.assert_allclose(got, expected, atol=1e-15)
    with pytest.raises(ValueError, match="at must be"):
        survival_at(surv, grid, -at)


# ---------------------------------------------------------------- CRPS


@pytest.mark.parametrize("interpolation", ["linear", "step"])
def test_survival_crps_equals_numerical_integration_of_the_definition(interpolation):
    time, event, mu, sigma = cohort(25, 0)
    grid = np.array([0.5, 1.0, 2.0, 3.5, 5.0, 8.0])
    surv = lognormal_curves(mu, sigma, grid)
    got = survival_crps(time, event, surv, grid, interpolation=interpolation, reduction="none")
    for i in range(time.size):
        s = curve_function(grid, surv[i], interpolation)
        cut = min(time[i], grid[-1])
        expected = integral(lambda z: (1 - s(z)) ** 2, 0.0, cut, grid)
        if event[i]:
            expected += integral(lambda z: s(z) ** 2, cut, grid[-1], grid)
        assert got[i] == pytest.approx(expected, abs=1e-10)
    assert survival_crps(time, event, surv, grid, interpolation=interpolation) == pytest.approx(got.mean())


def test_survival_crps_rewards_the_true_distribution():
    time, event, mu, sigma = cohort(1000, 1)
    grid = np.geomspace(0.01, 200.0, 300)
    right = survival_crps(time, event, lognormal_curves(mu, sigma, grid), grid)
    wrong = survival_crps(time, event, lognormal_curves(mu + 0.8, sigma, grid), grid)
    assert right < wrong


# ---------------------------------------------------------------- sharpness


def test_coefficient_of_variation_closed_form_and_restricted_moments():
    _, _, mu, sigma = cohort(6, 2)
    np.testing.assert_allclose(
        coefficient_of_variation_lognormal(sigma, reduction="none"),
        [lognorm(s).std() / lognorm(s).mean() for s in sigma],
    )
    fine = np.geomspace(1e-4, 1e5, 30000)
    np.testing.assert_allclose(
        coefficient_of_variation(lognormal_curves(mu, sigma, fine), fine, reduction="none"),
        coefficient_of_variation_lognormal(sigma, reduction="none"),
        rtol=2e-3,
    )
    coarse = np.array([0.5, 2.0, 4.0, 9.0])
    surv = lognormal_curves(mu, sigma, coarse)
    got = coefficient_of_variation(surv, coarse, interpolation="step", reduction="none")
    for i in range(mu.size):
        s = curve_function(coarse, surv[i], "step")
        mean = integral(s, 0.0, 9.0, coarse)
        second = integral(lambda z: 2 * z * s(z), 0.0, 9.0, coarse)
        assert got[i] == pytest.approx(math.sqrt(second - mean**2) / mean, rel=1e-9)


# ---------------------------------------------------------------- Survival-AUPRC


def auprc_quad(y, observed, upper, cdf, knots=()):
    """∫_0^1 of the precision-window mass; ``knots`` of a piecewise curve become breakpoints in t."""
    if observed:
        f = lambda t: cdf(y / t) - cdf(y * t)  # noqa: E731
    elif np.isfinite(upper):
        f = lambda t: cdf(upper / t) - cdf(y * t)  # noqa: E731
    else:
        f = lambda t: 1.0 - cdf(y * t)  # noqa: E731
    far = y if observed else upper
    breaks = [b for k in knots for b in (k / y, far / k) if 0 < b < 1] + list(np.geomspace(1e-6, 0.5, 12))
    return quad(f, 0.0, 1.0, points=sorted(breaks), limit=400, epsabs=1e-13)[0]


def test_survival_auprc_lognormal_closed_forms_equal_the_integral_definition():
    time, event, mu, sigma = cohort(18, 3)
    upper = np.where(np.arange(18) % 3 == 0, time * 2.5, np.inf)
    got = survival_auprc_lognormal(time, event, mu, sigma, upper=upper, reduction="none")
    for i in range(time.size):
        cdf = lambda z: norm.cdf((np.log(z) - mu[i]) / sigma[i]) if z > 0 else 0.0  # noqa: E731
        assert got[i] == pytest.approx(auprc_quad(time[i], event[i], upper[i], cdf), abs=1e-9)
    extreme = survival_auprc_lognormal([1e-30, 1e30, 1.0], [1, 0, 1], np.zeros(3), np.full(3, 0.05), reduction="none")
    assert np.all(np.isfinite(extreme)) and np.all((extreme >= 0) & (extreme <= 1))


@pytest.mark.parametrize("interpolation", ["linear", "step"])
def test_survival_auprc_on_curves_equals_the_integral_of_the_interpolated_curve(interpolation):
    time, event, mu, sigma = cohort(12, 4)
    grid = np.array([0.5, 1.5, 3.0, 6.0, 10.0])
    surv = lognormal_curves(mu, sigma, grid)
    upper = np.where(np.arange(12) % 4 == 0, time * 1.7, np.inf)
    got = survival_auprc(time, event, surv, grid, upper=upper, interpolation=interpolation, reduction="none")
    for i in range(time.size):
        s = curve_function(grid, surv[i], interpolation)
        expected = auprc_quad(time[i], event[i], upper[i], lambda z: 1.0 - s(z), grid)
        assert got[i] == pytest.approx(expected, abs=1e-10)


def test_survival_auprc_of_a_distribution_matches_the_closed_form():
    time, event, mu, sigma = cohort(40, 5)
    closed = survival_auprc_lognormal(time, event, mu, sigma, reduction="none")
    numeric = survival_auprc(time, event, LogNormal(mu, sigma), reduction="none")
    np.testing.assert_allclose(numeric, closed, atol=2e-5)
    with pytest.raises(ValueError, match="> 0"):
        survival_auprc_lognormal([0.0], [1], [0.0], [1.0])


# ---------------------------------------------------------------- held-out NLL


def test_held_out_nll_equals_scipy_log_likelihood_from_arrays_and_distribution():
    time, event, mu, sigma = cohort(200, 6)
    terms = np.where(
        event,
        lognorm.logpdf(time, sigma, scale=np.exp(mu)),
        lognorm.logsf(time, sigma, scale=np.exp(mu)),
    )
    from_dist = held_out_nll(time, event, LogNormal(mu, sigma), reduction="none")
    np.testing.assert_allclose(from_dist, -terms, rtol=1e-10)
    log_f = np.where(event, lognorm.logpdf(time, sigma, scale=np.exp(mu)), np.nan)  # unused entries ignored
    log_s = np.where(event, np.nan, lognorm.logsf(time, sigma, scale=np.exp(mu)))
    assert held_out_nll(time, event, log_density=log_f, log_survival=log_s) == pytest.approx(-terms.mean())
    with pytest.raises(ValueError, match="log_survival is required"):
        held_out_nll(time, event, log_density=log_f)
    with pytest.raises(ValueError, match="not both"):
        held_out_nll(time, event, LogNormal(mu, sigma), log_density=log_f)
    with pytest.raises(ShapeError):
        held_out_nll(time[:5], event[:5], LogNormal(mu, sigma))
    assert held_out_nll([1.0], [1], log_density=[-np.inf], log_survival=[0.0]) == np.inf


# ---------------------------------------------------------------- distribution inputs of the other metrics


def test_distribution_inputs_equal_array_inputs_evaluated_at_the_same_points():
    time, event, mu, sigma = cohort(300, 7)
    dist = LogNormal(mu, sigma)
    own = norm.sf((np.log(time) - mu) / sigma)
    np.testing.assert_allclose(survival_at(dist, None, time), own, rtol=1e-12)
    assert d_calibration(time, event, dist).statistic == pytest.approx(d_calibration(time, event, own).statistic)

    rng = np.random.default_rng(0)
    train_time, train_event = rng.exponential(8.0, 900), rng.random(900) < 0.5
    train_event[np.argmax(train_time)] = True
    censoring = CensoringDistribution.fit(train_time, train_event)
    times = np.array([1.0, 2.0, 4.0])
    surv = lognormal_curves(mu, sigma, times)
    from_dist = brier_score(time, event, dist, times, censoring)
    np.testing.assert_allclose(from_dist, brier_score(time, event, surv, times, censoring))
    expected = sk_brier(Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time), surv, times)[1]
    np.testing.assert_allclose(brier_score(time, event, dist, times, censoring), expected, atol=1e-12)
    np.testing.assert_allclose(
        cumulative_dynamic_auc(time, event, dist, times, censoring).auc,
        cumulative_dynamic_auc(time, event, 1 - surv, times, censoring).auc,
    )
    grid = np.geomspace(0.05, 50.0, 200)
    crps_curves = survival_crps(time, event, lognormal_curves(mu, sigma, grid), grid)
    assert survival_crps(time, event, dist, grid) == pytest.approx(crps_curves)

    def loop_antolini():
        hits = pairs = 0
        for i in np.flatnonzero(event):
            later = time > time[i]
            others = norm.sf((np.log(time[i]) - mu[later]) / sigma[later])
            hits += int(np.sum(own[i] < others - 1e-8))
            pairs += int(later.sum())
        return hits / pairs

    assert antolini_c(time, event, dist).cindex == pytest.approx(loop_antolini(), abs=1e-12)
    medians = np.exp(mu)
    assert mae(time, event, dist) == pytest.approx(mae(time, event, medians), rel=1e-9)
    with pytest.raises(ShapeError):
        antolini_c(time[:10], event[:10], dist)
