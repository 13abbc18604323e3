"""`TimeGrid`: cut points 0 = τ_0 < τ_1 < … < τ_L (days) of durations from the current visit.

Binning convention: κ(R) = l for τ_l < R ≤ τ_{l+1} (l = 0..L−1) and κ(R) = L for R > τ_L, so a
remaining time R_m > 0 falls in one of L + 1 bins (the last one is "beyond the grid").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from ehrseq.errors import ConfigError, DataError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class TimeGrid:
    """Cut points of a horizon grid; build with :meth:`equidistant`, :meth:`quantiles`, :meth:`log`
    or :meth:`manual`.

    Attributes
    ----------
    cuts: ``[L + 1]`` float64 array, ``cuts[0] == 0``, strictly increasing.
    """

    def __init__(self, cuts: Sequence[float] | np.ndarray) -> None:
        values = np.asarray(cuts, dtype=np.float64).reshape(-1)
        if values.size == 0 or values[0] != 0.0:
            values = np.concatenate([[0.0], values])
        if values.size < 2:
            raise ConfigError("a time grid needs at least one cut point after 0")
        if not np.all(np.isfinite(values)) or not np.all(np.diff(values) > 0):
            raise ConfigError(f"grid cut points must be finite, > 0 and strictly increasing, got {values.tolist()}")
        self.cuts = values
        self.cuts.setflags(write=False)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def manual(cls, cuts: Sequence[float] | np.ndarray) -> TimeGrid:
        """Given cut points (days); a leading 0 is added when missing."""
        return cls(cuts)

    @classmethod
    def equidistant(cls, n: int, max: float) -> TimeGrid:  # noqa: A002 - the documented name
        """``n`` bins of equal width up to ``max`` days: τ_l = l · max / n."""
        _positive_int(n, "n")
        if not max > 0:
            raise ConfigError(f"max must be > 0, got {max}")
        return cls(np.linspace(0.0, float(max), n + 1))

    @classmethod
    def log(cls, n: int, min: float, max: float) -> TimeGrid:  # noqa: A002 - the documented names
        """τ_0 = 0 then ``n`` cut points log-spaced from ``min`` to ``max`` days (L = n bins)."""
        _positive_int(n, "n")
        if not 0 < min < max:
            raise ConfigError(f"log grid needs 0 < min < max, got min={min}, max={max}")
        return cls(np.geomspace(float(min), float(max), n))

    @classmethod
    def quantiles(cls, cohort_or_durations: Any, n: int, events_only: bool = True) -> TimeGrid:
        """Cut points at the 1/n, 2/n, …, 1 quantiles of remaining times (fit on training data).

        ``cohort_or_durations`` is a labelled :class:`ehrseq.data.Cohort` (its per-visit remaining
        times; with ``events_only`` only those of patients with an event) or an array of durations
        (all used). Tied quantiles are merged, so the grid may have fewer than ``n`` bins.
        """
        _positive_int(n, "n")
        durations = _durations(cohort_or_durations, events_only)
        if durations.size == 0:
            raise DataError("no durations to take quantiles of (no event in the cohort?)")
        cuts = np.unique(np.quantile(durations, np.linspace(0.0, 1.0, n + 1)[1:]))
        return cls(cuts[cuts > 0])

    # ------------------------------------------------------------------ use
    @property
    def n_bins(self) -> int:
        """L: the number of bins inside the grid (κ takes values 0..L)."""
        return len(self.cuts) - 1

    @property
    def max(self) -> float:
        return float(self.cuts[-1])

    @property
    def widths(self) -> np.ndarray:
        """Δτ_l = τ_{l+1} − τ_l, ``[L]``."""
        return np.diff(self.cuts)

    def bin(self, durations: ArrayT) -> ArrayT:
        """κ(R) for every duration R > 0 (numpy or torch in, int64 of the same kind and shape out)."""
        if isinstance(durations, torch.Tensor):
            values = durations.detach()
            if bool(torch.isnan(values).any()) or bool((values <= 0).any()):
                raise DataError("durations must be > 0 and not NaN to be binned")
            cuts = torch.tensor(self.cuts.tolist(), dtype=values.dtype if values.is_floating_point() else torch.float64,
                                device=values.device)
            return torch.searchsorted(cuts, values.contiguous(), right=False) - 1
        values = np.asarray(durations, dtype=np.float64)
        if np.isnan(values).any() or (values <= 0).any():
            raise DataError("durations must be > 0 and not NaN to be binned")
        return np.searchsorted(self.cuts, values, side="left").astype(np.int64) - 1

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"format": "ehrseq.TimeGrid", "version": 1, "cuts": self.cuts.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimeGrid:
        if data.get("format") != "ehrseq.TimeGrid":
            raise ConfigError("not a serialised TimeGrid")
        return cls(data["cuts"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> TimeGrid:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeGrid) and np.array_equal(self.cuts, other.cuts)

    def __hash__(self) -> int:
        return hash(self.cuts.tobytes())

    def __repr__(self) -> str:
        shown = ", ".join(f"{c:g}" for c in self.cuts[:8]) + (", …" if len(self.cuts) > 8 else "")
        return f"TimeGrid(L={self.n_bins}, cuts=[{shown}])"


def _positive_int(value: int, name: str) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _durations(source: Any, events_only: bool) -> np.ndarray:
    if hasattr(source, "visits") and hasattr(source, "patients"):
        if not source.is_labelled:
            raise ConfigError("quantile grids need a labelled cohort (remaining times)")
        remaining = source.visits.get_column("remaining").to_numpy()
        if not events_only:
            return remaining
        event = source.patients.get_column("event").to_numpy()
        return remaining[event[source.visits.get_column("patient_index").to_numpy()] > 0]
    values = np.asarray(source.detach().cpu() if isinstance(source, torch.Tensor) else source, dtype=np.float64)
    return values.reshape(-1)
