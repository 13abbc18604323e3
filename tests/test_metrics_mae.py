"""MAE with hinge, margin and pseudo-observation handling of censoring, against loop definitions built on
scikit-survival's Kaplan–Meier estimator and numerical integration."""

import numpy as np
import pytest
from scipy.integrate import quad
from sksurv.nonparametric import kaplan_meier_estimator

from ehrseq.metrics import KaplanMeier, mae


def extended_km(train_time, train_event):
    """Training KM as a function, continued after the last time t_L on the line through (0, 1) and
    (t_L, S(t_L)) down to 0; returns the function and its knots."""
    knots, values = kaplan_meier_estimator(train_event, train_time)
    t_last, s_last = knots[-1], values[-1]
    zero = t_last / (1 - s_last)

    def s(u):
        if u < knots[0]:
            return 1.0
        if u < t_last:
            return float(values[np.searchsorted(knots, u, side="right") - 1])
        return float(s_last * max(zero - u, 0.0) / (zero - t_last)) if zero > t_last else 0.0

    return s, np.r_[knots, zero]


def area(s, knots, lo):
    edges = [lo] + [k for k in knots if k > lo]
    return sum(quad(s, a, b, limit=200)[0] for a, b in zip(edges[:-1], edges[1:]))


def train_data(seed, last_censored=True):
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(5.0, 80), 1) + 0.1
    event = rng.random(80) < 0.6
    event[time == time.max()] = not last_censored
    return time, event


def test_hinge_is_absolute_error_for_events_and_lateness_only_for_censored():
    time = np.array([2.0, 5.0, 5.0, 8.0])
    event = np.array([1, 0, 0, 1])
    predicted = np.array([3.0, 4.0, 6.0, 8.5])
    # errors: |2-3| = 1; censored at 5, predicted 4 -> 1; censored at 5, predicted 6 -> 0; |8-8.5| = .5
    assert mae(time, event, predicted) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    km = KaplanMeier.fit(*train_data(0))
    weights = np.r_[1.0, 1 - km.survival(5.0), 1 - km.survival(5.0), 1.0]
    expected = np.sum(weights * [1, 1, 0, 0.5]) / weights.sum()
    assert mae(time, event, predicted, km=km, weighted=True) == pytest.approx(expected)


@pytest.mark.parametrize("last_censored", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_margin_equals_the_best_guess_definition(last_censored, weighted):
    train_time, train_event = train_data(1, last_censored)
    s, knots = extended_km(train_time, train_event)
    rng = np.random.default_rng(2)
    time = np.r_[np.round(rng.uniform(0.05, 1.2 * train_time.max(), 30), 1), 0.05, train_time.max(), 1e3]
    event = np.r_[rng.random(30) < 0.4, False, False, False]
    predicted = rng.uniform(0.5, 10.0, time.size)
    errors, weights = [], []
    for y, observed, guess in zip(time, event, predicted):
        if observed:
            errors.append(abs(y - guess))
            weights.append(1.0)
        else:
            best = y + area(s, knots, y) / s(y) if s(y) > 0 else y
            errors.append(abs(best - guess))
            weights.append(1.0 - s(y) if weighted else 1.0)
    expected = np.dot(weights, errors) / np.sum(weights)
    km = KaplanMeier.fit(train_time, train_event)
    assert mae(time, event, predicted, method="margin", km=km, weighted=weighted) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("last_censored", [True, False])
def test_pseudo_observations_equal_the_jackknife_definition(last_censored):
    train_time, train_event = train_data(3, last_censored)
    s, knots = extended_km(train_time, train_event)
    total = area(s, knots, 0.0)
    n = train_time.size
    rng = np.random.default_rng(4)
    # censoring times below, at, between and beyond the training times
    time = np.r_[0.01, train_time[:3], np.round(rng.uniform(0.1, 25.0, 8), 2), train_time.max() + 3.0]
    event = np.zeros(time.size, dtype=bool)
    predicted = rng.uniform(1.0, 9.0, time.size)
    errors = []
    for y, guess in zip(time, predicted):
        s_plus, knots_plus = extended_km(np.r_[train_time, y], np.r_[train_event, False])
        pseudo = (n + 1) * area(s_plus, knots_plus, 0.0) - n * total
        errors.append(abs(pseudo - guess))
    km = KaplanMeier.fit(train_time, train_event)
    assert mae(time, event, predicted, method="pseudo_obs", km=km) == pytest.approx(np.mean(errors), rel=1e-9)


def test_pseudo_observation_beyond_an_uncensored_training_set_adds_a_tail():
    train_time = np.arange(1.0, 11.0)
    km = KaplanMeier.fit(train_time, np.ones(10, bool))
    # the training KM reaches 0; with a subject censored beyond every training time it stops above 0
    predicted = np.array([0.0])
    got = mae([20.0], [0], predicted, method="pseudo_obs", km=km)
    s_plus, knots_plus = extended_km(np.r_[train_time, 20.0], np.r_[np.ones(10, bool), False])
    expected = 11 * area(s_plus, knots_plus, 0.0) - 10 * train_time.mean()
    assert got == pytest.approx(expected)


def test_mae_validation():
    km = KaplanMeier.fit([1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="needs km"):
        mae([1.0], [0], [1.0], method="margin")
    with pytest.raises(TypeError, match="KaplanMeier"):
        mae([1.0], [0], [1.0], method="margin", km=([1.0, 2.0], [1, 0]))
    with pytest.raises(ValueError, match="method"):
        mae([1.0], [0], [1.0], method="ipcw")
    with pytest.raises(ValueError, match=">= 0"):
        mae([1.0], [0], [-1.0], km=km)
    with pytest.raises(ValueError, match="no event"):
        mae([1.0], [0], [1.0], method="margin", km=KaplanMeier.fit([1.0, 2.0], [0, 0]))
