"""The native kernel of the next-visit code loss (auxiliary._PairCodeBCE) against its PyTorch implementation.

Both compute, per pair of visits, the mean BCE over the vocabulary of the logits at the first visit against the
codes of the next, and the gradient in the whole ``[R, V]`` logit table (zero outside the pairs' rows). They must
agree to the rounding of their types — extreme logits included — and the loss must not depend on which one ran.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts, natively_and_without

from ehrseq.losses.functional.auxiliary import next_visit_code_loss, next_visit_code_loss_from_indices
from ehrseq.models.distributions import _native

pytestmark = pytest.mark.skipif(not _native.available(), reason="needs the native kernels")


def _case(total: int, vocabulary: int, pairs: int, listed: int, dtype: torch.dtype, seed: int, scale: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(total, vocabulary, generator=g, dtype=torch.float64)
    if total and vocabulary >= 4:
        logits[0, :4] = torch.tensor([60.0, -60.0, 120.0, -120.0])  # softplus linear, e^z under- and overflowing
    rows = torch.randperm(total, generator=g)[:pairs]
    # listed codes in any order, with repeats (few distinct codes) and the padding index 0 among them
    codes = torch.randint(0, min(vocabulary, 1 + 2 * listed), (rows.shape[0], listed), generator=g)
    return logits.to(dtype), rows, codes


def _reference(logits, rows, codes, grad):
    """The definition, by autograd: (1/V) Σ_v [softplus(z_v) − y_v z_v] per pair with y the multi-hot target of the
    listed codes (each once, the padding index 0 never), and its gradient."""
    table = logits.detach().clone().requires_grad_()
    z = table[rows]
    target = torch.zeros_like(z).scatter_(1, codes, 1.0)
    target[:, 0] = 0.0
    loss = (F.softplus(z) - target * z).sum(1) / z.shape[1]
    return loss.detach(), torch.autograd.grad((loss * grad).sum(), table)[0]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_the_native_kernel_equals_the_definition(dtype, tolerance):
    logits, rows, codes = _case(3000, 50, 1700, 6, dtype, seed=1)
    grad = torch.randn(rows.shape[0], generator=torch.Generator().manual_seed(2), dtype=dtype)
    loss, gradient = _native.pair_code_bce(logits, rows, codes), _native.pair_code_bce_gradient(logits, rows, codes, grad)
    expected_loss, expected_gradient = _reference(logits, rows, codes, grad)
    torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gradient, expected_gradient, rtol=tolerance, atol=tolerance * float(expected_gradient.abs().max()))
    others = torch.ones(logits.shape[0], dtype=torch.bool).index_fill_(0, rows, False)
    assert (gradient[others] == 0).all()


@settings(max_examples=25, deadline=None)
@given(total=st.integers(1, 60), vocabulary=st.integers(1, 40), pairs=st.integers(0, 60), listed=st.integers(0, 5),
       seed=st.integers(0, 10_000))
def test_native_and_definition_agree_on_any_shape(total, vocabulary, pairs, listed, seed):
    logits, rows, codes = _case(total, vocabulary, min(pairs, total), listed, torch.float64, seed)
    grad = torch.randn(rows.shape[0], dtype=torch.float64)
    expected_loss, expected_gradient = _reference(logits, rows, codes, grad)
    torch.testing.assert_close(_native.pair_code_bce(logits, rows, codes), expected_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_native.pair_code_bce_gradient(logits, rows, codes, grad), expected_gradient,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("from_indices", [True, False])
def test_the_code_loss_and_its_gradient_do_not_depend_on_which_implementation_ran(from_indices):
    g = torch.Generator().manual_seed(3)
    b, m, v = 12, 9, 30
    mask = torch.arange(m).unsqueeze(0) < torch.randint(1, m + 1, (b, 1), generator=g)
    codes = torch.randint(0, v, (b, m, 4), generator=g)
    targets = torch.zeros(b, m, v).scatter_(-1, codes, 1.0)
    targets[..., 0] = 0.0

    def run():
        logits = (3.0 * torch.randn(b, m, v, generator=torch.Generator().manual_seed(4), dtype=torch.float64)).requires_grad_()
        loss = (next_visit_code_loss_from_indices(logits, codes, mask) if from_indices
                else next_visit_code_loss(logits, targets.to(torch.float64), mask))
        return loss, torch.autograd.grad(loss, logits)[0]

    for got, expected in zip(*natively_and_without(run)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    logits, rows, codes = _case(5000, 20, 4000, 3, torch.float32, seed=6)
    grad = torch.ones(rows.shape[0])
    results = at_thread_counts(lambda: (_native.pair_code_bce(logits, rows, codes),
                                        _native.pair_code_bce_gradient(logits, rows, codes, grad)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_mismatched_inputs_are_refused_and_other_types_left_to_pytorch():
    logits, rows, codes = _case(20, 5, 8, 2, torch.float64, seed=7)
    with pytest.raises(ValueError, match="mismatched"):
        _native.pair_code_bce(logits, rows, codes[:-1])
    with pytest.raises(ValueError, match="mismatched"):
        _native.pair_code_bce(logits, rows, codes[:, 0])
    with pytest.raises(ValueError, match="per pair"):
        _native.pair_code_bce_gradient(logits, rows, codes, torch.ones(3, dtype=torch.float64))
    assert _native.pair_code_bce(logits.to(torch.bfloat16), rows, codes) is None
    with _native.disabled():
        assert _native.pair_code_bce(logits, rows, codes) is None
