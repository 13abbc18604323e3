"""The native kernel of the constant-hazard Survival-CRPS against its PyTorch reference (grid._pytorch_crps).

Both compute the same closed-form terms; the native one fuses them into one pass per row. They must agree to
the rounding of their types on every kind of row — events, right- and interval-censored, targets before the
first knot, at the knots and beyond the grid, flat bins (ΔH = 0), survival underflowing to 0 — with and without
gradients, and the whole loss must not depend on which one ran.
"""

from __future__ import annotations

import math
import shutil
import sysconfig

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from native_runs import at_thread_counts

from ehrseq.models.distributions import PMF, LogisticHazard, PiecewiseConstantHazard, _native
from ehrseq.models.distributions import grid as grid_module

GRID = [0.0, 30.0, 90.0, 180.0, 365.0, 730.0, 1095.0, 1825.0]


def _pytorch_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "available", lambda: False)


def _rows(rows: int, bins: int, dtype: torch.dtype, seed: int, scale: float = 2.5):
    """Knot tables, steps, tail rates and targets of ``rows`` logistic-hazard rows over an uneven grid of ``bins``
    bins: (log S, S, (−ΔH, 1 − e^{−ΔH}), log λ, grid, y, start)."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.cat([torch.zeros(1, dtype=torch.float64), torch.rand(bins, generator=g, dtype=torch.float64).add(0.05).cumsum(0) * 100.0])
    logits = scale * torch.randn(rows, bins, generator=g, dtype=torch.float64)
    if rows >= 4:
        logits[0, :-1] = -200.0  # ΔH underflows to 0: flat bins, φ → 1 (the tail rate stays in range)
        logits[1] = 60.0  # S underflows to 0 after the first bin
        logits[2, ::2] = -1e-3
    drops = -torch.nn.functional.softplus(logits)
    log_s = torch.cat([torch.zeros(rows, 1, dtype=torch.float64), drops.cumsum(1)], dim=1)
    hazards = torch.sigmoid(logits)
    log_rate = torch.log(torch.nn.functional.softplus(logits[:, -1]) / (grid[-1] - grid[-2])) if bins else torch.zeros(rows)
    y = torch.rand(rows, generator=g, dtype=torch.float64) * float(grid[-1]) * 1.3 + 1e-3
    y[: min(rows, bins)] = grid[1 : min(rows, bins) + 1]  # at the knots
    kind = torch.randint(0, 3, (rows,), generator=g)
    start = torch.where(kind == 0, y, torch.where(kind == 1, torch.inf, y * (1.0 + 2.0 * torch.rand(rows, generator=g, dtype=torch.float64))))
    log_s, drops, hazards, log_rate, grid, y, start = (t.to(dtype) for t in (log_s, drops, hazards, log_rate, grid, y, start))
    return log_s, log_s.exp(), (drops, hazards), log_rate, grid, y, start


def _compare(native, reference, tolerance: float, scale: float) -> None:
    assert native is not None, _native.status()
    for got, expected in zip(native, reference):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * scale)


def test_the_native_kernel_is_built_wherever_a_c_compiler_is_found():
    """``pip install`` compiles the kernel when the compiler Python was built with is present; a build that
    silently failed would leave every CPU user on the slower path."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler):
        assert _native.available(), _native.status()
        assert _native.max_bins() >= 256
    else:
        assert not _native.available() and "not built" in _native.status()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("gradients", "cdf"), [(True, True), (True, False), (False, False)])
def test_the_native_kernel_equals_the_pytorch_reference(dtype, gradients, cdf):
    case = _rows(3000, 24, dtype, seed=1)
    native = _native.grid_crps(*case, gradients, cdf)
    log_s, _, steps, log_rate, grid, y, start = case
    reference = grid_module._pytorch_crps(log_s, log_rate, grid, y, start, gradients, steps, cdf)
    _compare(native, reference, 1e-12 if dtype == torch.float64 else 2e-5, float(grid[-1]))
    assert torch.isfinite(native[0]).all()


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(0, 40), bins=st.integers(1, 40), seed=st.integers(0, 2**16), scale=st.floats(0.1, 30.0))
def test_native_and_pytorch_agree_on_any_shape(rows, bins, seed, scale):
    case = _rows(rows, bins, torch.float64, seed, scale)
    log_s, _, steps, log_rate, grid, y, start = case
    reference = grid_module._pytorch_crps(log_s, log_rate, grid, y, start, True, steps, True)
    # absolute errors in the units of the terms: the score and its gradients are integrals over the grid's time
    # span, sums of terms up to its length that cancel to ~0 where a bin's hazard underflows (a gradient of
    # 5.6e-12 and 6.6e-12 from the two paths, terms of order 10, in a case the search found)
    _compare(_native.grid_crps(*case, True, True), reference, 1e-11, float(grid[-1]))


