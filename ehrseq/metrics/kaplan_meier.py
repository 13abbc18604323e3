"""Kaplan–Meier product-limit estimator (vectorized), as a frozen right-continuous step function.

For distinct observed times u_1 < … < u_m with r_k subjects at risk (Y ≥ u_k), d_k events and c_k
censorings at u_k:

* event survival   S(t) = Π_{u_k ≤ t} (1 − d_k / r_k);
* censoring survival (roles swapped) G(t) = Π_{u_k ≤ t} (1 − c_k / (r_k − d_k)) — at tied times
  events are taken to occur before censorings, the convention of scikit-survival's
  ``CensoringDistributionEstimator`` (see :mod:`ehrseq.metrics.ipcw`).

Both are right-continuous: the value at u_k includes the jump at u_k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ehrseq.metrics._validation import as_float, check_outcome


def product_limit(time: np.ndarray, event: np.ndarray, *, reverse: bool = False) -> tuple[np.ndarray, ...]:
    """Distinct times ``[m]``, step values ``[m]``, events ``[m]`` and at-risk counts ``[m]``.

    ``reverse=True`` estimates the censoring distribution (events before censorings at ties).
    ``time`` float ``[n]`` and ``event`` bool ``[n]`` are assumed validated.
    """
    unique, inverse = np.unique(time, return_inverse=True)
    total = np.bincount(inverse, minlength=unique.size)
    events = np.bincount(inverse, weights=event.astype(np.float64), minlength=unique.size).astype(np.int64)
    at_risk = time.size - np.concatenate(([0], np.cumsum(total)[:-1]))
    if reverse:
        jumps, denominators = total - events, at_risk - events
    else:
        jumps, denominators = events, at_risk
    ratio = np.divide(jumps, denominators, out=np.zeros(unique.size), where=jumps > 0)
    return unique, np.cumprod(1.0 - ratio), events, at_risk


def step_values(grid: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Right-continuous step function (1 before ``grid[0]``) evaluated at ``t`` (any shape)."""
    index = np.searchsorted(grid, t, side="right") - 1
    return np.where(index >= 0, values[np.maximum(index, 0)], 1.0)


@dataclass(frozen=True)
class KaplanMeier:
    """Kaplan–Meier estimate of the event-free survival S(t) = P(T > t), fitted once and frozen.

    Beyond the last observed time the curve is held at its last value (0 when the last observation is
    an event); metrics that need a tail beyond it state their own convention.

    Attributes
    ----------
    times:
        Distinct observed times ``[m]`` (increasing).
    survival_values:
        S at each of ``times`` ``[m]``.
    events, at_risk:
        Event and at-risk counts at each of ``times`` ``[m]``.
    n_samples:
        Number of subjects the estimate was fitted on.
    """

    times: np.ndarray
    survival_values: np.ndarray
    events: np.ndarray
    at_risk: np.ndarray
    n_samples: int

    @classmethod
    def fit(cls, time: Any, event: Any) -> KaplanMeier:
        """Fit on observed times ``[n]`` (≥ 0) and event indicators ``[n]`` (bool or 0/1)."""
        t, e = check_outcome(time, event)
        if t.size == 0:
            raise ValueError("cannot fit a Kaplan-Meier estimate on zero subjects")
        unique, values, events, at_risk = product_limit(t, e)
        for arr in (unique, values, events, at_risk):
            arr.setflags(write=False)
        return cls(unique, values, events, at_risk, int(t.size))

    @property
    def max_time(self) -> float:
        """The last observed time."""
        return float(self.times[-1])

    def survival(self, t: Any) -> np.ndarray:
        """S(t) for times ``t`` (any shape, ≥ 0); held at its last value beyond :attr:`max_time`."""
        points = as_float(t, "t")
        if np.any(points < 0):
            raise ValueError("t must be >= 0")
        return step_values(self.times, self.survival_values, points)
