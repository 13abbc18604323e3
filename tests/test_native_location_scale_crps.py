"""The native kernel of the log-normal and Weibull Survival-CRPS against its PyTorch reference.

``crps._pytorch_location_scale_crps`` (Gauss–Legendre panels as whole-tensor operations, itself held to scipy
quadrature in test_losses_continuous.py) and ``_native.location_scale_crps`` (the same windows, integrands, series
and saturated parts per row) must agree to the rounding of their types — value and gradient in μ and log σ — on
every kind of row: events, right- and interval-censored, y far below and far above the median, sharp and flat
laws; and the whole loss with its gradients must not depend on which one ran.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts, natively_and_without

from ehrseq.losses.functional import crps
from ehrseq.models.distributions import LogNormal, Weibull, _native
from ehrseq.models.distributions._math import gauss_legendre

NOISES = {"normal": crps.NORMAL, "min_gumbel": crps.MIN_GUMBEL}

pytestmark = pytest.mark.skipif(not _native.available(), reason="needs the native kernels")


def _rows(rows: int, dtype: torch.dtype, seed: int, noise: str):
    """μ, log σ, y, a, has_tail of ``rows`` rows: medians of 30 days … 10 years, σ ∈ [0.1, 3] (Weibull k ∈ [0.25, 8]),
    y ∈ [1, 10⁴] days, a third each events, right- and interval-censored; the first rows extreme."""
    g = torch.Generator().manual_seed(seed)
    uniform = lambda lo, hi: torch.empty(rows, dtype=torch.float64).uniform_(lo, hi, generator=g)  # noqa: E731
    median = torch.exp(uniform(math.log(30.0), math.log(3650.0)))
    sigma = torch.exp(uniform(math.log(0.1), math.log(3.0))) if noise == "normal" else 1.0 / torch.exp(uniform(math.log(0.25), math.log(8.0)))
    loc = torch.log(median) if noise == "normal" else torch.log(median) - sigma * math.log(math.log(2.0))
    y = torch.exp(uniform(0.0, math.log(1e4)))
    kind = torch.randint(0, 3, (rows,), generator=g)
    start = torch.where(kind == 2, y * torch.exp(uniform(0.0, 3.0)), y)
    if rows >= 6:
        y[0], sigma[0] = 1.0, 0.1  # far below a sharp law
        y[1], sigma[1] = 1e4, 0.1  # far above it
        y[2], sigma[2] = 1.0, 3.0
        start[3] = y[3] * 1e3  # an interval bound far out
        sigma[4] = 5.0
        loc[5] = math.log(1e5)
        kind[:6] = torch.tensor([0, 0, 1, 2, 0, 2])
    has_tail = kind != 1
    return tuple(t.to(dtype) for t in (loc, torch.log(sigma), y, start)) + (has_tail,)


def _both(case, noise: str, points: int = 32):
    loc, log_scale, y, start, has_tail = case
    reference = crps._pytorch_location_scale_crps(loc, log_scale, y, start, has_tail, NOISES[noise], points)
    native = crps._native_location_scale_crps(loc, log_scale, y, start, has_tail, NOISES[noise], points)
    assert native is not None, _native.status()
    return native, reference


def _assert_agree(native, reference, tolerance: float) -> None:
    """Values to ``tolerance`` relative; gradients to ``tolerance`` of the batch's largest (they cross zero)."""
    torch.testing.assert_close(native[0], reference[0], rtol=tolerance, atol=0.0)
    for got, expected in zip(native[1:], reference[1:]):
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * float(expected.abs().max()))


@pytest.mark.parametrize("noise", sorted(NOISES))
def test_the_native_kernel_equals_the_pytorch_reference_in_float64(noise):
    native, reference = _both(_rows(4000, torch.float64, seed=1, noise=noise), noise)
    _assert_agree(native, reference, 1e-10)


