"""The optional native kernel of the constant-hazard Survival-CRPS, loaded through :mod:`ctypes`.

``_grid_crps.c`` (built with the package where a C compiler is found, see ``setup.py``) runs the ``[N, L]`` part
of :class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS` — per bin the closed-form integrals of F² and
S² masked by the bins of the targets, and their gradient in log S — in one vectorised pass per row on POSIX
threads, several times faster on CPU than the same terms as whole-tensor operations. The PyTorch
implementation stays the reference: it runs on other devices, where the library was not built, for grids of
more than :func:`max_bins` bins, and wherever ``EHRSEQ_NATIVE=0`` is set; tests hold the two equal.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os

import torch

#: Rows per thread below which another thread costs more than it saves.
_ROWS_PER_THREAD = 1024


@functools.lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library or None, a sentence saying which or why not)."""
    if os.environ.get("EHRSEQ_NATIVE", "1").strip().lower() in {"0", "false", "no", "off"}:
        return None, "native kernel disabled by EHRSEQ_NATIVE"
    try:
        module = importlib.import_module("ehrseq.models.distributions._grid_crps")
    except ImportError as error:
        return None, f"native kernel not built ({error}); the PyTorch implementation runs"
    library = ctypes.CDLL(module.__file__)
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        entry = getattr(library, f"ehrseq_grid_crps_bins_{suffix}")
        entry.argtypes = [size, size] + [pointer] * 9 + [ctypes.c_int]
        entry.restype = ctypes.c_int
    library.ehrseq_grid_crps_max_bins.restype = ctypes.c_int
    return library, f"native kernel loaded from {module.__file__}"


def status() -> str:
    """Whether the native kernel is in use, and from which file (or why not)."""
    return _library()[1]


def available() -> bool:
    """True when the native kernel is loaded (it then serves CPU tensors of float32 and float64)."""
    return _library()[0] is not None


def max_bins() -> int:
    """The most grid bins the native kernel takes (0 when it is not loaded)."""
    library = _library()[0]
    return int(library.ehrseq_grid_crps_max_bins()) if library is not None else 0


_ENTRIES = {torch.float32: "ehrseq_grid_crps_bins_f32", torch.float64: "ehrseq_grid_crps_bins_f64"}


def grid_crps_bins(knots: torch.Tensor, drops: torch.Tensor, hazards: torch.Tensor, grid: torch.Tensor,
                   y: torch.Tensor, start: torch.Tensor, counts: torch.Tensor, gradients: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The full bins of the constant-hazard Survival-CRPS natively, or ``None`` where the kernel does not apply.

    ``knots`` S(τ_l) ``[N, L+1]``, ``drops`` −ΔH_l and ``hazards`` 1 − e^{−ΔH_l} ``[N, L]``, ``grid`` ``[L+1]``,
    ``y`` and ``start`` ``[N]`` (``start`` = ∞: no tail term), on the CPU (taken in the type of ``knots``). Writes
    #{l: τ_{l+1} < y} and #{l < L: τ_l ≥ a} into ``counts`` (int64 ``[2, N]``, contiguous) and returns
    (½ Σ_l [1_{l<κ}(2Δτ_l − 4M_l + 2Q_l) + 1_{l>κ_a} 2Q_l] ``[N]``, its gradient in log S ``[N, L+1]`` or None) —
    the terms of :class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS`, whose docstring states them.
    """
    library = _library()[0]
    entry = _ENTRIES.get(knots.dtype)
    rows, width = knots.shape[0], knots.shape[-1] - 1
    if library is None or entry is None or knots.device.type != "cpu" or not 1 <= width <= max_bins():
        return None
    tables = [t.to(dtype=knots.dtype).contiguous() for t in (knots, drops, hazards, grid, y, start)]
    shapes = [(rows, width + 1), (rows, width), (rows, width), (width + 1,), (rows,), (rows,)]
    if any(t.dtype != knots.dtype or t.device != knots.device or tuple(t.shape) != s for t, s in zip(tables, shapes)):
        raise ValueError("native Survival-CRPS: inputs of mismatched shapes, types or devices")
    if counts.dtype != torch.int64 or tuple(counts.shape) != (2, rows) or not counts.is_contiguous():
        raise ValueError("native Survival-CRPS: counts must be a contiguous int64 tensor [2, N]")
    score = knots.new_empty(rows)
    grad = knots.new_empty(rows, width + 1) if gradients else None
    threads = max(1, min(torch.get_num_threads(), rows // _ROWS_PER_THREAD))
    result = getattr(library, entry)(rows, width, *(t.data_ptr() for t in tables), score.data_ptr(),
                                     counts.data_ptr(), grad.data_ptr() if grad is not None else None, threads)
    if result not in (0, -1):  # −1: a thread did not start and its rows ran on the calling thread
        raise RuntimeError(f"native Survival-CRPS kernel failed (status {result})")
    return score, grad
