"""The native kernel of the Weibull-mixture likelihood against its PyTorch implementation.

``PackedWeibullMixture.selected_log_likelihood`` (MENSA's per-event marginals in ``mensa_loss``) reads the packed
parameter rows of the real visits in place on CPU and writes the gradient once into the whole ``[B, M, E, 3C]``
table; the reference is the same distribution indexed by the visits, whose ``log_likelihood`` runs
``_MixtureLogLikelihood`` (with the kernels switched off). Both must agree to the rounding of their types — values
and gradients, padded visits holding NaN, patients not at risk for an event, observed and censored events,
hazards capped or underflowing, several numbers of components — and the kernel must leave to PyTorch what it does
not take.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts, natively_and_without

from ehrseq.losses.functional import mensa_loss
from ehrseq.models.distributions import MultiEvent, _native
from ehrseq.models.distributions.base import LeadingRows
from ehrseq.models.distributions.mixture import PackedWeibullMixture, _NativeMixtureLikelihood

pytestmark = pytest.mark.skipif(not _native.available(), reason="needs the native kernels")

OFFSET = math.log(365.25)


def _packed(b: int, m: int, events: int, components: int, dtype: torch.dtype, seed: int, scale: float = 1.0):
    """Packed parameters ``[B, M, E, 3C]`` (gates, log-scales less OFFSET, log-shapes) and a visit mask whose
    padded visits hold NaN."""
    g = torch.Generator().manual_seed(seed)
    gates = 2.0 * scale * torch.randn(b, m, events, components, generator=g, dtype=torch.float64)
    log_scales = 0.6 * scale * torch.randn(b, m, events, components, generator=g, dtype=torch.float64)
    log_shapes = 0.4 * scale * torch.randn(b, m, events, components, generator=g, dtype=torch.float64)
    packed = torch.cat([gates, log_scales, log_shapes], dim=-1)
    mask = torch.arange(m).unsqueeze(0) < torch.randint(1, m + 1, (b, 1), generator=g)
    packed[~mask] = math.nan  # padding is never read
    return packed.to(dtype), mask


def _targets(b: int, m: int, events: int, dtype: torch.dtype, seed: int):
    """Visit times, event times ``[B, E]`` (NaN: not at risk; some before a patient's later visits) and flags."""
    g = torch.Generator().manual_seed(seed + 1)
    time = torch.cumsum(torch.rand(b, m, generator=g, dtype=torch.float64) * 120.0, dim=1)
    event_times = time[:, -1:] * torch.rand(b, events, generator=g, dtype=torch.float64) * 1.3 + 1.0
    event_times[torch.rand(b, events, generator=g) < 0.15] = math.nan
    flags = (torch.rand(b, events, generator=g) < 0.5) & event_times.isfinite()
    return time.to(dtype), event_times.to(dtype), flags


def _mensa(packed, mask, time, event_times, flags, **options):
    """The MENSA loss and its gradient in the packed parameters."""
    table = packed.detach().clone().requires_grad_()
    multi = MultiEvent.stacked(PackedWeibullMixture(table, OFFSET))
    loss = mensa_loss(multi, event_times, flags, time, mask, **options)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
    return loss.detach(), torch.autograd.grad((loss * weights).sum(), table)[0]


def _ran_natively(value: torch.Tensor) -> bool:
    """Whether the graph of ``value`` holds the native kernel's node."""
    seen, stack = set(), [value.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "_NativeMixtureLikelihoodBackward":
            return True
        stack.extend(next_node for next_node, _ in node.next_functions)
    return False


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("components", [1, 3, 5])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_the_mensa_loss_is_the_same_with_the_kernel(dtype, tolerance, components, reduction):
    packed, mask = _packed(70, 9, 3, components, dtype, seed=components)
    time, event_times, flags = _targets(70, 9, 3, dtype, seed=components)
    (loss, gradient), (expected_loss, expected_gradient) = natively_and_without(
        lambda: _mensa(packed, mask, time, event_times, flags, reduction=reduction))
    torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gradient, expected_gradient, rtol=tolerance, atol=tolerance)
    assert (gradient[~mask] == 0).all() and gradient[mask].abs().sum() > 0


def test_trajectories_and_the_event_free_state_keep_their_terms():
    packed, mask = _packed(40, 6, 3, 2, torch.float64, seed=3)
    time, event_times, flags = _targets(40, 6, 3, torch.float64, seed=3)
    (loss, gradient), (expected_loss, expected_gradient) = natively_and_without(
        lambda: _mensa(packed, mask, time, event_times, flags, trajectories=[(0, 2), (1, 2)], trajectory_weight=0.7))
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-12, atol=1e-12)


