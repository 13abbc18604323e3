"""Resampled (bootstrap-weighted) metrics equal the metrics recomputed on each resampled data set, and
the bootstrap interval of the C-index covers the population C at about its nominal rate."""

import numpy as np
import pytest
from scipy import integrate, special

from ehrseq.metrics import (
    CensoringDistribution,
    NoComparablePairsError,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
)
from ehrseq.metrics.resampled import (
    bootstrap_weight_blocks,
    bootstrap_weights,
    percentile_interval,
    resampled_auc,
    resampled_brier,
    resampled_concordance,
    resampled_integrated_brier,
)


def _sample(seed, n=60, competing=True, ties=True):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 30, size=n).astype(float) if ties else rng.exponential(10, size=n)
    codes = rng.choice([0, 1, 2] if competing else [0, 1], size=n)
    risk = rng.integers(0, 8, size=n) / 8 if ties else rng.random(n)
    train_time = rng.exponential(15, size=200)
    censoring = CensoringDistribution.fit(np.minimum(train_time, 40.0), rng.random(200) < 0.6)
    return time, codes, risk, censoring


def _resampled(weights, metric):
    """The metric recomputed on each resampled data set (rows repeated by their counts)."""
    values = []
    for counts in weights.astype(int):
        index = np.repeat(np.arange(counts.size), counts)
        try:
            values.append(metric(index))
        except (NoComparablePairsError, ValueError):
            values.append(np.nan)
    return np.array(values)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("competing", [False, True])
def test_resampled_concordance_equals_recomputation_on_resampled_data(seed, competing):
    time, codes, risk, censoring = _sample(seed, competing=competing)
    weights = bootstrap_weights(time.size, 25, seed)
    harrell = resampled_concordance(time, codes, risk, weights, cause=1)
    expected = _resampled(weights, lambda i: cause_specific_harrell_c(time[i], codes[i], risk[i], cause=1).cindex)
    np.testing.assert_allclose(harrell, expected, rtol=0, atol=1e-12)
    uno = resampled_concordance(time, codes, risk, weights, cause=1, censoring=censoring, tau=20.0)
    expected = _resampled(weights, lambda i: cause_specific_uno_c(time[i], codes[i], risk[i], censoring, cause=1,
                                                                  tau=20.0).cindex)
    np.testing.assert_allclose(uno, expected, rtol=0, atol=1e-12)


