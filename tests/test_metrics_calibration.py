"""D-calibration, 1-calibration and the calibration slope against loop definitions and simulations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2, chisquare, norm
from sksurv.nonparametric import kaplan_meier_estimator

from ehrseq.metrics import calibration_slope, d_calibration, one_calibration, survival_at


def lognormal_cohort(n, seed, shift=0.0, censor_scale=6.0):
    """Log-normal event times, independent exponential censoring; S_i(Y_i) under a model whose location is
    off by ``shift`` (0 = the data-generating model)."""
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(1.0, 0.5, n), rng.uniform(0.3, 1.2, n)
    event_time = np.exp(mu + sigma * rng.normal(size=n))
    censor_time = rng.exponential(censor_scale, n)
    time = np.minimum(event_time, censor_time)
    event = event_time <= censor_time
    surv_at_time = norm.sf((np.log(time) - mu - shift) / sigma)
    return time, event, surv_at_time, mu + shift, sigma


def d_calibration_loop(s, event, bins):
    """SurvivalEVAL's per-subject definition: bins [k/B, (k+1)/B), censored mass split below S(c)."""
    hist = np.zeros(bins)
    for value, observed in zip(s, event):
        k = min(int(np.searchsorted(np.linspace(0, 1, bins + 1), value, side="right")) - 1, bins - 1)
        if observed:
            hist[k] += 1
        elif value == 0:
            hist[0] += 1
        else:
            hist[k] += (value - k / bins) / value
            for lower in range(k):
                hist[lower] += 1 / (bins * value)
    return hist


@pytest.mark.parametrize("bins", [2, 5, 10, 20])
@pytest.mark.parametrize("seed", range(2))
def test_d_calibration_bins_and_statistic_equal_the_loop_definition(bins, seed):
    time, event, s, _, _ = lognormal_cohort(300, seed)
    s[:4] = [0.0, 1.0, 0.5, 0.1]  # edges and the extremes, events and censored
    event[:4] = [False, False, False, True]
    result = d_calibration(time, event, s, bins=bins)
    expected = d_calibration_loop(s, event, bins)
    np.testing.assert_allclose(result.bin_counts, expected, atol=1e-10)
    assert result.bin_counts.sum() == pytest.approx(time.size)
    statistic, p_value = chisquare(expected)
    assert result.statistic == pytest.approx(statistic, rel=1e-10)
    assert result.p_value == pytest.approx(p_value, rel=1e-8, abs=1e-300)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.3, 0.55, 0.9, 1.0]) | st.floats(0, 1), st.booleans()), min_size=1),
    st.integers(2, 12),
)
def test_d_calibration_histogram_conserves_mass_and_matches_the_loop(rows, bins):
    s = np.array([r[0] for r in rows])
    event = np.array([r[1] for r in rows])
    result = d_calibration(np.ones(s.size), event, s, bins=bins)
    np.testing.assert_allclose(result.bin_counts, d_calibration_loop(s, event, bins), atol=1e-9)
    assert result.bin_counts.sum() == pytest.approx(s.size)
    assert np.all(result.bin_counts >= 0) and 0 <= result.p_value <= 1


def test_d_calibration_of_the_true_model_is_not_rejected_and_a_shifted_model_is():
    accepted = rejected = 0
    for seed in range(50):
        time, event, s, _, _ = lognormal_cohort(500, seed)
        accepted += d_calibration(time, event, s).p_value > 0.05
        time, event, s, _, _ = lognormal_cohort(500, seed, shift=0.6)
        rejected += d_calibration(time, event, s).p_value <= 0.05
    assert accepted >= 45
    assert rejected >= 45


def test_d_calibration_reads_curves_like_survival_at():
    time, event, _, mu, sigma = lognormal_cohort(200, 3)
    grid = np.linspace(0.1, 40.0, 300)
    curves = norm.sf((np.log(grid)[None, :] - mu[:, None]) / sigma[:, None])
    direct = d_calibration(time, event, survival_at(curves, grid, time, interpolation="step"))
    via_curves = d_calibration(time, event, curves, grid, interpolation="step")
    np.testing.assert_array_equal(direct.bin_counts, via_curves.bin_counts)
    with pytest.raises(ValueError, match="bins"):
        d_calibration(time, event, curves, grid, bins=1)
    with pytest.raises(ValueError, match="probabilities"):
        d_calibration(time, event, np.full(time.size, 1.5))


