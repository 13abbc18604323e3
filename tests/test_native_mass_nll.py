"""The native kernel of the PMF (DeepHit) likelihood against its PyTorch implementation in ``pmf_nll``.

Both compute, per real visit, −log of the mass its target keeps (its own (cause, bin) for an event, the tail for an
event beyond the grid, every (cause, bin > κ) and the tail when censored) from one softmax over K·L + 1 logits, and
the gradient in the whole ``[B, M, K·L + 1]`` logit table (zero at padded visits). They must agree to the rounding
of their types — extreme logits, NaN at padded visits, bin weights and every reduction included.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts

from ehrseq.losses.functional.deephit import pmf_nll
from ehrseq.models.distributions import _native

pytestmark = pytest.mark.skipif(not _native.available(), reason="needs the native kernels")


def _case(b: int, m: int, causes: int, bins: int, dtype: torch.dtype, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(b, m, causes * bins + 1, generator=g, dtype=torch.float64)
    mask = torch.arange(m).unsqueeze(0) < torch.randint(0, m + 1, (b, 1), generator=g)
    if b and m:
        mask[0, 0] = True
        logits[0, 0, :3 if causes * bins >= 3 else 1] = 90.0  # softmax saturated
    logits[~mask] = math.nan  # padding is never read
    kappa = torch.randint(0, bins + 1, (b, m), generator=g)  # bins included: beyond the grid
    event = torch.randint(0, causes + 1, (b,), generator=g)
    return logits.to(dtype), kappa, event, mask


def _both(logits, kappa, event, mask, causes, **options):
    results = []
    for native in (True, False):
        table = logits.detach().clone().requires_grad_()
        if native:
            value = pmf_nll(table, kappa, event, mask, num_causes=causes, **options)
        else:
            with _native.disabled():
                value = pmf_nll(table, kappa, event, mask, num_causes=causes, **options)
        gradient = torch.autograd.grad(value.sum(), table)[0]
        results.append((value.detach(), gradient))
    return results


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("causes", [1, 3])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_the_native_kernel_equals_the_pytorch_implementation(dtype, tolerance, causes, reduction):
    logits, kappa, event, mask = _case(300, 12, causes, 8, dtype, seed=1)
    weights = torch.rand(9, generator=torch.Generator().manual_seed(2), dtype=dtype)
    (value, gradient), (expected_value, expected_gradient) = _both(
        logits, kappa, event, mask, causes, bin_weights=weights, reduction=reduction)
    torch.testing.assert_close(value, expected_value, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gradient, expected_gradient, rtol=tolerance, atol=tolerance)
    assert (gradient[~mask] == 0).all()


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 12), m=st.integers(1, 7), causes=st.integers(1, 3), bins=st.integers(1, 9),
       seed=st.integers(0, 10_000), scale=st.sampled_from([0.5, 3.0, 40.0]))
def test_native_and_pytorch_agree_on_any_shape(b, m, causes, bins, seed, scale):
    (value, gradient), (expected_value, expected_gradient) = _both(
        *_case(b, m, causes, bins, torch.float64, seed, scale), causes, reduction="sum")
    torch.testing.assert_close(value, expected_value, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-11, atol=1e-11)


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    logits, kappa, event, mask = _case(600, 20, 2, 16, torch.float32, seed=6)

    def run():
        table = logits.clone().requires_grad_()
        value = pmf_nll(table, kappa, event, mask, num_causes=2, reduction="sum")
        return value.detach(), torch.autograd.grad(value, table)[0]

    results = at_thread_counts(run)
    assert torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=0.0)  # the sum's order may differ


def test_mismatched_inputs_are_refused_and_other_types_left_to_pytorch():
    logits = torch.randn(10, 7, dtype=torch.float64)
    rows, index, threshold = torch.tensor([0, 3, 5]), torch.tensor([2, -1, 6]), torch.tensor([1, 2, 3])
    loss, sums = _native.mass_nll(logits, rows, index, threshold, 3)
    assert loss.shape == (3,) and sums.shape == (3, 2)
    torch.testing.assert_close(loss[0], torch.logsumexp(logits[0], 0) - logits[0, 2])
    with pytest.raises(ValueError, match="mismatched"):
        _native.mass_nll(logits, rows, index[:2], threshold, 3)
    with pytest.raises(RuntimeError, match="status -2"):
        _native.mass_nll(logits, rows, index, threshold, 4)  # 7 outputs are not K·4 + 1
    assert _native.mass_nll(logits.to(torch.bfloat16), rows, index, threshold, 3) is None
