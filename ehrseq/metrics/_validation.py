"""Input checks shared by every metric: arrays in, clear errors out.

Metrics take numpy arrays, torch tensors (converted with ``.detach().cpu().numpy()``) or anything
``numpy.asarray`` accepts. Shapes are checked first (:class:`ehrseq.errors.ShapeError`), then values
(``ValueError``): finiteness, event codes, non-negative times, probabilities in [0, 1], strictly
increasing time grids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ehrseq.errors import EhrseqError, ShapeError

#: Slack allowed when checking that probabilities lie in [0, 1] and curves do not increase
#: (float32 model outputs carry rounding of this order).
PROBABILITY_TOLERANCE = 1e-6


class NoComparablePairsError(EhrseqError, ValueError):
    """A concordance-type metric has no comparable pair (no events, or no pair can be ordered)."""


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} cannot be converted to an array: {exc}") from exc


def as_float(
    x: Any, name: str, shape: tuple[int | None, ...] | None = None, *, finite: bool = True
) -> np.ndarray:
    """A float64 array of the given shape (``None`` = any size; ``shape=None`` = any shape).

    All values must be finite unless ``finite=False``.
    """
    arr = to_numpy(x, name)
    if arr.dtype.kind not in "biuf":
        raise ShapeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if shape is not None:
        check_shape(arr, shape, name)
    arr = arr.astype(np.float64, copy=False)
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; found {int(np.sum(~np.isfinite(arr)))} NaN/inf value(s)")
    return arr


def check_shape(arr: np.ndarray, shape: tuple[int | None, ...], name: str) -> None:
    """Raise :class:`ShapeError` unless ``arr`` has ``shape`` (``None`` = any size)."""
    ok = arr.ndim == len(shape) and all(w is None or h == w for h, w in zip(arr.shape, shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ShapeError(f"{name} must have shape {want}, got {list(arr.shape)}")


def check_outcome(
    time: Any, event: Any, *, competing: bool = False, prefix: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Validate observed times and event indicators.

    Returns ``time`` as float64 ``[n]`` (finite, ≥ 0) and ``event`` as bool ``[n]`` — or, with
    ``competing=True``, as int64 ``[n]`` with 0 = censored and 1..K = cause. Event indicators may be
    bool, integers or floats holding integer values.
    """
    t = as_float(time, f"{prefix}time", (None,))
    if np.any(t < 0):
        raise ValueError(f"{prefix}time must be >= 0; found {int(np.sum(t < 0))} negative value(s)")
    e = to_numpy(event, f"{prefix}event")
    check_shape(e, (t.shape[0],), f"{prefix}event")
    if e.dtype == np.bool_:
        return t, (e.astype(np.int64) if competing else e)
    if e.dtype.kind not in "iuf" or not np.all(np.isfinite(e)) or np.any(e != np.round(e)):
        raise ValueError(f"{prefix}event must hold integer codes (bool or 0/1; 0..K for competing risks)")
    codes = e.astype(np.int64)
    if competing:
        if np.any(codes < 0):
            raise ValueError(f"{prefix}event codes must be >= 0 (0 = censored, 1..K = cause)")
        return t, codes
    if np.any((codes != 0) & (codes != 1)):
        bad = np.unique(codes[(codes != 0) & (codes != 1)])[:5].tolist()
        raise ValueError(f"{prefix}event must be 0/1 or bool, found values {bad}")
    return t, codes.astype(bool)


def check_time_grid(times: Any, name: str = "times") -> np.ndarray:
    """A strictly increasing, finite, non-negative float64 grid ``[T]`` with at least one point."""
    grid = as_float(np.atleast_1d(to_numpy(times, name)), name, (None,))
    if grid.size == 0:
        raise ShapeError(f"{name} must contain at least one time point")
    if np.any(grid < 0):
        raise ValueError(f"{name} must be >= 0")
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return grid


def check_probabilities(arr: np.ndarray, name: str) -> np.ndarray:
    """Raise ``ValueError`` unless every value lies in [0, 1] (up to rounding); return them clipped."""
    if np.any((arr < -PROBABILITY_TOLERANCE) | (arr > 1 + PROBABILITY_TOLERANCE)):
        raise ValueError(f"{name} must be probabilities in [0, 1]; got values in [{arr.min():.6g}, {arr.max():.6g}]")
    return np.clip(arr, 0.0, 1.0)


def check_non_increasing(curves: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` if a curve ``[n, T]`` increases along its last axis (beyond rounding)."""
    if curves.shape[-1] > 1 and np.any(np.diff(curves, axis=-1) > PROBABILITY_TOLERANCE):
        rows = np.flatnonzero(np.any(np.diff(curves, axis=-1) > PROBABILITY_TOLERANCE, axis=-1))
        raise ValueError(f"{name} must be non-increasing in time; rows {rows[:5].tolist()} increase")


def check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_tolerance(tied_tol: float) -> float:
    tol = float(tied_tol)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tied_tol must be a finite value >= 0, got {tied_tol!r}")
    return tol


def apply_reduction(values: np.ndarray, reduction: str) -> float | np.ndarray:
    """``mean`` (float), ``sum`` (float) or ``none`` (the per-subject array)."""
    check_choice(reduction, ("mean", "sum", "none"), "reduction")
    if reduction == "none":
        return values
    return float(values.mean() if reduction == "mean" else values.sum())
