"""Inverse probability of censoring weights (IPCW) from a censoring distribution fitted on training data.

G(t) = P(C > t) is the Kaplan–Meier estimate with the roles of events and censorings swapped, fitted on
the **training** outcomes and then frozen, so that every test-set metric (Uno C, cumulative/dynamic
AUC, Brier score, cause-specific Brier score) weighs subjects the same way. Conventions follow
scikit-survival's ``CensoringDistributionEstimator`` so that values match it exactly:

* at tied times events precede censorings: G jumps by c_k / (r_k − d_k) at u_k;
* G is right-continuous and evaluated at the observed time itself, G(Y_i) (not G(Y_i−));
* the weight of an event is 1 / G(Y_i), of a censored subject 0.

Outside the censoring support G is unknown or zero and the weights are undefined. Rather than clip
silently, :meth:`CensoringDistribution.survival` raises ``ValueError`` for times beyond the last
training time (unless G already reached 0 there, in which case G = 0), and
:meth:`CensoringDistribution.inverse_weights` raises where G = 0. Restrict evaluation times (or the
truncation time τ of Uno's C) to at most :attr:`CensoringDistribution.max_time`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ehrseq.metrics._validation import as_float, check_outcome
from ehrseq.metrics.kaplan_meier import product_limit, step_values


@dataclass(frozen=True)
class CensoringDistribution:
    """Frozen Kaplan–Meier estimate of the censoring survival G(t) = P(C > t).

    Build it with :meth:`fit` on training outcomes; reuse it for every evaluation.

    Attributes
    ----------
    times:
        Distinct training times ``[m]`` (increasing).
    survival_values:
        G at each of ``times`` ``[m]``.
    n_samples:
        Number of training subjects.
    """

    times: np.ndarray
    survival_values: np.ndarray
    n_samples: int

    @classmethod
    def fit(cls, time: Any, event: Any) -> CensoringDistribution:
        """Fit on training times ``[n]`` (≥ 0) and event indicators ``[n]``.

        For competing risks pass ``event != 0`` (any cause ends follow-up; only 0 is censoring).
        """
        t, e = check_outcome(time, event, prefix="training ")
        if t.size == 0:
            raise ValueError("cannot fit the censoring distribution on zero training subjects")
        unique, values, _, _ = product_limit(t, e, reverse=True)
        return cls._frozen(unique, values, int(t.size))

    @classmethod
    def _frozen(cls, times: np.ndarray, values: np.ndarray, n_samples: int) -> CensoringDistribution:
        times = np.array(times, dtype=np.float64)
        values = np.array(values, dtype=np.float64)
        times.setflags(write=False)
        values.setflags(write=False)
        return cls(times, values, n_samples)

    @property
    def max_time(self) -> float:
        """The last training time: G is known up to (and including) it."""
        return float(self.times[-1])

    def survival(self, t: Any) -> np.ndarray:
        """G(t) for times ``t`` (any shape).

        Raises ``ValueError`` for t > :attr:`max_time` unless G(max_time) = 0 (then G(t) = 0).
        """
        points = as_float(t, "t")
        beyond = points > self.max_time
        if np.any(beyond) and self.survival_values[-1] > 0:
            raise ValueError(
                f"the censoring distribution is only known up to the last training time {self.max_time:g}; "
                f"{int(beyond.sum())} evaluation time(s) exceed it (largest {points[beyond].max():g}). "
                f"Restrict evaluation times (or tau) to <= {self.max_time:g}"
            )
        return step_values(self.times, self.survival_values, points)

    def inverse_weights(self, time: Any, event: Any) -> np.ndarray:
        """IPCW ``[n]``: 1 / G(Y_i) for events, 0 for censored subjects.

        Raises ``ValueError`` if an event time lies beyond the censoring support (see :meth:`survival`)
        or where G(Y_i) = 0.
        """
        t, e = check_outcome(time, event)
        weights = np.zeros(t.size)
        weights[e] = 1.0 / self.positive_survival(t[e], "event time")
        return weights

    def positive_survival(self, t: np.ndarray, what: str) -> np.ndarray:
        """G(t), raising ``ValueError`` where it is 0 (inverse weights would be infinite)."""
        g = self.survival(t)
        zero = g <= 0
        if np.any(zero):
            first_zero = float(self.times[np.argmax(self.survival_values <= 0)])
            raise ValueError(
                f"the censoring survival G is 0 at {int(zero.sum())} {what}(s) (smallest {t[zero].min():g}): "
                f"every training subject still followed there was censored, so inverse-probability weights "
                f"are undefined. Use times below {first_zero:g}"
            )
        return g

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable description (times, values, training size)."""
        return {
            "times": self.times.tolist(),
            "survival_values": self.survival_values.tolist(),
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CensoringDistribution:
        """Inverse of :meth:`to_dict`."""
        times = as_float(data["times"], "times", (None,))
        values = as_float(data["survival_values"], "survival_values", (times.size,))
        if times.size == 0 or np.any(np.diff(times) <= 0) or np.any(np.diff(values) > 0):
            raise ValueError("a censoring distribution needs increasing times and non-increasing values")
        return cls._frozen(times, values, int(data["n_samples"]))


def positive_censoring_survival(censoring: CensoringDistribution, t: np.ndarray, what: str) -> np.ndarray:
    """G(t) from a fitted :class:`CensoringDistribution`, raising where it is 0 or unknown (see its methods)."""
    if not isinstance(censoring, CensoringDistribution):
        raise TypeError(
            "censoring must be a CensoringDistribution fitted on the training outcomes "
            f"(CensoringDistribution.fit(train_time, train_event)), got {type(censoring).__name__}"
        )
    return censoring.positive_survival(t, what)