def test_resampled_concordance_with_unit_weights_is_the_index_itself():
    time, codes, risk, censoring = _sample(11, n=300)
    ones = np.ones((1, time.size))
    assert resampled_concordance(time, codes, risk, ones, cause=2)[0] == pytest.approx(
        cause_specific_harrell_c(time, codes, risk, cause=2).cindex, abs=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_resampled_auc_and_brier_equal_recomputation(seed):
    time, codes, risk, censoring = _sample(seed + 20)
    weights = bootstrap_weights(time.size, 20, seed)
    auc = resampled_auc(time, codes, risk, 15.0, censoring, weights, cause=1)
    expected = _resampled(weights, lambda i: cause_specific_auc(time[i], codes[i], risk[i], np.array([15.0]),
                                                                censoring, cause=1).auc[0])
    np.testing.assert_allclose(auc, expected, rtol=0, atol=1e-12)

    times = np.array([5.0, 10.0, 15.0, 20.0])
    rng = np.random.default_rng(seed)
    cif = np.sort(rng.random((time.size, times.size)), axis=1) * 0.8
    brier = resampled_brier(time, codes, cif, times, censoring, weights, cause=1)
    expected = np.stack([cause_specific_brier_score(time[i], codes[i], cif[i], times, censoring, cause=1)
                         for i in (np.repeat(np.arange(time.size), c) for c in weights.astype(int))])
    np.testing.assert_allclose(brier, expected, rtol=1e-12, atol=1e-14)
    ibs = resampled_integrated_brier(time, codes, cif, times, censoring, weights, cause=1)
    expected = _resampled(weights, lambda i: cause_specific_integrated_brier_score(time[i], codes[i], cif[i], times,
                                                                                   censoring, cause=1))
    np.testing.assert_allclose(ibs, expected, rtol=1e-12, atol=1e-14)


def test_undefined_resamples_are_nan():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    codes = np.array([1, 0, 0, 0])
    risk = np.array([0.9, 0.1, 0.2, 0.3])
    weights = np.array([[1.0, 1, 1, 1], [0.0, 2, 1, 1]])  # the second resample drops the only event
    values = resampled_concordance(time, codes, risk, weights)
    assert values[0] == 1.0 and np.isnan(values[1])
    lower, upper = percentile_interval(np.array([[np.nan], [np.nan]]), 0.9)
    assert np.isnan(lower[0]) and np.isnan(upper[0])


def test_bootstrap_weights_are_seeded_multinomial_counts():
    weights = bootstrap_weights(50, 200, seed=3)
    assert weights.shape == (200, 50) and np.all(weights.sum(axis=1) == 50)
    np.testing.assert_array_equal(weights, bootstrap_weights(50, 200, seed=3))
    assert not np.array_equal(weights, bootstrap_weights(50, 200, seed=4))
    assert weights.mean() == pytest.approx(1.0)


def _population_c(beta: float, censoring_rate: float) -> float:
    """Harrell's C of the risk score r ~ N(0, 1) in the population: T | r ~ Exp(e^{βr}), independent
    C ~ Exp(μ). Pair (i, j) is comparable with i first when T_i is the smallest of T_i, T_j, C_i, C_j,
    which has probability λ_i / (λ_i + λ_j + 2μ); C = E[1{r_i > r_j} p_ij] / E[p_ij]."""
    def p(ri, rj):
        li, lj = np.exp(beta * ri), np.exp(beta * rj)
        return li / (li + lj + 2 * censoring_rate) * np.exp(-(ri**2 + rj**2) / 2) / (2 * np.pi)

    concordant = integrate.dblquad(lambda rj, ri: p(ri, rj), -9, 9, lambda ri: -9, lambda ri: ri,
                                   epsabs=1e-11)[0]
    total = integrate.dblquad(lambda rj, ri: p(ri, rj), -9, 9, -9, 9, epsabs=1e-11)[0]
    return concordant / total


def test_population_c_reference_without_censoring_has_its_closed_form():
    # μ = 0: C = E[σ(β|D|)], D = r_i − r_j ~ N(0, 2)
    beta = 0.8
    closed = integrate.quad(lambda d: special.expit(beta * abs(d)) * np.exp(-d**2 / 4) / np.sqrt(4 * np.pi),
                            -30, 30)[0]
    assert _population_c(beta, 0.0) == pytest.approx(closed, abs=1e-7)


def test_bootstrap_interval_of_the_c_index_covers_the_population_value_at_the_nominal_rate():
    beta, mu, n, samples, resamples = 0.8, 0.5, 120, 200, 200
    truth = _population_c(beta, mu)
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(samples):
        r = rng.standard_normal(n)
        t = rng.exponential(1 / np.exp(beta * r))
        c = rng.exponential(1 / mu, size=n)
        time, event = np.minimum(t, c), (t <= c).astype(int)
        values = resampled_concordance(time, event, r, bootstrap_weights(n, resamples, rng))
        lower, upper = percentile_interval(values[:, None], 0.90)
        covered += bool(lower[0] <= truth <= upper[0])
    coverage = covered / samples
    # nominal 0.90; the binomial sd over 200 samples is 0.021
    assert 0.84 <= coverage <= 0.96, coverage


def test_bootstrap_weight_blocks_are_the_rows_of_bootstrap_weights_in_bounded_blocks():
    whole = bootstrap_weights(40, 25, 3)
    assert whole.shape == (25, 40) and np.all(whole.sum(axis=1) == 40)
    blocks = list(bootstrap_weight_blocks(40, 25, 3, max_elements=400))  # 10 rows of 40 at most
    assert [block.shape[0] for block in blocks] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    assert [block.shape[0] for block in bootstrap_weight_blocks(40, 3, 3, max_elements=10)] == [1, 1, 1]
