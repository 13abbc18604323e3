"""The optional native kernel of the constant-hazard Survival-CRPS, loaded through :mod:`ctypes`.

``_grid_crps.c`` (built with the package where a C compiler is found, see ``setup.py``) runs
:class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS` — per bin the closed-form integrals of F² and S²
masked by the bins of the targets (one vectorised loop), then the targets' own bins and the exponential tail,
and the gradient — in one pass per row on POSIX threads, several times faster on CPU than the same terms as
whole-tensor operations. The PyTorch implementation stays the reference: it runs on other devices, where the
library was not built (or was built from another version of its source), for grids of more than
:func:`max_bins` bins, and wherever ``EHRSEQ_NATIVE=0`` is set; tests hold the two equal.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import os
from collections.abc import Iterator

import torch

#: Rows per thread below which another thread costs more than it saves.
_ROWS_PER_THREAD = 1024

#: The interface version of the entry points, ``EHRSEQ_GRID_CRPS_ABI`` in ``_grid_crps.c``: a library built from
#: another version of the source is not called (its entry points may take other arguments).
_ABI = 1


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
    try:
        library.ehrseq_grid_crps_abi.restype = ctypes.c_int
        abi = library.ehrseq_grid_crps_abi()
    except AttributeError:
        abi = None
    if abi != _ABI:
        return None, f"native kernel at {module.__file__} is of another version (reinstall ehrseq to rebuild it)"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for suffix in ("f32", "f64"):
        entry = getattr(library, f"ehrseq_grid_crps_{suffix}")
        entry.argtypes = [size, size] + [pointer] * 13 + [ctypes.c_int]
        entry.restype = ctypes.c_int
    library.ehrseq_grid_crps_max_bins.restype = ctypes.c_int
    return library, f"native kernel loaded from {module.__file__}"


def status() -> str:
    """Whether the native kernel is in use, and from which file (or why not)."""
    return _library()[1]


#: Set within :func:`disabled`.
_switched_off = False


def available() -> bool:
    """True when the native kernel is loaded and not switched off by :func:`disabled` (it then serves CPU tensors
    of float32 and float64)."""
    return not _switched_off and _library()[0] is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within the block the PyTorch implementation runs even where the kernel is loaded (to compare the two in one
    process, as ``python -m ehrseq.bench losses`` does); not for use from several threads at once."""
    global _switched_off
    before, _switched_off = _switched_off, True
    try:
        yield
    finally:
        _switched_off = before


def max_bins() -> int:
    """The most grid bins the native kernel takes (0 when it is not loaded)."""
    library = _library()[0]
    return int(library.ehrseq_grid_crps_max_bins()) if library is not None else 0


_ENTRIES = {torch.float32: "ehrseq_grid_crps_f32", torch.float64: "ehrseq_grid_crps_f64"}

Outputs = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def grid_crps(log_s: torch.Tensor, knots: torch.Tensor, steps: tuple[torch.Tensor, torch.Tensor], log_rate: torch.Tensor,
              grid: torch.Tensor, y: torch.Tensor, start: torch.Tensor, gradients: bool, cdf: bool) -> Outputs | None:
    """The constant-hazard Survival-CRPS natively, or ``None`` where the kernel does not apply.

    ``log_s`` log S(τ_l) and ``knots`` S(τ_l) ``[N, L+1]``, ``steps`` (−ΔH_l, 1 − e^{−ΔH_l}) ``[N, L]`` each,
    ``log_rate`` log λ ``[N]``, ``grid`` ``[L+1]``, ``y`` and ``start`` ``[N]`` (``start`` = ∞: no tail term), on the
    CPU, taken in the floating type of ``log_s``. Returns what
    :func:`~ehrseq.models.distributions.grid._pytorch_crps` returns — the score ``[N]`` and, with ``gradients``,
    its gradient in log S ``[N, L+1]`` and in log λ, F(y)² (if ``cdf``) and S(a)² ``[N]`` — computed by the terms of
    :class:`~ehrseq.models.distributions.grid._ConstantHazardCRPS`, whose docstring states them.
    """
    library = _library()[0] if available() else None
    entry = _ENTRIES.get(log_s.dtype)
    rows, width = log_s.shape[0], log_s.shape[-1] - 1
    if library is None or entry is None or log_s.device.type != "cpu" or not 1 <= width <= max_bins():
        return None
    tables = [t.to(dtype=log_s.dtype).contiguous() for t in (log_s, knots, *steps, grid, y, start, log_rate)]
    shapes = [(rows, width + 1)] * 2 + [(rows, width)] * 2 + [(width + 1,), (rows,), (rows,), (rows,)]
    if any(t.device != log_s.device or tuple(t.shape) != shape for t, shape in zip(tables, shapes)):
        raise ValueError("native Survival-CRPS: inputs of mismatched shapes or devices")
    score = log_s.new_empty(rows)
    grad, rate_gradient, at_a = (log_s.new_empty(rows, width + 1), log_s.new_empty(rows), log_s.new_empty(rows)) \
        if gradients else (None, None, None)
    cdf_squared = log_s.new_empty(rows) if gradients and cdf else None
    outputs = [score, grad, rate_gradient, at_a, cdf_squared]
    threads = max(1, min(torch.get_num_threads(), rows // _ROWS_PER_THREAD))
    status = getattr(library, entry)(rows, width, *(t.data_ptr() for t in tables),
                                     *(t.data_ptr() if t is not None else None for t in outputs), threads)
    if status not in (0, -1):  # −1: a thread did not start and its rows ran on the calling thread
        raise RuntimeError(f"native Survival-CRPS kernel failed (status {status})")
    return score, grad, rate_gradient, cdf_squared, at_a