def one_calibration_loop(time, event, risk, horizon, groups):
    """Deciles of predicted risk (numpy.array_split of the descending order), KM within each group."""
    order = np.argsort(-risk, kind="stable")
    statistic, observed, expected = 0.0, [], []
    for members in np.array_split(order, groups):
        km_times, km_values = kaplan_meier_estimator(event[members], time[members])
        passed = km_times <= horizon
        observed_risk = 1.0 - (km_values[passed][-1] if passed.any() else 1.0)
        mean_risk = risk[members].mean()
        statistic += members.size * (observed_risk - mean_risk) ** 2 / (mean_risk * (1 - mean_risk))
        observed.append(observed_risk)
        expected.append(mean_risk)
    return statistic, np.array(observed), np.array(expected)


@pytest.mark.parametrize(("n", "groups"), [(10, 2), (97, 10), (1000, 10), (1000, 7)])
def test_one_calibration_equals_the_loop_definition(n, groups):
    time, event, _, mu, sigma = lognormal_cohort(n, n)
    horizon = 3.0
    s_at_horizon = np.round(norm.sf((np.log(horizon) - mu) / sigma), 2)  # ties in predictions
    result = one_calibration(time, event, s_at_horizon, horizon, groups=groups)
    statistic, observed, expected = one_calibration_loop(time, event, 1 - s_at_horizon, horizon, groups)
    assert result.statistic == pytest.approx(statistic, rel=1e-10)
    assert result.p_value == pytest.approx(chi2.sf(statistic, groups - 1), rel=1e-8)
    np.testing.assert_allclose(result.observed, observed, atol=1e-12)
    np.testing.assert_allclose(result.expected, expected, atol=1e-12)
    assert result.group_sizes.sum() == n


def test_one_calibration_separates_a_calibrated_from_a_miscalibrated_model():
    time, event, _, mu, sigma = lognormal_cohort(3000, 11, censor_scale=60.0)
    horizon = 3.0
    good = one_calibration(time, event, norm.sf((np.log(horizon) - mu) / sigma), horizon)
    bad = one_calibration(time, event, norm.sf((np.log(horizon) - mu - 0.7) / sigma), horizon)
    assert good.p_value > 0.01
    assert bad.p_value < 1e-6


def test_one_calibration_validates():
    time, event, s, _, _ = lognormal_cohort(20, 0)
    with pytest.raises(ValueError, match="at least 30"):
        one_calibration(time, event, s, 2.0, groups=30)
    with pytest.raises(ValueError, match="horizon"):
        one_calibration(time, event, s, -1.0)
    with pytest.raises(ValueError, match="mean predicted risk"):
        one_calibration(time, event, np.ones(20), 2.0, groups=2)


def calibration_slope_loop(time, event, s, levels):
    observed = []
    for q in levels:
        hits = used = 0
        for i in range(time.size):
            cdf = 1.0 - s[i]
            if event[i]:
                used += 1
                hits += cdf <= q
            elif cdf >= q:  # censored after its own q-quantile time: known event-free there
                used += 1
        observed.append(hits / used)
    slope, intercept = np.polyfit(levels, observed, 1)
    return slope, intercept, np.array(observed)


@pytest.mark.parametrize("levels", [None, [0.25, 0.5, 0.75], np.linspace(0.05, 0.95, 19)])
def test_calibration_slope_equals_the_loop_definition(levels):
    time, event, s, _, _ = lognormal_cohort(400, 8)
    result = calibration_slope(time, event, s, levels=levels)
    q = np.arange(1, 10) / 10 if levels is None else np.asarray(levels)
    slope, intercept, observed = calibration_slope_loop(time, event, s, q)
    np.testing.assert_allclose(result.observed, observed, atol=1e-12)
    assert result.slope == pytest.approx(slope, rel=1e-9)
    assert result.intercept == pytest.approx(intercept, abs=1e-9)


def test_calibration_slope_is_one_without_censoring_and_flags_overconfidence():
    time, _, s, mu, sigma = lognormal_cohort(20000, 1, censor_scale=1e12)
    event = np.ones(time.size, bool)
    assert calibration_slope(time, event, s).slope == pytest.approx(1.0, abs=0.03)
    overconfident = norm.sf((np.log(time) - mu) / (0.5 * sigma))
    assert calibration_slope(time, event, overconfident).slope < 0.8
    with pytest.raises(ValueError, match="levels"):
        calibration_slope(time, event, s, levels=[0.5])
