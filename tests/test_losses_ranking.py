"""Pairwise ranking (A5) and supervised contrastive (A9) losses against loop definitions."""

from __future__ import annotations

import math

import pytest
import torch
from test_losses_common import random_batch

import ehrseq.losses.functional as LF
from ehrseq.bench.losses import loop_contrastive_loss, loop_ranking_loss

APPROX = dict(rel=1e-10, abs=1e-12)


def ref_ranking(risk, time, event, temperature, *, mask=None, cause=None, weight=None, reduction="mean"):
    B = risk.shape[0]
    keep = [True] * B if mask is None else [bool(x) for x in mask]
    w = [1.0] * B if weight is None else [float(x) for x in weight]
    total, count = 0.0, 0.0
    for i in range(B):
        anchor = event[i] > 0 if cause is None else event[i] == cause
        if not (keep[i] and anchor):
            continue
        for j in range(B):
            if keep[j] and float(time[i]) < float(time[j]):
                total += w[i] * w[j] * -math.log(1 / (1 + math.exp(-(float(risk[i]) - float(risk[j])) / temperature)))
                count += w[i] * w[j]
    if reduction == "sum":
        return total
    return total / count if count else 0.0


def _ranking_inputs(seed):
    b = random_batch(seed, batch_size=9, num_causes=2)
    rows = torch.arange(9)
    risk = b.logits(scale=2.0)[rows, b.event_visit]
    time = b.remaining[rows, b.event_visit]  # integer-valued: many ties
    return b, risk, time


@pytest.mark.parametrize("seed", range(8))
def test_ranking_loss_matches_loop(seed):
    b, risk, time = _ranking_inputs(seed)
    present = b.mask.any(1)
    for temperature in (0.5, 2.0):
        for cause in (None, 2):
            for w in (None, b.weight):
                for reduction in ("mean", "sum"):
                    got = LF.ranking_loss(risk, time, b.event, mask=present, temperature=temperature, cause=cause,
                                          weight=w, reduction=reduction)
                    want = ref_ranking(risk, time, b.event, temperature, mask=present, cause=cause, weight=w,
                                       reduction=reduction)
                    assert got.item() == pytest.approx(want, **APPROX)


def test_ranking_excludes_ties_and_returns_pair_matrix():
    risk = torch.tensor([0.5, 1.0, -0.2], dtype=torch.float64)
    time = torch.tensor([2.0, 2.0, 5.0], dtype=torch.float64)
    event = torch.tensor([1, 1, 0])
    pairs = LF.ranking_loss(risk, time, event, reduction="none")
    expected = torch.zeros(3, 3, dtype=torch.float64)
    expected[0, 2] = math.log1p(math.exp(-(0.5 + 0.2)))
    expected[1, 2] = math.log1p(math.exp(-(1.0 + 0.2)))
    torch.testing.assert_close(pairs, expected)
    no_pairs = LF.ranking_loss(risk, time, torch.tensor([0, 0, 1]))
    assert no_pairs.item() == 0.0


def test_ranking_agrees_with_the_catalogue_loop_used_as_benchmark_baseline():
    b, risk, time = _ranking_inputs(3)
    keep = b.mask.any(1)
    got = LF.ranking_loss(risk[keep], time[keep], b.event[keep], temperature=0.7)
    assert got.item() == pytest.approx(loop_ranking_loss(risk[keep], time[keep], b.event[keep], 0.7).item(), **APPROX)


# ----------------------------------------------------------------------------- contrastive
def ref_contrastive(states, event, event_visit, mask, temperature, positives, *, cause=None, weight=None,
                    reduction="mean"):
    B = states.shape[0]
    present = [bool(mask[b].any()) for b in range(B)]
    delta = [bool(event[b] > 0) if cause is None else bool(event[b] == cause) for b in range(B)]
    units = {}
    for b in range(B):
        if present[b]:
            v = [float(x) for x in states[b, int(event_visit[b])]]
            norm = math.sqrt(sum(x * x for x in v))
            units[b] = [x / norm for x in v]

    def sim(i, j):
        return sum(a * c for a, c in zip(units[i], units[j])) / temperature

    losses = {}
    for i in units:
        if not delta[i]:
            continue
        pos = [j for j in units if j != i and delta[j]]
        if not pos:
            continue
        log_all = math.log(sum(math.exp(sim(i, a)) for a in units if a != i))
        if positives == "sum":
            losses[i] = log_all - math.log(sum(math.exp(sim(i, p)) for p in pos))
        else:
            losses[i] = sum(log_all - sim(i, p) for p in pos) / len(pos)
    w = [1.0] * B if weight is None else [float(x) for x in weight]
    total = sum(w[i] * v for i, v in losses.items())
    if reduction == "sum":
        return total
    return total / sum(w[i] for i in losses) if losses else 0.0


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("positives", ["sum", "mean"])
def test_contrastive_matches_loop(seed, positives):
    b = random_batch(seed, batch_size=8, num_causes=2)
    states = b.logits(4)
    for cause in (None, 1):
        for w in (None, b.weight):
            for reduction in ("mean", "sum"):
                got = LF.supervised_contrastive_loss(states, b.event, b.event_visit, b.mask, temperature=0.4,
                                                     positives=positives, cause=cause, weight=w, reduction=reduction)
                want = ref_contrastive(states, b.event, b.event_visit, b.mask, 0.4, positives, cause=cause, weight=w,
                                       reduction=reduction)
                assert got.item() == pytest.approx(want, **APPROX)


def test_contrastive_agrees_with_the_catalogue_loop_used_as_benchmark_baseline():
    b = random_batch(4, batch_size=8, empty_patients=False)
    states = b.logits(4)
    got = LF.supervised_contrastive_loss(states, b.event, b.event_visit, b.mask, temperature=0.5)
    want = loop_contrastive_loss(states, b.event, b.event_visit, 0.5)
    assert got.item() == pytest.approx(want.item(), **APPROX)


def test_contrastive_without_positive_pairs_is_zero_with_gradient():
    states = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 2, dtype=torch.bool)
    last = torch.tensor([1, 1, 1])
    for event in (torch.tensor([0, 0, 0]), torch.tensor([1, 0, 0])):
        loss = LF.supervised_contrastive_loss(states, event, last, mask)
        loss.backward()
        assert loss.item() == 0.0 and torch.all(states.grad == 0)
        states.grad = None


def test_contrastive_is_invariant_to_the_scale_of_states():
    b = random_batch(1, batch_size=8)
    states = b.logits(4, padding=0.0)
    args = (b.event, b.event_visit, b.mask)
    one = LF.supervised_contrastive_loss(states, *args)
    scaled = LF.supervised_contrastive_loss(7.5 * states, *args)
    assert scaled.item() == pytest.approx(one.item(), **APPROX)
