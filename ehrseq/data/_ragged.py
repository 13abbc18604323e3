"""Vectorized helpers for ragged (CSR-like) data: rows grouped in runs described by offsets."""

from __future__ import annotations

import numpy as np


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """``[P + 1]`` int64 offsets (0, l_0, l_0 + l_1, ...) of runs with the given lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def ragged_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``range(starts[i], starts[i] + lengths[i])`` over i (gather indices).

    Computed as ``repeat(starts − offsets, lengths) + arange(total)``: sequential passes only.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = offsets_from_lengths(lengths)
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths)
    shift += np.arange(offsets[-1], dtype=np.int64)
    return shift
