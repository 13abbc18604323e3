"""PMF / DeepHit likelihood and ranking term with competing risks (A3), against loop definitions."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses_common import random_batch
from test_losses_discrete import aggregate

import ehrseq.losses.functional as LF
from ehrseq.errors import ShapeError
from ehrseq.losses.functional import deephit

APPROX = dict(rel=1e-10, abs=1e-10)


def probabilities(logits_row) -> list[float]:
    values = [float(v) for v in logits_row]
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def ref_pmf_nll(logits, bins, event, mask, K, *, bin_weights=None, weight=None, reduction="mean",
                visit_weighting="patient"):
    L = (logits.shape[-1] - 1) // K
    terms = {}
    for b in range(logits.shape[0]):
        terms[b] = []
        for m in range(logits.shape[1]):
            if not mask[b, m]:
                continue
            f = probabilities(logits[b, m])
            kappa, k = int(bins[b, m]), int(event[b])
            if k > 0:
                mass = f[(k - 1) * L + kappa] if kappa < L else f[-1]
            else:
                mass = f[-1] + sum(f[c * L + l] for c in range(K) for l in range(L) if l > kappa)
            term = -math.log(mass)
            terms[b].append(term * (1.0 if bin_weights is None else float(bin_weights[kappa])))
    return aggregate(terms, weight, reduction, visit_weighting, "mean")


def cif(logits_row, K, cause, kappa) -> float:
    """F_cause at the end of bin min(κ, L−1)."""
    L = (len(logits_row) - 1) // K
    f = probabilities(logits_row)
    return sum(f[(cause - 1) * L + l] for l in range(min(kappa, L - 1) + 1))


def ref_ranking(logits, bins, remaining, event, mask, event_visit, K, sigma, pairs, eta=None, weight=None,
                reduction="mean"):
    B, M = mask.shape
    groups = []  # list of (patient -> (logits row, bin, remaining)) per comparison group
    if pairs == "last":
        groups.append({b: (logits[b, int(event_visit[b])], int(bins[b, int(event_visit[b])]),
                           float(remaining[b, int(event_visit[b])])) for b in range(B) if mask[b].any()})
    else:
        for m in range(M):
            groups.append({b: (logits[b, m], int(bins[b, m]), float(remaining[b, m])) for b in range(B) if mask[b, m]})
    w = [1.0] * B if weight is None else [float(x) for x in weight]
    totals, counts = [0.0] * K, [0.0] * K
    for group in groups:
        for i, (zi, ki, ri) in group.items():
            k = int(event[i])
            if k == 0:
                continue
            for j, (zj, _, rj) in group.items():
                if ri < rj:
                    term = math.exp(-(cif(zi, K, k, ki) - cif(zj, K, k, ki)) / sigma)
                    totals[k - 1] += w[i] * w[j] * term
                    counts[k - 1] += w[i] * w[j]
    eta = [1.0] * K if eta is None else [float(e) for e in eta]
    if reduction == "sum":
        return sum(e * t for e, t in zip(eta, totals)) / K
    return sum(e * (t / c if c > 0 else 0.0) for e, t, c in zip(eta, totals, counts)) / K


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_causes", [1, 2])
def test_pmf_nll_matches_loop(seed, num_causes):
    b = random_batch(seed, num_causes=num_causes)
    logits = b.logits(num_causes * b.num_bins + 1)
    bin_weights = torch.rand(b.num_bins + 1, generator=b.generator, dtype=torch.float64) + 0.5
    for visit_weighting in ("patient", "visit"):
        for reduction in ("mean", "sum"):
            for bw, w in ((None, None), (bin_weights, b.weight)):
                got = LF.pmf_nll(logits, b.bin, b.event, b.mask, num_causes=num_causes, bin_weights=bw, weight=w,
                                 reduction=reduction, visit_weighting=visit_weighting)
                want = ref_pmf_nll(logits, b.bin, b.event, b.mask, num_causes, bin_weights=bw, weight=w,
                                   reduction=reduction, visit_weighting=visit_weighting)
                assert got.item() == pytest.approx(want, **APPROX)


def _log_softmax_pmf_nll(z, bins, event, num_causes):
    """Per-visit PMF NLL ``[B, M]`` from torch's log_softmax (the definition, for values and autograd gradients)."""
    num_bins = (z.shape[-1] - 1) // num_causes
    log_f = torch.log_softmax(z, dim=-1)
    cause = event.unsqueeze(1).expand_as(bins)
    out = torch.empty(bins.shape, dtype=z.dtype)
    terms = []
    for b in range(bins.shape[0]):
        for m in range(bins.shape[1]):
            k, kappa = int(cause[b, m]), int(bins[b, m])
            if k > 0:
                index = (k - 1) * num_bins + kappa if kappa < num_bins else z.shape[-1] - 1
                terms.append(-log_f[b, m, index])
            else:
                kept = [c * num_bins + l for c in range(num_causes) for l in range(min(kappa, num_bins - 1) + 1, num_bins)]
                terms.append(-torch.logsumexp(log_f[b, m, kept + [z.shape[-1] - 1]], dim=0))
    return torch.stack(terms).reshape(out.shape)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pmf_nll_is_exact_where_the_kept_mass_is_far_below_the_largest_output(dtype):
    """Kept outputs 100–300 below the largest logit (a kept mass under e⁻⁶⁹ of it, where the sum of exponentials
    underflows in float32): finite values and gradients equal to the log-softmax definition's."""
    g = torch.Generator().manual_seed(0)
    num_causes, num_bins = 2, 4
    z = torch.randn(3, 4, num_causes * num_bins + 1, generator=g, dtype=torch.float64)
    z[0, :, 0] += 300.0  # cause 1, bin 0 dominates: every censored visit past bin 0 and most events are far below it
    z[1, :, -1] -= 120.0  # the tail far below the rest
    z[2] *= 40.0
    bins = torch.tensor([[0, 1, 2, 4], [3, 0, 4, 1], [2, 2, 0, 3]])
    event = torch.tensor([0, 2, 1])
    mask = torch.ones(3, 4, dtype=torch.bool)
    logits = z.to(dtype).requires_grad_()
    got = LF.pmf_nll(logits, bins, event, mask, num_causes=num_causes, reduction="none", visit_weighting="visit")
    reference = z.clone().requires_grad_()
    want = _log_softmax_pmf_nll(reference, bins, event, num_causes)
    assert torch.isfinite(got).all() and got.max() > 100.0
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got.double(), want.detach(), rtol=tolerance, atol=tolerance)
    weights = torch.rand(3, 4, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((got * weights.to(dtype)).sum(), logits)
    (want_grad,) = torch.autograd.grad((want * weights).sum(), reference)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad.double(), want_grad, rtol=tolerance, atol=tolerance)