@pytest.mark.parametrize("cls", [LogisticHazard, PMF, PiecewiseConstantHazard])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_survival_crps_does_not_depend_on_which_implementation_ran(monkeypatch, cls, dtype):
    """The public loss on both paths (the logistic and piecewise-constant hazards hand over their own steps; the
    PMF's come from its knots): values and gradients in the logits, y and the bound."""
    g = torch.Generator().manual_seed(7)
    rows = 2500
    offset = -5.0 if cls is PiecewiseConstantHazard else 0.0
    logits = (offset + 2.5 * torch.randn(rows, len(GRID) - 1 + cls.extra_outputs, generator=g, dtype=torch.float64))
    y = torch.exp(10.0 * torch.rand(rows, generator=g, dtype=torch.float64))
    kind = torch.randint(0, 3, (rows,), generator=g)
    start = torch.where(kind == 0, y, torch.where(kind == 1, torch.inf, y * 3.0))
    results = []
    for native in (True, False):
        if not native:
            _pytorch_only(monkeypatch)
        leaves = [value.to(dtype).requires_grad_() for value in (logits, y, start)]
        value = cls(leaves[0], GRID).survival_crps(leaves[1], leaves[2])
        results.append((value.detach(), torch.autograd.grad((value * torch.linspace(0.5, 1.5, rows, dtype=dtype)).sum(), leaves)))
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(results[0][0], results[1][0], rtol=tolerance, atol=tolerance)
    for got, expected in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance * float(expected.abs().max()))


def test_an_empty_batch_has_an_empty_survival_crps_on_either_path(monkeypatch):
    for native in (True, False):
        if not native:
            _pytorch_only(monkeypatch)
        logits = torch.zeros(0, len(GRID) - 1, requires_grad=True)
        value = LogisticHazard(logits, GRID).survival_crps(torch.zeros(0), torch.zeros(0))
        value.sum().backward()
        assert value.shape == (0,) and logits.grad.shape == (0, len(GRID) - 1)


def test_grids_beyond_the_native_limit_run_the_pytorch_implementation():
    bins = _native.max_bins() + 1
    case = _rows(50, bins, torch.float64, seed=3)
    assert _native.grid_crps(*case, True, True) is None
    grid, y, start = case[4:]
    logits = torch.randn(50, bins, dtype=torch.float64, requires_grad=True)
    value = LogisticHazard(logits, grid).survival_crps(y, start)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(logits.grad).all()


def test_mismatched_inputs_are_refused_before_the_kernel_reads_them():
    log_s, knots, (drops, hazards), log_rate, grid, y, start = _rows(20, 6, torch.float64, seed=4)
    with pytest.raises(ValueError, match="mismatched"):
        _native.grid_crps(log_s, knots, (drops[:, :5], hazards), log_rate, grid, y, start, True, True)
    with pytest.raises(ValueError, match="mismatched"):
        _native.grid_crps(log_s, knots, (drops, hazards), log_rate[:-1], grid, y, start, True, True)


def test_ehrseq_native_0_turns_the_kernel_off(monkeypatch):
    monkeypatch.setenv("EHRSEQ_NATIVE", "0")
    _native._library.cache_clear()
    try:
        assert not _native.available() and "EHRSEQ_NATIVE" in _native.status()
        assert _native.grid_crps(*_rows(10, 4, torch.float64, seed=5), True, True) is None
    finally:
        monkeypatch.delenv("EHRSEQ_NATIVE")
        _native._library.cache_clear()
    assert _native.available() == (_native._library()[0] is not None)


def test_the_kernel_splits_rows_over_threads_without_changing_them():
    case = _rows(5000, 16, torch.float32, seed=6)
    results = at_thread_counts(lambda: _native.grid_crps(*case, True, True))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_rows_without_a_tail_term_have_no_gradient_in_start_or_the_tail_rate():
    """start = ∞ marks a row without a tail term: no S(a)², no tail, so no gradient in a or log λ."""
    case = list(_rows(30, 5, torch.float64, seed=8))
    case[6] = torch.full_like(case[6], math.inf)
    score, grad, rate_gradient, cdf_squared, at_a = _native.grid_crps(*case, True, True)
    assert (at_a == 0).all() and (rate_gradient == 0).all() and torch.isfinite(score).all()
    assert ((cdf_squared >= 0) & (cdf_squared <= 1)).all()


def test_a_library_of_another_version_is_not_called(monkeypatch):
    """A build left over from another version of the source may take other arguments: it is not called."""
    if not _native.available():
        pytest.skip(f"needs the native kernel: {_native.status()}")
    monkeypatch.setattr(_native, "_ABI", _native._ABI + 1)
    _native._library.cache_clear()
    try:
        assert not _native.available() and "another version" in _native.status()
    finally:
        monkeypatch.undo()
        _native._library.cache_clear()
    assert _native.available()


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(("y", "start"), [(0.0, math.inf), (-3.0, 5.0), (5.0, 0.0), (5.0, -1.0), (math.nan, 5.0), (5.0, math.nan)])
def test_targets_out_of_range_are_refused_on_either_path(monkeypatch, native, y, start):
    """y ≤ 0, a ≤ 0 or NaN have no Survival-CRPS: a clear error, never a number read from outside the tables."""
    if not native:
        _pytorch_only(monkeypatch)
    logits = torch.zeros(2, len(GRID) - 1)
    with pytest.raises(ValueError, match="y > 0 and start > 0"):
        LogisticHazard(logits, GRID).survival_crps(torch.tensor([10.0, y]), torch.tensor([10.0, start]))


def test_the_kernel_keeps_its_indices_in_range_even_for_targets_it_is_never_given():
    """Called directly with a ≤ τ_0 (which the loss refuses), the kernel still reads only its own rows."""
    case = list(_rows(4, 5, torch.float64, seed=9))
    case[6] = torch.tensor([-1.0, 0.0, 1.0, math.inf], dtype=torch.float64)
    score = _native.grid_crps(*case, True, True)[0]
    assert score.shape == (4,)
