"""Cumulative/dynamic AUC, Brier score and IBS against scikit-survival, with a frozen training IPCW."""

import numpy as np
import pytest
from sksurv.metrics import brier_score as sk_brier
from sksurv.metrics import cumulative_dynamic_auc as sk_auc
from sksurv.metrics import integrated_brier_score as sk_ibs
from sksurv.util import Surv

from ehrseq.errors import ShapeError
from ehrseq.metrics import CensoringDistribution, brier_score, cumulative_dynamic_auc, integrated_brier_score

CASES = [(n, seed) for n in (5, 40, 600, 2000) for seed in range(3)]


def data(n, seed):
    """Test outcomes with tied times and scores, survival predictions, and training outcomes covering them."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 30, n).astype(float)
    event = rng.random(n) < 0.6
    event[0], time[0] = True, 2.0  # at least one early event
    time[1] = 29.0  # follow-up reaches the end
    train_time = rng.integers(1, 31, 2 * n + 20).astype(float)
    train_event = rng.random(train_time.size) < 0.5
    train_event[train_time == train_time.max()] = True  # G > 0 everywhere up to the last time
    times = np.array([3.0, 7.5, 12.0, 20.0])
    risk = np.round(rng.normal(size=n), 1)
    surv = np.round(np.sort(rng.random((n, times.size)), axis=1)[:, ::-1], 2)
    return time, event, risk, surv, times, train_time, train_event


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_auc_equals_scikit_survival_for_static_and_time_dependent_scores(n, seed):
    time, event, risk, surv, times, train_time, train_event = data(n, seed)
    censoring = CensoringDistribution.fit(train_time, train_event)
    y_train, y_test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time)
    usable = [t for t in times if ((time <= t) & event).any() and (time > t).any()]
    for scores in (risk, 1.0 - surv):
        columns = scores if scores.ndim == 1 else scores[:, np.isin(times, usable)]
        expected_auc, expected_mean = sk_auc(y_train, y_test, columns, usable)
        got = cumulative_dynamic_auc(time, event, columns, usable, censoring)
        np.testing.assert_allclose(got.auc, expected_auc, rtol=0, atol=1e-12)
        assert got.mean_auc == pytest.approx(expected_mean, abs=1e-12)


def test_auc_tolerance_ties_chain_like_scikit_survival():
    time, event, _, _, times, train_time, train_event = data(500, 9)
    rng = np.random.default_rng(1)
    risk = np.round(rng.normal(size=time.size), 1) + rng.choice([0.0, 4e-9, 8e-9, 1.2e-8], time.size)
    censoring = CensoringDistribution.fit(train_time, train_event)
    for tol in (0.0, 1e-8, 0.15):
        y_train, y_test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time)
        expected = sk_auc(y_train, y_test, risk, times, tied_tol=tol)
        got = cumulative_dynamic_auc(time, event, risk, times, censoring, tied_tol=tol)
        np.testing.assert_allclose(got.auc, expected[0], atol=1e-12)


def test_auc_is_the_weighted_pair_fraction():
    time, event, risk, _, times, train_time, train_event = data(60, 2)
    risk = np.random.default_rng(3).permutation(time.size).astype(float)  # no ties: AUC is a pair count
    censoring = CensoringDistribution.fit(train_time, train_event)
    got = cumulative_dynamic_auc(time, event, risk, times, censoring).auc
    weight = np.where(event, 1.0 / censoring.survival(np.minimum(time, censoring.max_time)), 0.0)
    for k, t in enumerate(times):
        cases, controls = (time <= t) & event, time > t
        num = sum(weight[i] * (risk[j] < risk[i]) for i in np.flatnonzero(cases) for j in np.flatnonzero(controls))
        assert got[k] == pytest.approx(num / (weight[cases].sum() * controls.sum()), abs=1e-12)


def test_auc_needs_a_case_and_a_control_at_every_time():
    time, event, risk, _, _, train_time, train_event = data(50, 0)
    censoring = CensoringDistribution.fit(train_time, train_event)
    with pytest.raises(ValueError, match="case"):
        cumulative_dynamic_auc(time, event, risk, [0.5, 5.0], censoring)
    with pytest.raises(ValueError, match="control"):
        cumulative_dynamic_auc(time, event, risk, [5.0, 40.0], censoring)
    with pytest.raises(ShapeError):
        cumulative_dynamic_auc(time, event, np.zeros((time.size, 3)), [5.0, 6.0], censoring)
    with pytest.raises(ValueError, match="strictly increasing"):
        cumulative_dynamic_auc(time, event, risk, [6.0, 5.0], censoring)


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_brier_and_integrated_brier_equal_scikit_survival(n, seed):
    time, event, _, surv, times, train_time, train_event = data(n, seed)
    censoring = CensoringDistribution.fit(train_time, train_event)
    y_train, y_test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time)
    np.testing.assert_allclose(
        brier_score(time, event, surv, times, censoring), sk_brier(y_train, y_test, surv, times)[1], rtol=0, atol=1e-12
    )
    assert integrated_brier_score(time, event, surv, times, censoring) == pytest.approx(
        sk_ibs(y_train, y_test, surv, times), abs=1e-12
    )


def test_brier_loop_definition_and_degenerate_cases():
    time, event, _, surv, times, train_time, train_event = data(30, 4)
    censoring = CensoringDistribution.fit(train_time, train_event)
    got = brier_score(time, event, surv, times, censoring)
    for k, t in enumerate(times):
        total = 0.0
        for i in range(time.size):
            if time[i] <= t and event[i]:
                total += surv[i, k] ** 2 / censoring.survival(time[i])
            elif time[i] > t:
                total += (1 - surv[i, k]) ** 2 / censoring.survival(t)
        assert got[k] == pytest.approx(total / time.size, abs=1e-12)
    # all censored: only the still-followed subjects contribute; a single subject works too
    all_censored = brier_score(time, np.zeros(time.size, bool), surv, times, censoring)
    followed = time[:, None] > times
    np.testing.assert_allclose(all_censored, np.mean(followed * (1 - surv) ** 2, axis=0) / censoring.survival(times))
    single = brier_score([5.0], [1], [[0.25]], [6.0], censoring)
    assert single[0] == pytest.approx(0.25**2 / censoring.survival(5.0))


def test_brier_refuses_unknown_censoring_and_bad_predictions():
    time, event, _, surv, times, train_time, train_event = data(40, 5)
    censoring = CensoringDistribution.fit(train_time, train_event)
    with pytest.raises(ValueError, match="last training time"):
        brier_score(time, event, surv, [3.0, 7.5, 12.0, 40.0], censoring)
    with pytest.raises(ValueError, match="probabilities"):
        brier_score(time, event, surv * 3, times, censoring)
    with pytest.raises(ShapeError):
        brier_score(time, event, surv[:, :2], times, censoring)
    with pytest.raises(TypeError, match="CensoringDistribution"):
        brier_score(time, event, surv, times, (train_time, train_event))
    with pytest.raises(ValueError, match="two"):
        integrated_brier_score(time, event, surv[:, :1], times[:1], censoring)
    # sksurv silently drops terms where G = 0; here it is an error
    ended = CensoringDistribution.fit(np.r_[train_time, 35.0], np.r_[train_event, False])
    with pytest.raises(ValueError, match="G is 0"):
        brier_score(time, event, surv[:, :1], [35.0], ended)
