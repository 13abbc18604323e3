"""Calibration penalty (A4): expected vs observed events per time step, against loop definitions."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses_common import random_batch
from test_losses_discrete import sigmoid

import ehrseq.losses.functional as LF

APPROX = dict(rel=1e-10, abs=1e-12)


def ref_penalty(expected, observed, exposure, reduction):
    squared = [((e - o) / n) ** 2 if n > 0 else 0.0 for e, o, n in zip(expected, observed, exposure)]
    if reduction == "none":
        return squared
    if reduction == "sum":
        return sum(squared)
    total = sum(exposure)
    return sum(n * s for n, s in zip(exposure, squared)) / total if total > 0 else 0.0


def ref_grid(logits, bins, event, mask, weight=None, visit_weighting="patient", reduction="mean"):
    B, M, L = logits.shape
    expected, observed, exposure = [0.0] * L, [0.0] * L, [0.0] * L
    for b in range(B):
        n_visits = int(mask[b].sum())
        for m in range(M):
            if not mask[b, m]:
                continue
            v = 1.0 if weight is None else float(weight[b])
            if visit_weighting == "patient":
                v /= n_visits
            kappa = int(bins[b, m])
            for l in range(min(kappa, L - 1) + 1):
                exposure[l] += v
                expected[l] += v * sigmoid(float(logits[b, m, l]))
            if event[b] > 0 and kappa < L:
                observed[kappa] += v
    return ref_penalty(expected, observed, exposure, reduction)


def ref_visit(logits, event, event_visit, mask, weight=None, csl=False, reduction="mean"):
    B, M = logits.shape
    expected, observed, exposure = [0.0] * M, [0.0] * M, [0.0] * M
    for b in range(B):
        if not mask[b].any():
            continue
        v = 1.0 if weight is None else float(weight[b])
        T = int(event_visit[b])
        for t in range(T + 1):
            if t == T and not (event[b] > 0 or csl):
                continue
            exposure[t] += v
            expected[t] += v * sigmoid(float(logits[b, t]))
            if t == T and event[b] > 0:
                observed[t] += v
    return ref_penalty(expected, observed, exposure, reduction)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("visit_weighting", ["patient", "visit"])
def test_grid_calibration_matches_loop(seed, visit_weighting):
    b = random_batch(seed)
    logits = b.logits(b.num_bins)
    for w in (None, b.weight):
        for reduction in ("mean", "sum", "none"):
            got = LF.logistic_hazard_calibration(logits, b.bin, b.event, b.mask, weight=w, reduction=reduction,
                                                 visit_weighting=visit_weighting)
            want = ref_grid(logits, b.bin, b.event, b.mask, w, visit_weighting, reduction)
            if reduction == "none":
                assert got.tolist() == pytest.approx(want, **APPROX)
            else:
                assert got.item() == pytest.approx(want, **APPROX)


@pytest.mark.parametrize("seed", range(6))
def test_visit_calibration_matches_loop(seed):
    b = random_batch(seed)
    logits = b.logits()
    for w in (None, b.weight):
        for csl in (False, True):
            for reduction in ("mean", "sum", "none"):
                got = LF.discrete_time_calibration(logits, b.event, b.event_visit, b.mask, censored_survives_last=csl,
                                                   weight=w, reduction=reduction)
                want = ref_visit(logits, b.event, b.event_visit, b.mask, w, csl, reduction)
                if reduction == "none":
                    assert got.tolist() == pytest.approx(want, **APPROX)
                else:
                    assert got.item() == pytest.approx(want, **APPROX)


def test_life_table_hazards_have_zero_penalty_and_others_do_not():
    # Four patients, one visit each, grid of 2 bins. Bin 0: 4 at risk, 1 event; bin 1: 3 at risk
    # (one censored inside bin 1 counts as at risk there), 1 event.
    bins = torch.tensor([[0], [1], [1], [2]])
    event = torch.tensor([1, 1, 0, 0])
    mask = torch.ones(4, 1, dtype=torch.bool)
    life_table = torch.tensor([1 / 4, 1 / 3], dtype=torch.float64)
    logits = torch.logit(life_table).expand(4, 1, 2).clone()
    calibrated = LF.logistic_hazard_calibration(logits, bins, event, mask)
    assert calibrated.item() == pytest.approx(0.0, abs=1e-15)
    shifted = LF.logistic_hazard_calibration(logits + 0.5, bins, event, mask)
    h = [sigmoid(math.log(1 / 3) + 0.5), sigmoid(math.log(1 / 2) + 0.5)]
    want = (4 * (h[0] - 1 / 4) ** 2 + 3 * (h[1] - 1 / 3) ** 2) / 7
    assert shifted.item() == pytest.approx(want, abs=1e-14)


def test_catalogue_penalty_differs_from_this_one_on_calibrated_predictions():
    """[catalogue]'s mean-hazard vs event-fraction penalty is not zero for life-table hazards; this one is."""
    bins = torch.tensor([[0], [1], [1], [2]])
    event = torch.tensor([1, 1, 0, 0])
    logits = torch.logit(torch.tensor([1 / 4, 1 / 3], dtype=torch.float64)).expand(4, 1, 2).clone()
    ours = LF.logistic_hazard_calibration(logits, bins, event, torch.ones(4, 1, dtype=torch.bool))
    at_risk = [1 / 4, 1 / 4, 1 / 3, 1 / 4, 1 / 3, 1 / 4, 1 / 3]  # hazards of the 7 at-risk visit-bins
    catalogue = (sum(at_risk) / len(at_risk) - event.double().mean().item()) ** 2
    assert ours.item() == pytest.approx(0.0, abs=1e-15) and catalogue > 1e-2


def test_batch_without_exposure_gives_zero_with_gradient():
    logits = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    loss = LF.logistic_hazard_calibration(logits, torch.full((2, 3), -1), torch.tensor([1, 0]), mask)
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)