def _selected(packed, mask, u, observed, dtype):
    """Values ``[N, E, 1]`` of the selected visits and the gradient of their weighted sum in ``packed``."""
    table = packed.detach().clone().requires_grad_()
    value = PackedWeibullMixture(table, OFFSET).selected_log_likelihood(LeadingRows.of(mask), u, observed)
    weights = torch.linspace(-1.0, 1.0, value.numel(), dtype=dtype).view(value.shape)
    return value, torch.autograd.grad((value * weights).sum(), table)[0]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_extreme_parameters_and_durations_agree(dtype, tolerance):
    """Durations from 1e-6 to 1e6 days, log-shapes up to ±4 (the cap of log H binds: H would overflow; e^{−H} and
    far components' responsibilities underflow) and gates up to ±50."""
    packed, mask = _packed(60, 5, 2, 4, torch.float64, seed=7, scale=4.0)
    packed[..., :4] = packed[..., :4].clamp(-50.0, 50.0)
    n = int(mask.sum())
    g = torch.Generator().manual_seed(8)
    u = torch.exp(torch.empty(n, 2, 1, dtype=torch.float64).uniform_(math.log(1e-6), math.log(1e6), generator=g))
    observed = torch.rand(n, 2, 1, generator=g) < 0.5
    case = (packed.to(dtype), mask, u.to(dtype), observed, dtype)
    (value, gradient), (expected_value, expected_gradient) = natively_and_without(lambda: _selected(*case))
    assert _ran_natively(value) and not _ran_natively(expected_value)
    torch.testing.assert_close(value, expected_value, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gradient, expected_gradient, rtol=tolerance, atol=tolerance)
    assert torch.isfinite(gradient[mask]).all()


def test_without_gradients_the_kernel_gives_the_same_values():
    packed, mask = _packed(30, 5, 3, 3, torch.float32, seed=9)
    n = int(mask.sum())
    u = torch.linspace(0.5, 2000.0, n * 3).view(n, 3, 1)
    observed = torch.rand(n, 3, 1, generator=torch.Generator().manual_seed(10)) < 0.5
    value, _ = _selected(packed, mask, u, observed, torch.float32)
    with torch.no_grad():
        again = PackedWeibullMixture(packed, OFFSET).selected_log_likelihood(mask, u, observed)
    assert torch.equal(value.detach(), again)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 9), m=st.integers(1, 6), events=st.integers(1, 4), components=st.integers(1, 7),
       seed=st.integers(0, 10_000), scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_native_and_pytorch_agree_on_any_shape(b, m, events, components, seed, scale):
    packed, mask = _packed(b, m, events, components, torch.float64, seed, scale)
    n = int(mask.sum())
    g = torch.Generator().manual_seed(seed)
    u = 1.0 + 900.0 * torch.rand(n, events, 1, generator=g, dtype=torch.float64)
    observed = torch.rand(n, events, 1, generator=g) < 0.5
    (value, gradient), (expected_value, expected_gradient) = natively_and_without(
        lambda: _selected(packed, mask, u, observed, torch.float64))
    torch.testing.assert_close(value, expected_value, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-11, atol=1e-11)


def test_the_gradient_passes_gradcheck():
    packed, mask = _packed(6, 4, 2, 3, torch.float64, seed=11)
    packed[~mask] = 0.0  # gradcheck perturbs every entry, the unselected ones included (their gradient is 0)
    real = LeadingRows.of(mask)
    n = real.rows.shape[0]
    g = torch.Generator().manual_seed(12)
    y = 10.0 + 700.0 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    observed = torch.rand(n, 2, generator=g) < 0.5
    table = packed.view(24, 2, 9).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: _NativeMixtureLikelihood.apply(t, real.rows, y, observed, OFFSET),
                                    (table,))


