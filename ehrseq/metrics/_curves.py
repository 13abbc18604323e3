"""Per-subject survival predictions as something metrics can evaluate anywhere.

Metrics accept predictions in two forms and turn them into one of the evaluators below:

* curves ``surv [n, T]`` known at a strictly increasing grid ``times [T]`` → :class:`SurvivalCurves`.
  S(0) = 1 is prepended when ``times[0] > 0``. Between grid points the curve is interpolated
  **linearly** (``interpolation="linear"``, the default) or held at the previous grid value
  (``"step"``: right-continuous, as for Kaplan–Meier-type curves); beyond the last grid point it is held
  at its last value — metrics that integrate to infinity restrict themselves to the grid horizon and
  say so;
* a :class:`~ehrseq.models.distributions.base.SurvivalDistribution` with batch shape ``[n]`` →
  :class:`DistributionSurvival`, evaluated exactly wherever needed.

Cumulative incidence functions F_k of a cause are handled as the "survival-like" curve 1 − F_k, so
every tool below serves competing risks too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from ehrseq.errors import ShapeError
from ehrseq.metrics._validation import (
    as_float,
    check_choice,
    check_non_increasing,
    check_probabilities,
    check_time_grid,
    to_numpy,
)
from ehrseq.models.distributions.base import CompetingRisksDistribution, SurvivalDistribution

INTERPOLATIONS = ("linear", "step")

# 3-point Gauss–Legendre rule on [0, 1]: exact for polynomials of degree ≤ 5.
_GL_NODES = np.array([0.5 - 0.5 * np.sqrt(0.6), 0.5, 0.5 + 0.5 * np.sqrt(0.6)])
_GL_WEIGHTS = np.array([5.0, 8.0, 5.0]) / 18.0
BLOCK_ELEMENTS = 1 << 22  # bound on temporaries of blocked computations


def check_distribution_batch(
    distribution: SurvivalDistribution | CompetingRisksDistribution, n: int, name: str
) -> None:
    """Raise :class:`ShapeError` unless the distribution has batch shape ``[n]`` (one per subject)."""
    if tuple(distribution.batch_shape) != (n,):
        raise ShapeError(
            f"{name} must be a distribution with batch shape [{n}] (one per subject), "
            f"got {list(distribution.batch_shape)}; flatten [B, M] predictions and their targets first"
        )


class SurvivalEvaluator(Protocol):
    """S_i(t) for n subjects, at points shared by all subjects or one point per subject."""

    n: int

    def at(self, points: np.ndarray) -> np.ndarray:
        """S_i(points[p]) for every subject, ``[n, P]`` for ``points [P]``."""

    def at_own(self, points: np.ndarray) -> np.ndarray:
        """S_i(points[i]), ``[n]`` for ``points [n]``."""


class SurvivalCurves:
    """Survival curves on a common grid of knots starting at 0, interpolated as documented above."""

    def __init__(self, values: np.ndarray, knots: np.ndarray, interpolation: str) -> None:
        check_choice(interpolation, INTERPOLATIONS, "interpolation")
        self.values = values  # [n, K]
        self.knots = knots  # [K], knots[0] = 0
        self.interpolation = interpolation
        self.n = values.shape[0]
        widths = np.diff(knots)
        linear = interpolation == "linear"
        self._slopes = np.diff(values, axis=1) / widths if linear else np.zeros((self.n, widths.size))

    @classmethod
    def from_grid(cls, surv: np.ndarray, times: np.ndarray, interpolation: str) -> SurvivalCurves:
        """Prepend (0, 1) to curves ``[n, T]`` on ``times [T]`` unless the grid already starts at 0."""
        if times[0] > 0:
            times = np.concatenate(([0.0], times))
            surv = np.concatenate((np.ones((surv.shape[0], 1)), surv), axis=1)
        return cls(surv, times, interpolation)

    @property
    def horizon(self) -> float:
        """The last grid point."""
        return float(self.knots[-1])

    def _read(self, rows: np.ndarray, points: np.ndarray) -> np.ndarray:
        seg = np.clip(np.searchsorted(self.knots, points, side="right") - 1, 0, self.knots.size - 1)
        base = self.values[rows, seg]
        if self.interpolation == "step" or self.knots.size == 1:
            return base
        offset = np.where(seg < self.knots.size - 1, points - self.knots[seg], 0.0)  # held beyond the grid
        return base + self._slopes[rows, np.minimum(seg, self._slopes.shape[1] - 1)] * offset

    def at(self, points: np.ndarray) -> np.ndarray:
        return self._read(np.arange(self.n)[:, None], points)

    def at_own(self, points: np.ndarray) -> np.ndarray:
        return self._read(np.arange(self.n), points)

    def integrate(
        self, integrand: Callable[[np.ndarray, np.ndarray], np.ndarray], lower: np.ndarray, upper: np.ndarray
    ) -> np.ndarray:
        """∫_{lower_i}^{upper_i} integrand(z, S_i(z)) dz for every subject, ``[n]``.

        Limits are clipped to [0, :attr:`horizon`] (callers add tails beyond the grid). The rule is exact
        for integrands that are polynomials of degree ≤ 5 in z on each segment (e.g. S, F², z·S).
        """
        if self.knots.size < 2:
            return np.zeros(self.n)
        lower = np.clip(np.broadcast_to(lower, (self.n,)), 0.0, self.horizon)
        upper = np.clip(np.broadcast_to(upper, (self.n,)), 0.0, self.horizon)
        left, right = self.knots[:-1], self.knots[1:]
        total = np.empty(self.n)
        block = max(1, BLOCK_ELEMENTS // (3 * left.size))
        for start in range(0, self.n, block):
            rows = slice(start, start + block)
            a = np.clip(left, lower[rows, None], upper[rows, None])  # [b, K-1]
            b = np.clip(right, lower[rows, None], upper[rows, None])
            z = a[..., None] + (b - a)[..., None] * _GL_NODES  # [b, K-1, 3]
            s = self.values[rows, :-1, None] + self._slopes[rows, :, None] * (z - left[:, None])
            total[rows] = np.einsum("bkg,g,bk->b", integrand(z, s), _GL_WEIGHTS, b - a)
        return total

    def inverse_square_integral(self, lower: np.ndarray) -> np.ndarray:
        """∫_{lower_i}^{horizon} S_i(z) / z² dz ``[n]`` for ``lower > 0`` (0 where lower ≥ horizon); exact for
        linear and step curves: on a segment S = α + βz integrates to α (1/a − 1/b) + β log(b/a)."""
        if self.knots.size < 2:
            return np.zeros(self.n)
        lower = np.broadcast_to(lower, (self.n,))
        left, right = self.knots[:-1], self.knots[1:]
        intercepts = self.values[:, :-1] - self._slopes * left
        total = np.empty(self.n)
        block = max(1, BLOCK_ELEMENTS // left.size)
        for start in range(0, self.n, block):
            rows = slice(start, start + block)
            a = np.maximum(left, lower[rows, None])
            b = np.maximum(right, lower[rows, None])
            inverse_gap = np.divide(1.0, a) - np.divide(1.0, b)
            log_ratio = np.log(b / a)
            total[rows] = np.sum(intercepts[rows] * inverse_gap + self._slopes[rows] * log_ratio, axis=1)
        return total


class DistributionSurvival:
    """A :class:`SurvivalDistribution` with batch shape ``[n]``, evaluated exactly (as float64 arrays)."""

    def __init__(self, distribution: SurvivalDistribution, n: int, name: str) -> None:
        check_distribution_batch(distribution, n, name)
        self.distribution = distribution
        self.n = n

    def _evaluate(self, durations: np.ndarray) -> np.ndarray:
        # CompetingRisksDistribution does not promise dtype/device; fall back to float64 on the CPU.
        dtype = getattr(self.distribution, "dtype", torch.float64)
        device = getattr(self.distribution, "device", torch.device("cpu"))
        u = torch.tensor(durations, dtype=dtype, device=device)
        with torch.no_grad():
            values = self._survival(u)
        return values.detach().cpu().numpy().astype(np.float64)

    def _survival(self, u: torch.Tensor) -> torch.Tensor:
        return self.distribution.survival(u)

    def at(self, points: np.ndarray) -> np.ndarray:
        return self._evaluate(points)

    def at_own(self, points: np.ndarray) -> np.ndarray:
        return self._evaluate(points[:, None])[:, 0]

    def at_each(self, points: np.ndarray) -> np.ndarray:
        """S_i(points[i, p]), ``[n, P]`` for per-subject points ``[n, P]``."""
        return self._evaluate(points)


class DistributionCIFComplement(DistributionSurvival):
    """1 − F_k(u) of one cause of a :class:`CompetingRisksDistribution` with batch shape ``[n]``."""

    def __init__(self, distribution: CompetingRisksDistribution, n: int, name: str, cause: int) -> None:
        super().__init__(distribution, n, name)  # type: ignore[arg-type]
        self.cause = cause

    def _survival(self, u: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.distribution.cif(u)[..., self.cause - 1, :]


def _grid_curves(values: Any, times: Any, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    if times is None:
        raise ValueError(f"times (the grid of {name}) is required when {name} is an array")
    grid = check_time_grid(times)
    curves = check_probabilities(as_float(values, name, (n, grid.size)), name)
    return curves, grid


def survival_evaluator(
    surv: Any, times: Any, n: int, interpolation: str = "linear", name: str = "surv"
) -> SurvivalEvaluator:
    """Evaluator for survival curves ``[n, T]`` on ``times [T]`` or a distribution (``times`` unused)."""
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    if isinstance(surv, SurvivalDistribution):
        return DistributionSurvival(surv, n, name)
    curves, grid = _grid_curves(surv, times, n, name)
    check_non_increasing(curves, name)
    return SurvivalCurves.from_grid(curves, grid, interpolation)


def cif_complement_evaluator(
    cif: Any, times: Any, n: int, cause: int, interpolation: str = "linear", name: str = "cif"
) -> SurvivalEvaluator:
    """Evaluator of 1 − F_k for CIF curves ``[n, T]`` of cause k on ``times`` or a competing-risks distribution."""
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    if isinstance(cif, CompetingRisksDistribution):
        if not 1 <= cause <= cif.num_causes:
            raise ValueError(f"cause must be in 1..{cif.num_causes}, got {cause}")
        return DistributionCIFComplement(cif, n, name, cause)
    curves, grid = _grid_curves(cif, times, n, name)
    complement = 1.0 - curves
    check_non_increasing(complement, f"1 - {name} (a cumulative incidence must be non-decreasing)")
    return SurvivalCurves.from_grid(complement, grid, interpolation)


def survival_matrix(surv: Any, times: np.ndarray, n: int, name: str = "surv") -> np.ndarray:
    """Survival probabilities ``[n, U]`` at evaluation times ``[U]``: given directly or from a distribution."""
    if isinstance(surv, SurvivalDistribution):
        return check_probabilities(DistributionSurvival(surv, n, name).at(times), name)
    return check_probabilities(as_float(surv, name, (n, times.size)), name)


def curves_on_grid(surv: Any, times: Any, interpolation: str = "linear", name: str = "surv") -> SurvivalCurves:
    """:class:`SurvivalCurves` from curves ``[n, T]`` on ``times`` or a distribution evaluated on ``times``."""
    check_choice(interpolation, INTERPOLATIONS, "interpolation")
    grid = check_time_grid(times)
    if isinstance(surv, SurvivalDistribution):
        if len(surv.batch_shape) != 1:
            raise ShapeError(f"{name} must have a 1-D batch shape [n], got {list(surv.batch_shape)}")
        n = int(surv.batch_shape[0])
    else:
        surv = to_numpy(surv, name)
        if surv.ndim != 2:
            raise ShapeError(f"{name} must be survival curves [n, T] or a distribution, got shape {list(surv.shape)}")
        n = surv.shape[0]
    values = survival_matrix(surv, grid, n, name)
    check_non_increasing(values, name)
    return SurvivalCurves.from_grid(values, grid, interpolation)


def per_subject_survival(surv: Any, at: np.ndarray, times: Any, interpolation: str, name: str) -> np.ndarray:
    """S_i(at_i) ``[n]``: given directly as ``[n]`` values, or read from curves ``[n, T]`` on ``times`` or
    from a distribution."""
    n = at.size
    if not isinstance(surv, SurvivalDistribution) and np.ndim(to_numpy(surv, name)) == 1:
        return check_probabilities(as_float(surv, name, (n,)), name)
    return check_probabilities(survival_evaluator(surv, times, n, interpolation, name).at_own(at), name)


def survival_at(surv: Any, times: Any, at: Any, *, interpolation: str = "linear") -> np.ndarray:
    """S_i(at_i) for every subject ``[n]``, from curves ``surv [n, T]`` on ``times [T]`` or a distribution.

    Interpolation as documented in this module (``"linear"`` or ``"step"``); ``times`` is ignored for a
    distribution. Useful to feed curve predictions to metrics that take S_i at one time per subject.
    """
    points = as_float(at, "at", (None,))
    if np.any(points < 0):
        raise ValueError("at must be >= 0")
    return survival_evaluator(surv, times, points.size, interpolation).at_own(points)
