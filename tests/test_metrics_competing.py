"""Cause-specific concordance (Wolbers) and IPCW Brier score against loop definitions and Aalen–Johansen."""

import numpy as np
import pytest
import torch
from sksurv.nonparametric import cumulative_incidence_competing_risks

from ehrseq.metrics import (
    CensoringDistribution,
    NoComparablePairsError,
    cause_specific_brier_score,
    cause_specific_concordance,
)
from ehrseq.models.distributions.base import CompetingRisksDistribution


class ConstantHazards(CompetingRisksDistribution):
    """Two causes with constant hazards λ_k: F_k(u) = λ_k / Λ (1 − e^{−Λu}), Λ = λ_1 + λ_2."""

    def __init__(self, rates):
        self.rates = torch.as_tensor(rates, dtype=torch.float64)  # [n, 2]

    @property
    def batch_shape(self):
        return self.rates.shape[:1]

    @property
    def num_causes(self):
        return 2

    def log_cif(self, u):
        u = torch.as_tensor(u, dtype=torch.float64)
        u = u[:, None, :] if u.dim() == 2 else u.reshape(1, 1, -1)  # shared [U] or per subject [n, U]
        total = self.rates.sum(-1, keepdim=True)  # [n, 1]
        share = self.rates / total  # [n, 2]
        return torch.log(share)[..., None] + torch.log(-torch.expm1(-total[..., None] * u))

    def overall(self):
        raise NotImplementedError


def competing_data(n, seed):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 0.4, (n, 2))
    t1, t2 = rng.exponential(1 / rates[:, 0]), rng.exponential(1 / rates[:, 1])
    c = rng.exponential(8.0, n)
    time = np.round(np.minimum(np.minimum(t1, t2), c), 1) + 0.1  # ties
    event = np.where(c < np.minimum(t1, t2), 0, np.where(t1 <= t2, 1, 2))
    return time, event, rates


def cif_curves(rates, grid, cause):
    total = rates.sum(1, keepdims=True)
    return rates[:, [cause - 1]] / total * (1 - np.exp(-total * grid))


@pytest.mark.parametrize("cause", [1, 2])
@pytest.mark.parametrize("ties", ["zero", "half"])
@pytest.mark.parametrize("interpolation", ["linear", "step"])
def test_wolbers_concordance_equals_the_pair_loop(cause, ties, interpolation):
    time, event, rates = competing_data(70, cause)
    grid = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    cif = np.round(cif_curves(rates, grid, cause), 2)  # tied predictions

    def f(i, t):
        knots, values = np.r_[0.0, grid], np.r_[0.0, cif[i]]
        if interpolation == "linear":
            return np.interp(t, knots, values)
        return values[np.searchsorted(knots, t, side="right") - 1]

    num = den = 0.0
    for i in np.flatnonzero(event == cause):
        for j in range(time.size):
            competing_before = event[j] not in (0, cause) and time[j] <= time[i]
            if time[j] > time[i] or competing_before:
                den += 1
                gap = f(i, time[i]) - f(j, time[i])
                num += 1.0 if gap > 1e-8 else (0.5 if ties == "half" and abs(gap) <= 1e-8 else 0.0)
    got = cause_specific_concordance(time, event, cif, grid, cause=cause, ties=ties, interpolation=interpolation)
    assert got.cindex == pytest.approx(num / den, abs=1e-12)


def test_wolbers_concordance_from_a_distribution_and_degenerate_cases():
    time, event, rates = competing_data(150, 9)
    dist = ConstantHazards(rates)
    grid = np.linspace(0.05, 40.0, 4000)
    from_curves = cause_specific_concordance(time, event, cif_curves(rates, grid, 1), grid, cause=1)
    assert cause_specific_concordance(time, event, dist, cause=1).cindex == pytest.approx(from_curves.cindex, abs=0.01)
    with pytest.raises(NoComparablePairsError):
        cause_specific_concordance(time, np.where(event == 1, 2, event), dist, cause=1)
    with pytest.raises(ValueError, match="cause"):
        cause_specific_concordance(time, event, dist, cause=3)
    with pytest.raises(ValueError, match="non-decreasing"):
        cause_specific_concordance(time, event, cif_curves(rates, grid, 1)[:, ::-1], grid, cause=1)


def brier_loop(time, event, cif, times, censoring, cause):
    out = []
    for k, t in enumerate(times):
        total = 0.0
        for i in range(time.size):
            if time[i] <= t and event[i] != 0:
                total += ((event[i] == cause) - cif[i, k]) ** 2 / censoring.survival(time[i])
            elif time[i] > t:
                total += cif[i, k] ** 2 / censoring.survival(t)
        out.append(total / time.size)
    return np.array(out)


@pytest.mark.parametrize("cause", [1, 2])
def test_cause_specific_brier_equals_the_loop_definition_and_the_distribution_path(cause):
    time, event, rates = competing_data(120, 3)
    train_time, train_event, _ = competing_data(400, 4)
    censoring = CensoringDistribution.fit(train_time, train_event != 0)
    times = np.array([1.0, 3.0, 6.0])
    cif = cif_curves(rates, times, cause)
    got = cause_specific_brier_score(time, event, cif, times, censoring, cause=cause)
    np.testing.assert_allclose(got, brier_loop(time, event, cif, times, censoring, cause), atol=1e-12)
    from_dist = cause_specific_brier_score(time, event, ConstantHazards(rates), times, censoring, cause=cause)
    np.testing.assert_allclose(from_dist, got, atol=1e-12)


def test_ipcw_weights_reproduce_the_aalen_johansen_incidence():
    # Without tied times, (1/n) Σ_i 1{Y_i ≤ t, Δ_i = k} / G(Y_i) with G fitted on the same data is the
    # Aalen–Johansen estimate of F_k(t); a prediction of 0 turns the Brier score into exactly that sum.
    rng = np.random.default_rng(6)
    n = 500
    time = rng.permutation(np.arange(1, n + 1)) / 10.0
    event = rng.choice([0, 1, 2], n, p=[0.3, 0.4, 0.3])
    censoring = CensoringDistribution.fit(time, event != 0)
    times = np.array([5.0, 12.5, 30.0, 45.0])
    aj_times, incidence = cumulative_incidence_competing_risks(event, time)
    for cause in (1, 2):
        got = cause_specific_brier_score(time, event, np.zeros((n, times.size)), times, censoring, cause=cause)
        expected = incidence[cause][np.searchsorted(aj_times, times, side="right") - 1]
        np.testing.assert_allclose(got, expected, rtol=1e-10)
