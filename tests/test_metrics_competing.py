"""Competing-risks metrics (Wolbers' concordance, the competing-risks AUC, the IPCW Brier score) against pair
loops, their single-event reductions, Aalen–Johansen and scikit-survival."""

import numpy as np
import pytest
import torch
from sksurv.nonparametric import cumulative_incidence_competing_risks

from ehrseq.metrics import (
    CensoringDistribution,
    NoComparablePairsError,
    aalen_johansen,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_concordance,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
    cumulative_dynamic_auc,
    harrell_c,
    uno_c,
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


# ---------------------------------------------------------------------- fixed risk scores
def training_censoring(seed):
    train_time, train_event, _ = competing_data(400, seed)
    return CensoringDistribution.fit(train_time, train_event != 0)


def risk_concordance_loop(time, event, risk, cause, censoring=None, tau=None, tol=1e-8):
    """Wolbers' concordance of fixed scores, one pair at a time (weights of Wolbers et al. 2014)."""
    g = (lambda t: 1.0) if censoring is None else (lambda t: float(censoring.survival(np.array([t]))[0]))
    numerator = denominator = 0.0
    for i in range(time.size):
        if event[i] != cause or (tau is not None and time[i] >= tau):
            continue
        for j in range(time.size):
            competing = event[j] not in (0, cause)
            if competing and time[j] <= time[i]:
                weight = 1.0 / (g(time[i]) * g(time[j]))
            elif time[j] > time[i] or (time[j] == time[i] and event[j] == 0 and j != i):
                weight = 1.0 / g(time[i]) ** 2
            else:
                continue
            gap = risk[i] - risk[j]
            denominator += weight
            numerator += weight * (1.0 if gap > tol else 0.5 if abs(gap) <= tol else 0.0)
    return numerator / denominator


def auc_loop(time, event, risk, t, censoring, cause):
    """Blanche et al. (2013) definition 2, pair by pair: Σ ω_i ω_j (1{r_i > r_j} + ½ 1{r_i = r_j}) / Σ ω_i ω_j."""
    g = lambda u: float(censoring.survival(np.array([u]))[0])  # noqa: E731
    cases = [(i, 1.0 / g(time[i])) for i in range(time.size) if time[i] <= t and event[i] == cause]
    controls = [(j, 1.0 / g(t)) for j in range(time.size) if time[j] > t]
    controls += [(j, 1.0 / g(time[j])) for j in range(time.size) if time[j] <= t and event[j] not in (0, cause)]
    numerator = denominator = 0.0
    for i, wi in cases:
        for j, wj in controls:
            numerator += wi * wj * (1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0)
            denominator += wi * wj
    return numerator / denominator


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cause", [1, 2])
def test_fixed_score_concordance_with_competing_events_equals_the_pair_loop(seed, cause):
    time, event, rates = competing_data(90, seed)
    train_time, train_event, _ = competing_data(400, 10 + seed)
    censoring = CensoringDistribution.fit(train_time, train_event != 0)
    risk = np.round(cif_curves(rates, np.array([3.0]), cause)[:, 0], 2)  # tied scores
    harrell = cause_specific_harrell_c(time, event, risk, cause=cause)
    assert harrell.cindex == pytest.approx(risk_concordance_loop(time, event, risk, cause), abs=1e-12)
    assert harrell.concordant + harrell.discordant + harrell.tied_risk > 0
    for tau in (None, 4.0):
        uno = cause_specific_uno_c(time, event, risk, censoring, cause=cause, tau=tau)
        assert uno.cindex == pytest.approx(risk_concordance_loop(time, event, risk, cause, censoring, tau), abs=1e-12)


def test_fixed_score_concordance_without_competing_events_is_harrell_and_uno():
    time, event, rates = competing_data(200, 5)
    event = np.where(event == 2, 0, event)  # the second cause becomes censoring
    censoring = training_censoring(6)
    risk = rates[:, 0]
    assert tuple(cause_specific_harrell_c(time, event, risk, cause=1)) == tuple(harrell_c(time, event == 1, risk))
    ours = cause_specific_uno_c(time, event, risk, censoring, cause=1, tau=5.0)
    reference = uno_c(time, event == 1, risk, censoring, tau=5.0)
    assert ours.cindex == pytest.approx(reference.cindex, rel=1e-12)
    assert tuple(ours)[1:] == tuple(reference)[1:]


def test_competing_events_change_the_concordance_they_would_be_censored_in():
    # Two cases and one subject with an early competing event: as a censoring, the competing subject
    # is not comparable (it leaves first); as a competing event, it is known never to have the cause.
    time, event, risk = np.array([2.0, 3.0, 1.0]), np.array([1, 1, 2]), np.array([0.9, 0.2, 0.5])
    assert harrell_c(time, event == 1, risk).cindex == 1.0  # only (case 2.0, case 3.0)
    ours = cause_specific_harrell_c(time, event, risk, cause=1)
    assert (ours.concordant, ours.discordant) == (2, 1)  # + (2.0 vs competing) concordant, (3.0 vs competing) not
    assert ours.cindex == pytest.approx(2 / 3)
    with pytest.raises(NoComparablePairsError):
        cause_specific_harrell_c(time, event, risk, cause=3)


@pytest.mark.parametrize("cause", [1, 2])
def test_competing_risks_auc_equals_the_pair_loop_and_reduces_to_the_cumulative_dynamic_auc(cause):
    time, event, rates = competing_data(80, 8)
    censoring = training_censoring(9)
    times = np.array([1.5, 3.0, 5.0])
    cif = np.round(cif_curves(rates, times, cause), 2)
    result = cause_specific_auc(time, event, cif, times, censoring, cause=cause)
    expected = [auc_loop(time, event, cif[:, u], t, censoring, cause) for u, t in enumerate(times)]
    np.testing.assert_allclose(result.auc, expected, atol=1e-12)
    incidence = aalen_johansen(time, event, cause, times)
    assert result.mean_auc == pytest.approx(np.sum(result.auc * np.diff(incidence, prepend=0.0)) / incidence[-1])
    np.testing.assert_allclose(cause_specific_auc(time, event, ConstantHazards(rates), times, censoring,
                                                  cause=cause).auc,
                               cause_specific_auc(time, event, cif_curves(rates, times, cause), times, censoring,
                                                  cause=cause).auc, atol=1e-12)

    single = np.where(event == cause, 1, 0)  # no competing events: the usual cumulative/dynamic AUC
    reference = cumulative_dynamic_auc(time, single == 1, cif, times, censoring)
    np.testing.assert_allclose(cause_specific_auc(time, single, cif, times, censoring, cause=1).auc,
                               reference.auc, atol=1e-12)


def test_aalen_johansen_matches_scikit_survival_and_the_integrated_brier_score_its_trapezoid():
    time, event, rates = competing_data(150, 12)
    censoring = training_censoring(13)
    times = np.array([0.5, 1.0, 2.5, 4.0, 7.0])
    aj_times, incidence = cumulative_incidence_competing_risks(event, time)
    for cause in (1, 2):
        expected = incidence[cause][np.searchsorted(aj_times, times, side="right") - 1]
        np.testing.assert_allclose(aalen_johansen(time, event, cause, times), expected, atol=1e-12)
        cif = cif_curves(rates, times, cause)
        scores = cause_specific_brier_score(time, event, cif, times, censoring, cause=cause)
        assert cause_specific_integrated_brier_score(time, event, cif, times, censoring, cause=cause) == \
            pytest.approx(np.trapezoid(scores, times) / (times[-1] - times[0]), rel=1e-12)
