"""Multi-task weights (A7), smooth hazard (A10), logit-normal likelihood (A11), next-visit losses (A12)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats
from test_losses_common import random_batch
from test_losses_discrete import aggregate, log_1mh, log_h, ref_discrete, sigmoid

import ehrseq.losses.functional as LF
from ehrseq.errors import ConfigError, ShapeError
from ehrseq.losses import MultiTaskLoss

APPROX = dict(rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------------- A7
def test_uncertainty_weighted_sum_is_kendalls_formula():
    losses = torch.tensor([0.5, 2.0], dtype=torch.float64)
    s = torch.tensor([0.3, -1.0], dtype=torch.float64)
    want = math.exp(-0.3) * 0.5 + 0.3 + math.exp(1.0) * 2.0 - 1.0
    assert LF.uncertainty_weighted_sum(losses, s).item() == pytest.approx(want, abs=1e-12)
    assert LF.uncertainty_weighted_sum(losses, s, reduction="mean").item() == pytest.approx(want / 2, abs=1e-12)


def test_learned_log_variances_are_stationary_at_the_log_of_the_task_losses():
    module = MultiTaskLoss(["a", "b"]).double()
    losses = {"a": torch.tensor(4.0, dtype=torch.float64), "b": torch.tensor(0.25, dtype=torch.float64)}
    module({"a": losses["a"], "b": losses["b"]}).backward()
    torch.testing.assert_close(module.log_variances.grad, torch.tensor([-3.0, 0.75], dtype=torch.float64))  # 1 − L_k
    with torch.no_grad():
        module.log_variances.copy_(torch.log(torch.stack([losses["a"], losses["b"]])))
    module.log_variances.grad = None
    module(losses).backward()
    torch.testing.assert_close(module.log_variances.grad, torch.zeros(2, dtype=torch.float64))


def test_multitask_module_skips_missing_tasks_and_rejects_unknown_ones():
    module = MultiTaskLoss(["a", "b"], learnable=False)
    assert module({"b": torch.tensor(3.0)}).item() == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="unknown task"):
        module({"c": torch.tensor(1.0)})
    with pytest.raises(ShapeError, match="scalar"):
        module({"a": torch.ones(3)})
    assert list(module.parameters()) == []


# ----------------------------------------------------------------------------- A10
def ref_smooth(logits, mask, weight=None, reduction="mean", visit_weighting="patient"):
    terms = {}
    for b in range(logits.shape[0]):
        terms[b] = []
        for t in range(logits.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                if logits.dim() == 2:
                    d = (sigmoid(float(logits[b, t + 1])) - sigmoid(float(logits[b, t]))) ** 2
                else:
                    L = logits.shape[2]
                    d = sum((sigmoid(float(logits[b, t + 1, l])) - sigmoid(float(logits[b, t, l]))) ** 2
                            for l in range(L)) / L
                terms[b].append(d)
    terms = {b: ts for b, ts in terms.items() if ts}
    return aggregate(terms, weight, reduction, visit_weighting, "mean")


@pytest.mark.parametrize("seed", range(5))
def test_smooth_hazard_matches_loop(seed):
    b = random_batch(seed)
    for logits in (b.logits(), b.logits(b.num_bins)):
        for visit_weighting in ("patient", "visit"):
            for w in (None, b.weight):
                for reduction in ("mean", "sum"):
                    got = LF.smooth_hazard_penalty(logits, b.mask, weight=w, reduction=reduction,
                                                   visit_weighting=visit_weighting)
                    want = ref_smooth(logits, b.mask, w, reduction, visit_weighting)
                    assert got.item() == pytest.approx(want, **APPROX)


# ----------------------------------------------------------------------------- A11
def logistic_normal_mean(mu: float, sigma: float) -> float:
    integrand = lambda e: sigmoid(mu + sigma * e) * stats.norm.pdf(e)  # noqa: E731
    return integrate.quad(integrand, -40, 40, epsabs=1e-14, epsrel=1e-13, limit=400)[0]


def test_logit_normal_probabilities_match_adaptive_quadrature():
    mu = torch.tensor([-8.0, -0.5, 1.5, 9.0], dtype=torch.float64)
    for sigma, tol in ((0.3, 1e-11), (1.0, 1e-11), (2.0, 5e-7)):
        log_p, log_q = LF.logit_normal_log_probabilities(mu, torch.full_like(mu, math.log(sigma)))
        for i, m in enumerate(mu.tolist()):
            p = logistic_normal_mean(m, sigma)
            assert log_p[i].item() == pytest.approx(math.log(p), abs=tol)
            assert log_q[i].item() == pytest.approx(math.log1p(-p), abs=tol)


def ref_logit_normal(mean, log_scale, event, event_visit, mask, weight=None, reduction="mean"):
    terms = {}
    for b in range(mean.shape[0]):
        if not mask[b].any():
            continue
        T = int(event_visit[b])
        terms[b] = []
        for t in range(T + 1):
            p = logistic_normal_mean(float(mean[b, t]), math.exp(float(log_scale[b, t])))
            if t < T:
                terms[b].append(-math.log1p(-p))
            else:  # a censored patient counts, with nothing at its censoring visit
                terms[b].append(-math.log(p) if event[b] > 0 else 0.0)
    return aggregate(terms, weight, reduction, "patient", "sum")


@pytest.mark.parametrize("seed", range(2))
def test_logit_normal_nll_matches_quadrature_loop(seed):
    b = random_batch(seed, batch_size=4, visits=4)
    mean = b.logits(scale=2.0)
    log_scale = torch.log(0.2 + torch.rand(b.shape, generator=b.generator, dtype=torch.float64))
    got = LF.logit_normal_hazard_nll(mean, log_scale, b.event, b.event_visit, b.mask, weight=b.weight)
    want = ref_logit_normal(mean, log_scale, b.event, b.event_visit, b.mask, weight=b.weight)
    assert got.item() == pytest.approx(want, rel=1e-9, abs=1e-10)


def test_logit_normal_without_uncertainty_is_the_discrete_time_nll():
    b = random_batch(4)
    mean = b.logits()
    tiny = torch.full(b.shape, -30.0, dtype=torch.float64)
    got = LF.logit_normal_hazard_nll(mean, tiny, b.event, b.event_visit, b.mask, censored_survives_last=True)
    want = ref_discrete(mean, b.event, b.event_visit, b.mask, csl=True)
    assert got.item() == pytest.approx(want, **APPROX)


def test_logit_normal_uncertainty_pulls_probabilities_towards_one_half():
    mean = torch.tensor([3.0], dtype=torch.float64)
    narrow, _ = LF.logit_normal_log_probabilities(mean, torch.tensor([math.log(0.1)], dtype=torch.float64))
    wide, _ = LF.logit_normal_log_probabilities(mean, torch.tensor([math.log(3.0)], dtype=torch.float64))
    assert 0.5 < math.exp(wide.item()) < math.exp(narrow.item()) < sigmoid(3.0) + 1e-12
    assert math.exp(narrow.item()) == pytest.approx(sigmoid(3.0), rel=1e-2)
    assert log_h(3.0) > wide.item() and log_1mh(3.0) < 0


# ----------------------------------------------------------------------------- A12
def test_codes_to_multi_hot_drops_padding():
    codes = torch.tensor([[[2, 3, 0], [0, 0, 0]]])
    multi_hot = LF.codes_to_multi_hot(codes, vocab_size=5)
    assert multi_hot.tolist() == [[[False, False, True, True, False], [False] * 5]]
    with pytest.raises(ValueError, match="vocabulary"):
        LF.codes_to_multi_hot(codes, vocab_size=3)


def ref_next_numeric(pred, numeric, missing, mask, weight=None, reduction="mean", visit_weighting="patient"):
    terms = {}
    for b in range(pred.shape[0]):
        terms[b] = []
        for t in range(pred.shape[1] - 1):
            if not (mask[b, t] and mask[b, t + 1]):
                continue
            errors = [(float(pred[b, t, f]) - float(numeric[b, t + 1, f])) ** 2
                      for f in range(pred.shape[2]) if not missing[b, t + 1, f]]
            if errors:
                terms[b].append(sum(errors) / len(errors))
    terms = {b: ts for b, ts in terms.items() if ts}
    return aggregate(terms, weight, reduction, visit_weighting, "mean")


def ref_next_codes(logits, codes, mask, weight=None, reduction="mean", visit_weighting="patient"):
    terms = {}
    for b in range(logits.shape[0]):
        terms[b] = []
        for t in range(logits.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                V = logits.shape[2]
                terms[b].append(-sum(log_h(float(logits[b, t, v])) if codes[b, t + 1, v]
                                     else log_1mh(float(logits[b, t, v])) for v in range(V)) / V)
    terms = {b: ts for b, ts in terms.items() if ts}
    return aggregate(terms, weight, reduction, visit_weighting, "mean")


@pytest.mark.parametrize("seed", range(5))
def test_next_visit_losses_match_loops(seed):
    b = random_batch(seed)
    pred = b.logits(3)
    numeric = b.logits(3)
    missing = torch.rand(numeric.shape, generator=b.generator) < 0.4
    numeric = torch.where(missing, torch.full_like(numeric, float("nan")), numeric)
    code_logits = b.logits(6)
    codes = torch.rand(code_logits.shape, generator=b.generator) < 0.3
    for visit_weighting in ("patient", "visit"):
        for w in (None, b.weight):
            for reduction in ("mean", "sum"):
                options = dict(weight=w, reduction=reduction, visit_weighting=visit_weighting)
                got = LF.next_visit_numeric_loss(pred, numeric, missing, b.mask, **options)
                want = ref_next_numeric(pred, numeric, missing, b.mask, **options)
                assert got.item() == pytest.approx(want, **APPROX)
                got = LF.next_visit_code_loss(code_logits, codes, b.mask, **options)
                assert got.item() == pytest.approx(ref_next_codes(code_logits, codes, b.mask, **options), **APPROX)


@pytest.mark.parametrize("seed", range(3))
def test_next_visit_numeric_loss_gradient(seed):
    """The hand-written gradient of the masked MSE: gradcheck in float64, equal to autograd's through the plain
    formula, and exactly 0 at padded visits and missing features (NaN there included)."""
    b = random_batch(seed)
    pred = b.logits(3).detach().requires_grad_()
    numeric = b.logits(3).detach()
    missing = torch.rand(numeric.shape, generator=b.generator) < 0.4
    numeric = torch.where(missing, torch.full_like(numeric, float("nan")), numeric)
    assert torch.autograd.gradcheck(lambda z: LF.next_visit_numeric_loss(z, numeric, missing, b.mask, weight=b.weight), (pred,))
    got = torch.autograd.grad(LF.next_visit_numeric_loss(pred, numeric, missing, b.mask), pred)[0]
    pairs = b.mask[:, 1:] & b.mask[:, :-1]
    observed = ~missing[:, 1:] & pairs.unsqueeze(-1)
    squared = torch.where(observed, pred[:, :-1] - torch.nan_to_num(numeric[:, 1:]), 0.0).square()
    per_pair = squared.sum(-1) / observed.sum(-1).clamp_min(1)
    counted = observed.any(-1)
    per_patient = (per_pair * counted).sum(1) / counted.sum(1).clamp_min(1)
    want = torch.autograd.grad(per_patient[counted.any(1)].mean(), pred)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)
    assert torch.all(got[~b.mask] == 0) and torch.all(got[:, :-1][~observed] == 0)


@pytest.mark.parametrize("seed", range(3))
def test_next_visit_code_loss_from_indices_equals_the_multi_hot_one(seed):
    """Padded code indices (duplicates and padding included) give the multi-hot loss, value and gradient, and
    the BCE of both is torch's within rounding (float64)."""
    from ehrseq.losses.functional.auxiliary import next_visit_code_loss_from_indices

    b = random_batch(seed)
    logits = b.logits(7).detach().requires_grad_()
    codes = torch.randint(0, 7, (*logits.shape[:2], 4), generator=b.generator)
    codes[..., -1] = codes[..., 0]  # a duplicate code
    codes[:, ::2, 1] = 0  # padding
    targets = LF.codes_to_multi_hot(codes, 7)
    for options in ({}, {"weight": b.weight, "visit_weighting": "visit"}, {"reduction": "sum"}):
        got = next_visit_code_loss_from_indices(logits, codes, b.mask, **options)
        want = LF.next_visit_code_loss(logits, targets, b.mask, **options)
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
        assert got.item() == pytest.approx(ref_next_codes(logits.detach(), targets, b.mask, **options), **APPROX)
        torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(want, logits)[0], rtol=1e-12, atol=0)
    # torch's BCE (reached when the targets require a gradient) agrees value and gradient
    soft = targets.to(logits.dtype).requires_grad_()
    got, want = LF.next_visit_code_loss(logits, targets, b.mask), LF.next_visit_code_loss(logits, soft, b.mask)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(want, logits)[0], rtol=1e-12, atol=1e-15)
    assert torch.autograd.gradcheck(lambda z: next_visit_code_loss_from_indices(z, codes, b.mask), (logits,))
    with pytest.raises(ValueError, match="vocabulary"):
        next_visit_code_loss_from_indices(logits, codes + 7, b.mask)
