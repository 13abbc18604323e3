"""The native kernel of the piecewise-linear hazard's likelihood against the family's PyTorch methods.

``PiecewiseLinearHazard.log_likelihood`` with one duration per element runs the kernel on CPU; the reference is
log f / log S of the family (``SurvivalDistribution.log_likelihood``: its ``log_density`` where observed, else its
``log_survival``). Both must agree to the rounding of their types, values and gradients — durations inside bins,
at the knots, beyond the grid, hazards underflowing and overflowing, another rate unit, batches of several dims —
and the likelihood loss must not depend on which one ran.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts, natively_and_without

from ehrseq.losses.functional import survival_nll
from ehrseq.models.distributions import PiecewiseLinearHazard, _native
from ehrseq.models.distributions.base import SurvivalDistribution

pytestmark = pytest.mark.skipif(not _native.available(), reason="needs the native kernels")

GRID = [0.0, 30.0, 90.0, 180.0, 365.0, 730.0, 1095.0, 1825.0]


def _case(shape: tuple[int, ...], grid: list[float], dtype: torch.dtype, seed: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    knots = torch.tensor(grid, dtype=torch.float64)
    logits = scale * torch.randn(*shape, len(grid), generator=g, dtype=torch.float64) - 4.0
    y = torch.rand(*shape, generator=g, dtype=torch.float64) * float(knots[-1]) * 1.4 + 1e-3
    flat_logits, flat_y = logits.view(-1, len(grid)), y.view(-1)
    if flat_y.numel() >= 12:
        at_knots = min(len(grid) - 1, 8)
        flat_y[:at_knots] = knots[1 : at_knots + 1]  # at the knots
        flat_y[11] = knots[-1]  # at the last knot
        flat_logits[8] = 40.0  # S underflows after the first bin
        flat_logits[9] = -90.0  # no hazard at all
        flat_y[10] = float(knots[-1]) * 1.0000001  # just beyond the grid
    observed = torch.rand(*shape, generator=g) < 0.5
    return logits.to(dtype), torch.tensor(grid, dtype=dtype), y.to(dtype), observed


def _values_and_gradients(logits, grid, y, observed, rate_unit, native: bool):
    table = logits.detach().clone().requires_grad_()
    distribution = PiecewiseLinearHazard(table, grid, rate_unit=rate_unit)
    u, flags = y.unsqueeze(-1), observed.unsqueeze(-1)
    value = (distribution.log_likelihood(u, flags) if native
             else SurvivalDistribution.log_likelihood(distribution, u, flags)).squeeze(-1)
    weights = torch.linspace(-1.0, 1.0, value.numel(), dtype=value.dtype).view(value.shape)
    return value.detach(), torch.autograd.grad((value * weights).sum(), table)[0]


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 5e-6)])
@pytest.mark.parametrize("rate_unit", [1.0, 30.0])
@pytest.mark.parametrize("shape", [(3000,), (40, 25)])
def test_the_native_kernel_equals_the_family_methods(dtype, tolerance, rate_unit, shape):
    case = _case(shape, GRID, dtype, seed=1)
    (value, gradient), (expected_value, expected_gradient) = (
        _values_and_gradients(*case, rate_unit, native) for native in (True, False))
    torch.testing.assert_close(value, expected_value, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(gradient, expected_gradient, rtol=tolerance, atol=tolerance * float(expected_gradient.abs().max()))


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 50), bins=st.integers(1, 40), seed=st.integers(0, 10_000), scale=st.sampled_from([0.5, 3.0, 12.0]))
def test_native_and_pytorch_agree_on_any_grid(rows, bins, seed, scale):
    widths = torch.rand(bins, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.05
    grid = [0.0, *(widths.cumsum(0) * 50.0).tolist()]
    case = _case((rows,), grid, torch.float64, seed, scale)
    (value, gradient), (expected_value, expected_gradient) = (
        _values_and_gradients(*case, 7.0, native) for native in (True, False))
    torch.testing.assert_close(value, expected_value, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-11, atol=1e-11 * float(expected_gradient.abs().max().clamp_min(1.0)))


def test_the_likelihood_loss_does_not_depend_on_which_implementation_ran():
    logits, grid, y, observed = _case((64, 9), GRID, torch.float64, seed=3)
    mask = torch.arange(9).unsqueeze(0) < torch.randint(1, 10, (64, 1), generator=torch.Generator().manual_seed(4))
    event = observed[:, 0].long()

    def run():
        table = logits.clone().requires_grad_()
        loss = survival_nll(PiecewiseLinearHazard(table, grid, rate_unit=30.0), y, event, mask)
        return loss.detach(), torch.autograd.grad(loss, table)[0]

    for got, expected in zip(*natively_and_without(run)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    case = _case((5000,), GRID, torch.float32, seed=6)
    results = at_thread_counts(lambda: _values_and_gradients(*case, 1.0, True))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_other_calls_run_the_family_methods():
    """Several durations per element, a duration that needs a gradient, or more bins than the kernel takes: the
    PyTorch methods (the same values)."""
    logits, grid, y, observed = _case((30,), GRID, torch.float64, seed=7)
    distribution = PiecewiseLinearHazard(logits, grid)
    several = torch.stack([y, 2.0 * y], dim=-1)
    torch.testing.assert_close(distribution.log_likelihood(several, observed.unsqueeze(-1)),
                               SurvivalDistribution.log_likelihood(distribution, several, observed.unsqueeze(-1)))
    u = y.unsqueeze(-1).clone().requires_grad_()
    value = distribution.log_likelihood(u, observed.unsqueeze(-1))
    assert torch.autograd.grad(value.sum(), u)[0].abs().sum() > 0
    many = torch.linspace(0.0, 100.0, _native.max_bins() + 2, dtype=torch.float64)
    wide = PiecewiseLinearHazard(torch.zeros(4, many.numel(), dtype=torch.float64), many)
    assert _native.linear_hazard_log_likelihood(wide.logits, many, torch.ones(4, dtype=torch.float64),
                                                torch.ones(4, dtype=torch.bool), 0.0) is None
    torch.testing.assert_close(wide.log_likelihood(torch.ones(4, 1, dtype=torch.float64), torch.ones(4, 1, dtype=torch.bool)),
                               SurvivalDistribution.log_likelihood(wide, torch.ones(4, 1, dtype=torch.float64),
                                                                   torch.ones(4, 1, dtype=torch.bool)))
    with pytest.raises(ValueError, match="mismatched"):
        _native.linear_hazard_log_likelihood(logits, grid, y[:-1], observed, 0.0)