@pytest.mark.parametrize("noise", sorted(NOISES))
def test_in_float32_both_are_as_close_to_float64_as_rounding_allows(noise):
    """In float32 neither is the reference of the other: each is within float32 rounding of the float64 result (down
    to values near float32's smallest normal number, where both integrands are floored)."""
    case = _rows(4000, torch.float64, seed=2, noise=noise)
    exact = crps._pytorch_location_scale_crps(*case, NOISES[noise], 32)
    single = tuple(t.float() if t.is_floating_point() else t for t in case)
    native, reference = _both(single, noise)
    finite = torch.isfinite(reference[0]) & (exact[0] < 1e30)
    for computed in (native, reference):
        torch.testing.assert_close(computed[0][finite].double(), exact[0][finite], rtol=2e-4, atol=1e-30)
        for got, expected in zip(computed[1:], exact[1:]):
            scale = float(expected[finite].abs().max())
            torch.testing.assert_close(got[finite].double(), expected[finite], rtol=2e-4, atol=1e-6 * scale)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(0, 40), seed=st.integers(0, 10_000), noise=st.sampled_from(sorted(NOISES)),
       points=st.integers(4, 48))
def test_native_and_pytorch_agree_on_any_batch_and_rule(rows, seed, noise, points):
    native, reference = _both(_rows(rows, torch.float64, seed, noise), noise, points)
    if rows:
        _assert_agree(native, reference, 1e-10)
    else:
        assert all(t.shape == (0,) for t in native)


@pytest.mark.parametrize("family", ["lognormal", "weibull"])
def test_the_loss_and_its_gradients_do_not_depend_on_which_implementation_ran(family):
    g = torch.Generator().manual_seed(3)
    first = (torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.5 + 5.0).requires_grad_()
    second = (torch.randn(200, 3, generator=g, dtype=torch.float64) * 0.4).requires_grad_()
    y = (torch.rand(200, 3, generator=g, dtype=torch.float64) * 2000.0 + 1.0).requires_grad_()
    observed = torch.rand(200, 3, generator=g) < 0.5
    upper = torch.where(torch.rand(200, 3, generator=g) < 0.5, y.detach() * 2.0, torch.full_like(y, math.inf))

    def run():
        distribution = LogNormal(first, second) if family == "lognormal" else Weibull(first, second)
        value = crps.survival_crps_elementwise(distribution, y, observed, upper)
        return (value.sum(), *torch.autograd.grad(value.sum(), (first, second, y)))

    for got, expected in zip(*natively_and_without(run)):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_nan_parameters_give_nan_never_a_number():
    case = list(_rows(8, torch.float64, seed=4, noise="normal"))
    case[0][2] = math.nan
    case[1][5] = math.nan
    native, _ = _both(tuple(case), "normal")
    for output in native:
        assert torch.isnan(output[[2, 5]]).all() and torch.isfinite(output[[0, 1, 3, 4, 6, 7]]).all()


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    case = _rows(5000, torch.float32, seed=6, noise="min_gumbel")
    results = at_thread_counts(lambda: _both(case, "min_gumbel")[0])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_mismatched_inputs_are_refused_and_other_types_left_to_pytorch():
    loc, log_scale, y, start, _ = _rows(10, torch.float64, seed=7, noise="normal")
    rule = gauss_legendre(8, torch.float64, torch.device("cpu"))
    with pytest.raises(ValueError, match="mismatched"):
        _native.location_scale_crps("normal", loc, log_scale[:-1], y, start, rule, None)
    with pytest.raises(ValueError, match="mismatched"):
        _native.location_scale_crps("normal", loc, log_scale, y, start, (rule[0], rule[1][:-1]), None)
    half = [t.to(torch.bfloat16) for t in (loc, log_scale, y, start)]
    assert _native.location_scale_crps("normal", *half, rule, None) is None
    with _native.disabled():
        assert _native.location_scale_crps("normal", loc, log_scale, y, start, rule, None) is None


@pytest.mark.parametrize("family", [LogNormal, Weibull])
def test_a_second_derivative_is_refused_not_silently_wrong(family):
    """The gradient is formed from quantities of the forward pass: differentiating it again would miss terms."""
    first = torch.full((5,), 5.0, dtype=torch.float64, requires_grad=True)
    second = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    y = torch.full((5,), 100.0, dtype=torch.float64)
    value = crps.survival_crps_elementwise(family(first, second), y, torch.ones(5, dtype=torch.bool)).sum()
    (gradient,) = torch.autograd.grad(value, first, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(gradient.sum(), first)
