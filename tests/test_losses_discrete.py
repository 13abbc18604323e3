"""Visit-indexed NLL (A1), logistic hazard (A2), focal variants (A6) and time-stratified weights (A8).

References are loops written from the formulas of docs/reference.md, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_losses_common import random_batch

import ehrseq.losses.functional as LF
from ehrseq.errors import ShapeError

TOL = dict(rtol=1e-10, atol=1e-10)
APPROX = dict(rel=1e-10, abs=1e-10)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def log_h(z: float) -> float:
    return math.log(sigmoid(z))


def log_1mh(z: float) -> float:
    return math.log(1.0 - sigmoid(z))


def aggregate(terms: dict, weight, reduction: str, visit_weighting: str, within: str):
    """Loop aggregation: ``terms`` maps patient -> list of per-visit terms (only counted visits)."""
    w = {b: (1.0 if weight is None else float(weight[b])) for b in terms}
    if visit_weighting == "visit":
        total = sum(w[b] * t for b, ts in terms.items() for t in ts)
        count = sum(w[b] * len(ts) for b, ts in terms.items())
        return total if reduction == "sum" else total / count
    per_patient = {b: (sum(ts) if within == "sum" else sum(ts) / len(ts)) for b, ts in terms.items() if ts}
    total = sum(w[b] * v for b, v in per_patient.items())
    return total if reduction == "sum" else total / sum(w[b] for b in per_patient)


def ref_discrete(logits, event, event_visit, mask, *, csl=False, cause=None, time_weights=None, weight=None,
                 reduction="mean", visit_weighting="patient", focal=None):
    terms = {}
    for b in range(logits.shape[0]):
        if not mask[b].any():
            continue
        T = int(event_visit[b])
        d = bool(event[b] > 0) if cause is None else bool(event[b] == cause)
        terms[b] = []
        for t in range(T + 1):
            z = float(logits[b, t])
            w_t = 1.0 if time_weights is None else float(time_weights[t])
            if t < T or (t == T and not d and csl):
                y = 0
            elif d:
                y = 1
            else:
                terms[b].append(0.0)
                continue
            term = -(log_h(z) if y else log_1mh(z))
            if focal is not None:
                gamma, alpha = focal
                p = sigmoid(z) if y else 1 - sigmoid(z)
                term *= (1 - p) ** gamma * (1.0 if alpha is None else (alpha if y else 1 - alpha))
            terms[b].append(w_t * term)
    return aggregate(terms, weight, reduction, visit_weighting, "sum")


def ref_logistic(logits, bins, event, mask, *, cause=None, bin_weights=None, weight=None, reduction="mean",
                 visit_weighting="patient", focal=None):
    L = logits.shape[-1]
    terms = {}
    for b in range(logits.shape[0]):
        d = bool(event[b] > 0) if cause is None else bool(event[b] == cause)
        terms[b] = []
        for m in range(logits.shape[1]):
            if not mask[b, m]:
                continue
            kappa = int(bins[b, m])
            total = 0.0
            for l in range(min(kappa, L - 1) + 1):
                z = float(logits[b, m, l])
                y = 1 if (l == kappa and d) else 0
                term = -(log_h(z) if y else log_1mh(z))
                if focal is not None:
                    gamma, alpha = focal
                    p = sigmoid(z) if y else 1 - sigmoid(z)
                    term *= (1 - p) ** gamma * (1.0 if alpha is None else (alpha if y else 1 - alpha))
                total += (1.0 if bin_weights is None else float(bin_weights[l])) * term
            terms[b].append(total)
    return aggregate(terms, weight, reduction, visit_weighting, "mean")


# ----------------------------------------------------------------------------- A1 worked examples
def test_catalogue_worked_example_gives_0_813():
    hazards = torch.tensor([[0.05, 0.10, 0.25, 0.5], [0.08, 0.15, 0.5, 0.5]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    logits = torch.where(mask, torch.logit(hazards), torch.tensor(float("nan"), dtype=torch.float64))
    loss = LF.discrete_time_nll(logits, torch.tensor([1, 0]), torch.tensor([2, 1]), mask)
    patient_1 = math.log(0.95) + math.log(0.90) + math.log(0.25)
    patient_2 = math.log(0.92)  # censored at visit 1: nothing at the censoring visit
    expected = -(patient_1 + patient_2) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert round(loss.item(), 3) == 0.813


def test_catalogue_validation_example():
    hazards = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    loss = LF.discrete_time_nll(torch.logit(hazards), torch.tensor([1]), torch.tensor([2]), torch.ones(1, 3))
    assert loss.item() == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.3)), abs=1e-12)


def test_censored_survives_last_adds_the_survival_of_the_censoring_visit():
    hazards = torch.tensor([[0.08, 0.15]], dtype=torch.float64)
    loss = LF.discrete_time_nll(torch.logit(hazards), torch.tensor([0]), torch.tensor([1]), torch.ones(1, 2),
                                censored_survives_last=True)
    assert loss.item() == pytest.approx(-(math.log(0.92) + math.log(0.85)), abs=1e-12)


# ----------------------------------------------------------------------------- A1 / A8 brute force
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("visit_weighting", ["patient", "visit"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_discrete_time_nll_matches_loop(seed, visit_weighting, reduction):
    b = random_batch(seed, num_causes=2)
    logits = b.logits()
    time_weights = torch.rand(b.shape[1], generator=b.generator, dtype=torch.float64) + 0.5
    for csl in (False, True):
        for cause in (None, 2):
            for tw, w in ((None, None), (time_weights, b.weight)):
                got = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask, censored_survives_last=csl,
                                           cause=cause, time_weights=tw, weight=w, reduction=reduction,
                                           visit_weighting=visit_weighting)
                want = ref_discrete(logits, b.event, b.event_visit, b.mask, csl=csl, cause=cause, time_weights=tw,
                                    weight=w, reduction=reduction, visit_weighting=visit_weighting)
                assert got.item() == pytest.approx(want, **APPROX)


def test_discrete_time_nll_none_reduction_shapes_and_values():
    b = random_batch(3)
    logits = b.logits()
    per_patient = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask, weight=b.weight, reduction="none")
    assert per_patient.shape == (b.shape[0],)
    present = b.mask.any(1)
    mean = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask, weight=b.weight)
    assert mean.item() == pytest.approx((per_patient.sum() / b.weight[present].sum()).item(), **APPROX)
    per_visit = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask, reduction="none", visit_weighting="visit")
    assert per_visit.shape == b.shape
    torch.testing.assert_close(per_visit.sum(1), LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask,
                                                                       reduction="none"))


def test_later_visits_than_event_visit_do_not_contribute():
    logits = torch.tensor([[0.3, -0.2, 5.0, 7.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    short = LF.discrete_time_nll(logits[:, :2], torch.tensor([1]), torch.tensor([1]), mask[:, :2])
    long = LF.discrete_time_nll(logits, torch.tensor([1]), torch.tensor([1]), mask)
    assert long.item() == pytest.approx(short.item(), abs=1e-14)


def test_time_weights_multiply_every_log_term():
    logits = torch.tensor([[0.3, -0.2, 1.1]], dtype=torch.float64)
    args = (torch.tensor([1]), torch.tensor([2]), torch.ones(1, 3))
    weights = torch.tensor([2.0, 0.0, 3.0], dtype=torch.float64)
    got = LF.discrete_time_nll(logits, *args, time_weights=weights)
    want = 2 * -log_1mh(0.3) + 3 * -log_h(1.1)
    assert got.item() == pytest.approx(want, abs=1e-12)


# ----------------------------------------------------------------------------- A2
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("visit_weighting", ["patient", "visit"])
def test_logistic_hazard_matches_loop(seed, visit_weighting):
    b = random_batch(seed, num_causes=2)
    logits = b.logits(b.num_bins)
    bin_weights = torch.rand(b.num_bins, generator=b.generator, dtype=torch.float64) + 0.5
    for cause in (None, 1):
        for bw, w in ((None, None), (bin_weights, b.weight)):
            for reduction in ("mean", "sum"):
                got = LF.logistic_hazard_nll(logits, b.bin, b.event, b.mask, cause=cause, bin_weights=bw, weight=w,
                                             reduction=reduction, visit_weighting=visit_weighting)
                want = ref_logistic(logits, b.bin, b.event, b.mask, cause=cause, bin_weights=bw, weight=w,
                                    reduction=reduction, visit_weighting=visit_weighting)
                assert got.item() == pytest.approx(want, **APPROX)


@pytest.mark.parametrize("seed", range(4))
def test_logistic_hazard_equals_masked_bce_with_logits(seed):
    b = random_batch(seed)
    logits = b.logits(b.num_bins, padding=0.0)
    targets, at_risk = LF.logistic_hazard_targets(b.bin, b.event, b.mask, b.num_bins)
    bce = F.binary_cross_entropy_with_logits(logits, targets.double(), weight=at_risk.double(), reduction="none")
    per_visit = LF.logistic_hazard_nll(logits, b.bin, b.event, b.mask, reduction="none", visit_weighting="visit")
    torch.testing.assert_close(per_visit, bce.sum(-1), **TOL)


def test_logistic_hazard_grid_conventions_by_hand():
    z = torch.tensor([[[0.2, -0.4, 1.3]]], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)

    def loss(kappa, event):
        return LF.logistic_hazard_nll(z, torch.tensor([[kappa]]), torch.tensor([event]), mask).item()

    # event in bin 1: survive bin 0, event in bin 1
    assert loss(1, 1) == pytest.approx(-(log_1mh(0.2) + log_h(-0.4)), abs=1e-12)
    # censored in bin 1: survives bins 0 and 1
    assert loss(1, 0) == pytest.approx(-(log_1mh(0.2) + log_1mh(-0.4)), abs=1e-12)
    # beyond the grid (κ = L): survives every bin, event or not
    beyond = -(log_1mh(0.2) + log_1mh(-0.4) + log_1mh(1.3))
    assert loss(3, 1) == pytest.approx(beyond, abs=1e-12)
    assert loss(3, 0) == pytest.approx(beyond, abs=1e-12)


# ----------------------------------------------------------------------------- A6 focal
@pytest.mark.parametrize("seed", range(4))
def test_focal_losses_match_loops(seed):
    b = random_batch(seed)
    for gamma, alpha in ((2.0, 0.25), (0.5, None), (0.0, 0.7)):
        logits = b.logits()
        got = LF.discrete_time_focal_loss(logits, b.event, b.event_visit, b.mask, gamma=gamma, alpha=alpha,
                                          weight=b.weight)
        want = ref_discrete(logits, b.event, b.event_visit, b.mask, weight=b.weight, focal=(gamma, alpha))
        assert got.item() == pytest.approx(want, **APPROX)
        grid = b.logits(b.num_bins)
        got = LF.logistic_hazard_focal_loss(grid, b.bin, b.event, b.mask, gamma=gamma, alpha=alpha,
                                            visit_weighting="visit")
        want = ref_logistic(grid, b.bin, b.event, b.mask, visit_weighting="visit", focal=(gamma, alpha))
        assert got.item() == pytest.approx(want, **APPROX)


def test_focal_without_focusing_or_balance_is_the_likelihood():
    b = random_batch(11)
    logits = b.logits()
    nll = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask)
    focal = LF.discrete_time_focal_loss(logits, b.event, b.event_visit, b.mask, gamma=0.0, alpha=None)
    assert focal.item() == pytest.approx(nll.item(), **APPROX)


def test_focal_detached_weights_give_the_reweighted_likelihood_gradient():
    z = torch.tensor([[0.7, -1.2]], dtype=torch.float64, requires_grad=True)
    args = (torch.tensor([1]), torch.tensor([1]), torch.ones(1, 2))
    LF.discrete_time_focal_loss(z, *args, gamma=2.0, alpha=None, detach_weights=True).backward()
    detached = z.grad.clone()
    z.grad = None
    LF.discrete_time_focal_loss(z, *args, gamma=2.0, alpha=None).backward()
    h = torch.sigmoid(z.detach())
    # detached: weight h^2 on the survival term (target 0) and (1-h)^2 on the event term (target 1)
    torch.testing.assert_close(detached[0, 0], h[0, 0] ** 2 * h[0, 0], **TOL)
    torch.testing.assert_close(detached[0, 1], (1 - h[0, 1]) ** 2 * (h[0, 1] - 1), **TOL)
    assert not torch.allclose(z.grad, detached)


def test_focal_rejects_bad_parameters():
    b = random_batch(0)
    with pytest.raises(ValueError, match="gamma"):
        LF.discrete_time_focal_loss(b.logits(), b.event, b.event_visit, b.mask, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        LF.discrete_time_focal_loss(b.logits(), b.event, b.event_visit, b.mask, alpha=1.5)


# ----------------------------------------------------------------------------- validation
def test_bad_inputs_raise_clear_errors():
    b = random_batch(0)
    logits = b.logits()
    with pytest.raises(ShapeError, match="logits"):
        LF.discrete_time_nll(logits.unsqueeze(-1), b.event, b.event_visit, b.mask)
    with pytest.raises(ShapeError, match="mask"):
        LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask[:, :-1])
    with pytest.raises(ShapeError, match="event"):
        LF.discrete_time_nll(logits, b.event[:-1], b.event_visit, b.mask)
    with pytest.raises(ShapeError, match="floating"):
        LF.discrete_time_nll(logits.long(), b.event, b.event_visit, b.mask)
    with pytest.raises(ShapeError, match="integer"):
        LF.discrete_time_nll(logits, b.event.double(), b.event_visit, b.mask)
    with pytest.raises(ValueError, match="event_visit"):
        LF.discrete_time_nll(logits, b.event, b.event_visit + 1, b.mask)
    with pytest.raises(ValueError, match="negative"):
        LF.discrete_time_nll(logits, b.event - 5, b.event_visit, b.mask)
    bad_bins = b.bin.clone()
    bad_bins[0, 0] = b.num_bins + 1
    with pytest.raises(ValueError, match="bin"):
        LF.logistic_hazard_nll(b.logits(b.num_bins), bad_bins, b.event, b.mask)
    with pytest.raises(ShapeError, match="bin_weights"):
        LF.logistic_hazard_nll(b.logits(b.num_bins), b.bin, b.event, b.mask, bin_weights=torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        LF.logistic_hazard_nll(b.logits(b.num_bins), b.bin, b.event, b.mask, reduction="avg")


def test_bool_events_are_accepted():
    b = random_batch(5)
    logits = b.logits()
    as_bool = LF.discrete_time_nll(logits, b.event > 0, b.event_visit, b.mask)
    as_int = LF.discrete_time_nll(logits, b.event, b.event_visit, b.mask)
    assert as_bool.item() == as_int.item()
