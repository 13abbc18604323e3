"""Reduction and visit weighting shared by all losses, against explicit loop definitions."""

import pytest
import torch

from ehrseq.errors import ShapeError
from ehrseq.losses.functional._aggregate import aggregate_patients, aggregate_visits


def _example():
    terms = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0], [7.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    weight = torch.tensor([1.0, 3.0, 5.0])
    return terms, mask, weight


def test_patient_weighting_is_weighted_mean_of_per_patient_means():
    terms, mask, weight = _example()
    # patient 0: mean(1,2,3)=2, patient 1: 4, patient 2 has no visit and is ignored
    assert aggregate_visits(terms, mask).item() == pytest.approx((2 + 4) / 2)
    assert aggregate_visits(terms, mask, weight=weight).item() == pytest.approx((1 * 2 + 3 * 4) / 4)
    assert aggregate_visits(terms, mask, within_patient="sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate_visits(terms, mask, weight=weight, reduction="sum").item() == pytest.approx(2 + 12)
    assert aggregate_visits(terms, mask, reduction="none").tolist() == [2.0, 4.0, 0.0]


def test_visit_weighting_gives_each_real_visit_weight_one():
    terms, mask, weight = _example()
    assert aggregate_visits(terms, mask, visit_weighting="visit").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    expected = (1 * (1 + 2 + 3) + 3 * 4) / (1 * 3 + 3 * 1)
    assert aggregate_visits(terms, mask, weight=weight, visit_weighting="visit").item() == pytest.approx(expected)
    none = aggregate_visits(terms, mask, visit_weighting="visit", reduction="none")
    assert none.tolist() == [[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_padding_values_never_leak_even_when_non_finite_gradients_are_not_needed():
    terms, mask, _ = _example()
    poisoned = terms.clone()
    poisoned[~mask] = 1e30
    assert aggregate_visits(poisoned, mask).item() == aggregate_visits(terms, mask).item()


def test_empty_batch_gives_zero_with_working_backward():
    terms = torch.randn(2, 3, requires_grad=True)
    loss = aggregate_visits(terms, torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(terms.grad == 0)


def test_bad_arguments_are_named():
    terms, mask, _ = _example()
    with pytest.raises(ValueError, match="reduction"):
        aggregate_visits(terms, mask, reduction="avg")
    with pytest.raises(ValueError, match="visit_weighting"):
        aggregate_visits(terms, mask, visit_weighting="patients")
    with pytest.raises(ShapeError, match="mask"):
        aggregate_visits(terms, mask[:, :2])
    with pytest.raises(ShapeError, match="weight"):
        aggregate_patients(torch.ones(3), weight=torch.ones(2))