def test_double_backward_is_refused():
    packed, mask = _packed(5, 3, 2, 3, torch.float64, seed=13)
    table = packed.clone().requires_grad_()
    n = int(mask.sum())
    value = PackedWeibullMixture(table, OFFSET).selected_log_likelihood(
        mask, torch.full((n, 2, 1), 100.0, dtype=torch.float64), torch.ones(n, 2, 1, dtype=torch.bool))
    assert _ran_natively(value)
    (gradient,) = torch.autograd.grad(value.square().sum(), table, create_graph=True)  # its incoming gradient 2·value
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gradient[mask].sum().backward()


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    packed, mask = _packed(300, 16, 3, 3, torch.float32, seed=14)
    time, event_times, flags = _targets(300, 16, 3, torch.float32, seed=14)
    results = at_thread_counts(lambda: _mensa(packed, mask, time, event_times, flags, reduction="none"))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def _fallback_case(components: int = 3, dtype: torch.dtype = torch.float64):
    packed, mask = _packed(8, 4, 2, components, dtype, seed=15)
    n = int(mask.sum())
    u = torch.linspace(1.0, 900.0, n * 2, dtype=dtype).view(n, 2, 1)
    return packed, mask, u, torch.rand(n, 2, 1, generator=torch.Generator().manual_seed(16)) < 0.5


@pytest.mark.parametrize("case", ["components", "layout", "duration grad", "zero duration", "bfloat16"])
def test_what_the_kernel_does_not_take_runs_in_pytorch(case):
    packed, mask, u, observed = _fallback_case(_native.max_components() + 1 if case == "components" else 3,
                                               torch.bfloat16 if case == "bfloat16" else torch.float64)
    table = packed.clone().requires_grad_()
    parameters = table.transpose(0, 1).contiguous().transpose(0, 1) if case == "layout" else table
    if case == "duration grad":
        u.requires_grad_()
    if case == "zero duration":
        u = u.clone()
        u[0, 0, 0] = 0.0
    value = PackedWeibullMixture(parameters, OFFSET).selected_log_likelihood(mask, u, observed)
    assert not _ran_natively(value)
    with _native.disabled():
        expected = PackedWeibullMixture(parameters, OFFSET)[mask].log_likelihood(u, observed)
    torch.testing.assert_close(value, expected, rtol=0.0, atol=0.0)
    gradient, expected_gradient = (torch.autograd.grad(v.sum(), table)[0] for v in (value, expected))
    torch.testing.assert_close(gradient, expected_gradient, rtol=0.0, atol=0.0, equal_nan=True)


def test_an_index_other_than_a_mask_is_applied_by_indexing():
    packed, mask, u, observed = _fallback_case()
    distribution = PackedWeibullMixture(packed.nan_to_num(), OFFSET)
    value = distribution.selected_log_likelihood((slice(None), -1), 50.0, observed[0, :, :1])
    assert not _ran_natively(value)
    torch.testing.assert_close(value, distribution[:, -1].log_likelihood(50.0, observed[0, :, :1]), rtol=0.0, atol=0.0)


def test_mismatched_inputs_are_refused_and_other_types_left_to_pytorch():
    table = torch.randn(10, 2, 9, dtype=torch.float64)
    rows, y, observed = torch.tensor([0, 3, 5]), torch.full((3, 2), 40.0, dtype=torch.float64), torch.ones(3, 2) > 0
    value, unit = _native.weibull_mixture_log_likelihood(table, rows, y, observed, 0.0)
    expected = PackedWeibullMixture(table[rows], 0.0).log_likelihood(y.unsqueeze(-1), observed.unsqueeze(-1))
    torch.testing.assert_close(value, expected.squeeze(-1))
    assert unit is None
    with pytest.raises(ValueError, match="mismatched"):
        _native.weibull_mixture_log_likelihood(table, rows, y[:2], observed, 0.0)
    _, unit = _native.weibull_mixture_log_likelihood(table, rows, y, observed, 0.0, gradient=True)
    with pytest.raises(ValueError, match="one incoming gradient"):
        _native.weibull_mixture_gradient(unit, rows, torch.ones(3, dtype=torch.float64), 10)
    assert _native.weibull_mixture_log_likelihood(table.to(torch.bfloat16), rows, y, observed, 0.0) is None
    assert _native.weibull_mixture_log_likelihood(table[..., :8], rows, y, observed, 0.0) is None  # not 3·C