def test_pmf_nll_by_hand_single_event():
    z = torch.tensor([[[0.1, 0.7, -0.3, 0.4]]], dtype=torch.float64)  # L = 3 bins + beyond
    f = probabilities(z[0, 0])
    mask = torch.ones(1, 1, dtype=torch.bool)

    def loss(kappa, event):
        return LF.pmf_nll(z, torch.tensor([[kappa]]), torch.tensor([event]), mask).item()

    assert loss(1, 1) == pytest.approx(-math.log(f[1]), abs=1e-12)
    assert loss(1, 0) == pytest.approx(-math.log(f[2] + f[3]), abs=1e-12)
    assert loss(3, 1) == pytest.approx(-math.log(f[3]), abs=1e-12)
    assert loss(3, 0) == pytest.approx(-math.log(f[3]), abs=1e-12)
    assert loss(2, 0) == pytest.approx(-math.log(f[3]), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("pairs", ["last", "visit"])
@pytest.mark.parametrize("num_causes", [1, 2])
def test_deephit_ranking_matches_loop(seed, pairs, num_causes):
    b = random_batch(seed, num_causes=num_causes)
    logits = b.logits(num_causes * b.num_bins + 1)
    eta = torch.rand(num_causes, generator=b.generator, dtype=torch.float64) + 0.5
    for reduction in ("mean", "sum"):
        for e, w in ((None, None), (eta, b.weight)):
            got = LF.deephit_ranking_loss(logits, b.bin, b.remaining, b.event, b.mask, event_visit=b.event_visit,
                                          num_causes=num_causes, sigma=0.3, pairs=pairs, cause_weights=e, weight=w,
                                          reduction=reduction)
            want = ref_ranking(logits, b.bin, b.remaining, b.event, b.mask, b.event_visit, num_causes, 0.3, pairs,
                               eta=e, weight=w, reduction=reduction)
            assert got.item() == pytest.approx(want, **APPROX)


def test_deephit_ranking_none_is_the_pair_matrix():
    b = random_batch(2, num_causes=2)
    logits = b.logits(2 * b.num_bins + 1)
    args = (logits, b.bin, b.remaining, b.event, b.mask)
    pairs = LF.deephit_ranking_loss(*args, event_visit=b.event_visit, num_causes=2, reduction="none")
    assert pairs.shape == (b.shape[0], b.shape[0])
    total = LF.deephit_ranking_loss(*args, event_visit=b.event_visit, num_causes=2, reduction="sum")
    assert total.item() == pytest.approx(pairs.sum().item() / 2, **APPROX)
    by_visit = LF.deephit_ranking_loss(*args, num_causes=2, pairs="visit", reduction="none")
    assert by_visit.shape == (b.shape[1], b.shape[0], b.shape[0])


def test_deephit_ranking_needs_event_visit_for_last_pairs():
    b = random_batch(0)
    with pytest.raises(ValueError, match="event_visit"):
        LF.deephit_ranking_loss(b.logits(b.num_bins + 1), b.bin, b.remaining, b.event, b.mask)


def test_pmf_layout_is_checked():
    b = random_batch(0)
    with pytest.raises(ShapeError, match="K·L"):
        LF.pmf_nll(b.logits(2 * b.num_bins), b.bin, b.event, b.mask, num_causes=2)
    with pytest.raises(ValueError, match="num_causes"):
        LF.pmf_nll(b.logits(b.num_bins + 1), b.bin, b.event + 1, b.mask, num_causes=1)


def test_risk_helpers_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    for h in (1, 3, 5):
        want = 1 - torch.prod(1 - torch.sigmoid(z[:, :h]), dim=-1)
        torch.testing.assert_close(LF.logistic_hazard_risk(z, h), want, rtol=1e-12, atol=1e-14)
    pmf = torch.randn(3, 2 * 4 + 1, generator=g, dtype=torch.float64)
    f = torch.softmax(pmf, -1)
    for h in (1, 4):
        torch.testing.assert_close(LF.pmf_risk(pmf, h, num_causes=2, cause=2), f[:, 4:4 + h].sum(-1))
        torch.testing.assert_close(LF.pmf_risk(pmf, h, num_causes=2), f[:, :h].sum(-1) + f[:, 4:4 + h].sum(-1))
    with pytest.raises(ValueError, match="horizon"):
        LF.logistic_hazard_risk(z, 0)


@pytest.mark.parametrize("sigma", [0.025, 0.1, 0.5])
@pytest.mark.parametrize("num_causes", [1, 2])
def test_factored_last_pairs_equal_the_pair_sums_in_value_and_gradient(monkeypatch, sigma, num_causes):
    """pairs="last" factors the pair sums into one product of the comparability matrix (while 1/σ ≤ 40); the pair
    list gives the same loss and gradient, in float64 and within float32 rounding in float32 at the largest 1/σ."""
    b = random_batch(7, num_causes=num_causes)
    eta = torch.rand(num_causes, generator=b.generator, dtype=torch.float64) + 0.5
    base = b.logits(num_causes * b.num_bins + 1).detach() * 3.0  # sharper CIFs: differences up to ~1

    def run(logits, reduction, factored):
        monkeypatch.setattr(deephit, "_FACTORED_MAX_EXPONENT", 40.0 if factored else 0.0)
        logits = logits.clone().requires_grad_(True)
        loss = LF.deephit_ranking_loss(logits, b.bin, b.remaining, b.event, b.mask, event_visit=b.event_visit,
                                       num_causes=num_causes, sigma=sigma, cause_weights=eta, weight=b.weight,
                                       reduction=reduction)
        loss.backward()
        return loss.detach(), logits.grad

    for reduction in ("mean", "sum"):
        value, grad = run(base, reduction, True)
        want_value, want_grad = run(base, reduction, False)
        torch.testing.assert_close(value, want_value, rtol=1e-10, atol=0.0)
        torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-12)
        value32, grad32 = run(base.float(), reduction, True)  # float32: as close as the pair list in float32
        pairs32, pairs_grad32 = run(base.float(), reduction, False)
        assert torch.isfinite(value32) and torch.isfinite(grad32).all()
        torch.testing.assert_close(value32, pairs32, rtol=2e-6, atol=0.0)
        torch.testing.assert_close(grad32, pairs_grad32, rtol=1e-4, atol=1e-6 * pairs_grad32.abs().max().item())
        torch.testing.assert_close(value32.double(), want_value, rtol=2e-5, atol=0.0)


@pytest.mark.parametrize("factored", [True, False])
def test_an_event_without_comparable_pairs_adds_zero_with_zero_gradient(monkeypatch, factored):
    monkeypatch.setattr(deephit, "_FACTORED_MAX_EXPONENT", 40.0 if factored else 0.0)
    logits = torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)  # L = 3 bins + "beyond"
    event, remaining = torch.tensor([1, 0]), torch.tensor([[5.0], [2.0]], dtype=torch.float64)  # R_event > R_censored
    mask, bins, last = torch.ones(2, 1, dtype=torch.bool), torch.tensor([[2], [1]]), torch.tensor([0, 0])
    for reduction in ("mean", "sum"):
        logits.grad = None
        loss = LF.deephit_ranking_loss(logits, bins, remaining, event, mask, event_visit=last, reduction=reduction)
        loss.backward()
        assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
