"""Kaplan–Meier and the frozen censoring distribution against scikit-survival's estimators."""

import json

import numpy as np
import pytest
from sksurv.nonparametric import CensoringDistributionEstimator, kaplan_meier_estimator
from sksurv.util import Surv

from ehrseq.metrics import CensoringDistribution, KaplanMeier


def outcomes(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 25, n).astype(float), rng.random(n) < 0.55


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (7, 1), (300, 2), (2000, 3)])
def test_kaplan_meier_equals_scikit_survival_everywhere(n, seed):
    time, event = outcomes(n, seed)
    km = KaplanMeier.fit(time, event)
    ref_times, ref_values = kaplan_meier_estimator(event, time)
    np.testing.assert_array_equal(km.times, ref_times)
    np.testing.assert_allclose(km.survival_values, ref_values, rtol=0, atol=1e-14)
    # right-continuous steps: at, between and before the distinct times
    probe = np.r_[0.0, ref_times, ref_times + 0.5]
    expected = np.r_[1.0, ref_values][np.searchsorted(ref_times, probe, side="right")]
    np.testing.assert_allclose(km.survival(probe), expected, atol=1e-14)


@pytest.mark.parametrize(("n", "seed"), [(2, 0), (9, 1), (500, 2), (2000, 4)])
def test_censoring_distribution_equals_scikit_survival(n, seed):
    time, event = outcomes(n, seed)
    event[time == time.max()] = True  # G stays positive: sksurv can be queried up to the last time
    ours = CensoringDistribution.fit(time, event)
    ref = CensoringDistributionEstimator().fit(Surv.from_arrays(event, time))
    probe = np.r_[0.0, np.unique(time), np.unique(time) + 0.25][: -1]
    np.testing.assert_allclose(ours.survival(probe), ref.predict_proba(probe), atol=1e-14)
    test_time, test_event = outcomes(200, seed + 10)
    test_time = np.minimum(test_time, time.max())
    y_test = Surv.from_arrays(test_event, test_time)
    if (ref.predict_proba(test_time[test_event]) > 0).all():
        np.testing.assert_allclose(ours.inverse_weights(test_time, test_event), ref.predict_ipcw(y_test), atol=1e-12)


def test_reverse_km_counts_events_before_censorings_at_tied_times():
    # at t=1: 4 at risk, 1 event, 1 censored -> G(1) = 1 - 1/(4 - 1); at t=2: 2 at risk, 1 censored -> G = 2/3 * 1/2
    g = CensoringDistribution.fit([1.0, 1.0, 2.0, 3.0], [True, False, False, True])
    np.testing.assert_allclose(g.survival([0.5, 1.0, 2.0, 3.0]), [1.0, 2 / 3, 1 / 3, 1 / 3])


def test_censoring_distribution_refuses_times_beyond_its_support():
    g = CensoringDistribution.fit([1.0, 2.0, 3.0, 4.0], [False, True, False, True])
    assert g.max_time == 4.0
    with pytest.raises(ValueError, match="last training time 4"):
        g.survival([4.5])
    with pytest.raises(ValueError, match="last training time"):
        g.inverse_weights([5.0], [True])
    assert g.inverse_weights([5.0, 2.0], [False, True]).tolist() == [0.0, 1.0 / g.survival(2.0)]
    ended = CensoringDistribution.fit([1.0, 2.0], [True, False])  # the last subject is censored: G(2) = 0
    np.testing.assert_array_equal(ended.survival([2.0, 7.0]), [0.0, 0.0])
    with pytest.raises(ValueError, match="G is 0"):
        ended.inverse_weights([2.5], [True])


def test_all_events_in_training_means_no_censoring():
    g = CensoringDistribution.fit([1.0, 2.0, 3.0], [1, 1, 1])
    np.testing.assert_array_equal(g.survival([0.0, 1.5, 3.0]), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        g.survival([3.5])


def test_fitted_estimators_are_frozen_and_round_trip_through_json():
    time, event = outcomes(100, 5)
    g = CensoringDistribution.fit(time, event)
    with pytest.raises(ValueError):
        g.survival_values[0] = 0.5
    with pytest.raises(AttributeError):
        g.n_samples = 3
    again = CensoringDistribution.from_dict(json.loads(json.dumps(g.to_dict())))
    probe = np.linspace(0, g.max_time, 50)
    np.testing.assert_array_equal(again.survival(probe), g.survival(probe))
    with pytest.raises(ValueError):
        CensoringDistribution.from_dict({"times": [2.0, 1.0], "survival_values": [1.0, 0.5], "n_samples": 2})
    km = KaplanMeier.fit(time, event)
    with pytest.raises(ValueError):
        km.survival_values[0] = 0.5


def test_fit_validates_outcomes():
    with pytest.raises(ValueError, match="training time"):
        CensoringDistribution.fit([-1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="zero"):
        CensoringDistribution.fit([], [])
    with pytest.raises(ValueError, match="0/1"):
        KaplanMeier.fit([1.0, 2.0], [0, 3])
