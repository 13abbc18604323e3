"""Cox partial likelihood (Breslow / Efron ties) and the Breslow baseline (A18).

References: loop definitions written here (with sample weights), and scikit-survival's Cox
optimizer and Breslow estimator (unweighted).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sksurv.linear_model.coxph import BreslowEstimator, CoxPHOptimizer

import ehrseq.losses.functional as LF

APPROX = dict(rel=1e-10, abs=1e-10)


def data(seed: int, n: int = 30, ties: bool = True):
    g = torch.Generator().manual_seed(seed)
    risk = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    time = (torch.randint(1, 8, (n,), generator=g) if ties else torch.randperm(n, generator=g) + 1).to(torch.float64)
    event = (torch.rand(n, generator=g) < 0.6).long()
    weight = 0.5 + 1.5 * torch.rand(n, generator=g, dtype=torch.float64)
    return risk, time, event, weight


def ref_cox(risk, time, event, weight=None, ties="breslow", reduction="mean"):
    n = len(risk)
    w = [1.0] * n if weight is None else [float(x) for x in weight]
    eta, t = [float(x) for x in risk], [float(x) for x in time]
    total = 0.0
    for u in sorted({t[i] for i in range(n) if event[i]}):
        deaths = [i for i in range(n) if event[i] and t[i] == u]
        risk_set = sum(w[j] * math.exp(eta[j]) for j in range(n) if t[j] >= u)
        if ties == "breslow":
            total -= sum(w[i] * (eta[i] - math.log(risk_set)) for i in deaths)
        else:
            d = len(deaths)
            tied = sum(w[i] * math.exp(eta[i]) for i in deaths)
            mean_weight = sum(w[i] for i in deaths) / d
            total -= sum(w[i] * eta[i] for i in deaths)
            total += mean_weight * sum(math.log(risk_set - r / d * tied) for r in range(d))
    if reduction == "sum":
        return total
    events_weight = sum(w[i] for i in range(n) if event[i])
    return total / events_weight if events_weight else 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_partial_likelihood_matches_loop(seed, ties):
    risk, time, event, weight = data(seed)
    for w in (None, weight):
        for reduction in ("mean", "sum"):
            got = LF.cox_partial_likelihood(risk, time, event, weight=w, ties=ties, reduction=reduction)
            assert got.item() == pytest.approx(ref_cox(risk, time, event, w, ties, reduction), **APPROX)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_partial_likelihood_matches_scikit_survival(seed, ties):
    risk, time, event, _ = data(seed, n=40)
    optimizer = CoxPHOptimizer(risk.numpy()[:, None], event.numpy().astype(bool), time.numpy(), np.zeros(1), ties)
    # scikit-survival averages over all samples; with a single feature equal to η and coefficient 1, X @ w = η
    want = optimizer.nlog_likelihood(np.ones(1)) * len(risk)
    got = LF.cox_partial_likelihood(risk, time, event, ties=ties, reduction="sum")
    assert got.item() == pytest.approx(want, **APPROX)


def test_ties_methods_agree_without_ties():
    risk, time, event, weight = data(1, ties=False)
    breslow = LF.cox_partial_likelihood(risk, time, event, weight=weight)
    efron = LF.cox_partial_likelihood(risk, time, event, weight=weight, ties="efron")
    assert efron.item() == pytest.approx(breslow.item(), **APPROX)


def test_none_reduction_gives_per_subject_terms_in_input_order():
    risk, time, event, weight = data(2, ties=False)
    terms = LF.cox_partial_likelihood(risk, time, event, weight=weight, reduction="none")
    for i in range(len(risk)):
        if not event[i]:
            assert terms[i].item() == 0.0
            continue
        at_risk = time >= time[i]
        want = weight[i] * (torch.logsumexp(risk[at_risk] + weight[at_risk].log(), 0) - risk[i])
        assert terms[i].item() == pytest.approx(want.item(), **APPROX)


def test_mask_and_zero_weights_remove_subjects():
    risk, time, event, weight = data(3)
    keep = torch.arange(len(risk)) % 3 != 0
    full = LF.cox_partial_likelihood(risk[keep], time[keep], event[keep], weight=weight[keep], ties="efron")
    masked_risk = torch.where(keep, risk, torch.full_like(risk, float("nan")))
    masked = LF.cox_partial_likelihood(masked_risk, time, event, weight=weight, mask=keep, ties="efron")
    zeroed = LF.cox_partial_likelihood(risk, time, event, weight=torch.where(keep, weight, 0.0), ties="efron")
    assert masked.item() == pytest.approx(full.item(), **APPROX)
    assert zeroed.item() == pytest.approx(full.item(), **APPROX)


def test_no_event_gives_zero_with_gradient():
    risk = torch.randn(5, dtype=torch.float64, requires_grad=True)
    loss = LF.cox_partial_likelihood(risk, torch.arange(5.0, dtype=torch.float64), torch.zeros(5, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(risk.grad == 0)


def test_gradient_vanishes_at_the_scikit_survival_fit():
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, generator=g, dtype=torch.float64)
    time = torch.randint(1, 15, (80,), generator=g).to(torch.float64) + (x[:, 0] > 0)
    event = (torch.rand(80, generator=g) < 0.7).long()
    y = np.array(list(zip(event.numpy().astype(bool), time.numpy())), dtype=[("e", bool), ("t", float)])
    for ties in ("breslow", "efron"):
        fit = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=200).fit(x.numpy(), y)
        beta = torch.tensor(fit.coef_, dtype=torch.float64, requires_grad=True)
        LF.cox_partial_likelihood(x @ beta, time, event, ties=ties).backward()
        assert torch.all(beta.grad.abs() < 1e-7), (ties, beta.grad)


# ----------------------------------------------------------------------------- Breslow baseline
def ref_baseline(risk, time, event, weight=None):
    n = len(risk)
    w = [1.0] * n if weight is None else [float(x) for x in weight]
    times, cumulative, total = [], [], 0.0
    for u in sorted({float(time[i]) for i in range(n) if event[i]}):
        d = sum(w[i] for i in range(n) if event[i] and float(time[i]) == u)
        total += d / sum(w[j] * math.exp(float(risk[j])) for j in range(n) if float(time[j]) >= u)
        times.append(u)
        cumulative.append(total)
    return times, cumulative


@pytest.mark.parametrize("seed", range(4))
def test_breslow_baseline_matches_loop_and_scikit_survival(seed):
    risk, time, event, weight = data(seed)
    times, cumulative = LF.breslow_baseline(risk, time, event, weight=weight)
    want_times, want_cumulative = ref_baseline(risk, time, event, weight)
    assert times.tolist() == want_times
    assert cumulative.tolist() == pytest.approx(want_cumulative, rel=1e-12)

    times, cumulative = LF.breslow_baseline(risk, time, event)
    estimator = BreslowEstimator().fit(risk.numpy(), event.numpy().astype(bool), time.numpy())
    assert cumulative.numpy() == pytest.approx(estimator.cum_baseline_hazard_(times.numpy()), rel=1e-12)

    grid = torch.tensor([0.5, 1.0, 2.5, 4.0, 7.0, 9.0], dtype=torch.float64)
    survival = LF.cox_survival(risk[:5], times, cumulative, grid)
    for i, function in enumerate(estimator.get_survival_function(risk[:5].numpy())):
        inside = grid.numpy() <= function.x[-1]
        clipped = np.clip(grid.numpy(), function.x[0], function.x[-1])
        want = np.where(grid.numpy() < function.x[0], 1.0, function(clipped))
        assert survival[i].numpy()[inside] == pytest.approx(want[inside], rel=1e-12)
