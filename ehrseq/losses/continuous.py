"""``nn.Module`` wrappers of the distribution losses: MLE, Survival-CRPS, log-time CRPS and MENSA.

They hold hyper-parameters only and call the functional cores of :mod:`ehrseq.losses.functional`
(where the mathematics is documented). Unlike the logit-based catalogue, their first argument is the
per-visit prediction itself — a :class:`~ehrseq.models.distributions.SurvivalDistribution` of batch
``[B, M]`` (a :class:`~ehrseq.models.distributions.MultiEvent` for MENSA) — so one loss serves every
family. Other forward arguments use the tensor names of :class:`ehrseq.data.SequenceBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ehrseq.errors import ConfigError
from ehrseq.losses import functional as LF
from ehrseq.losses.functional.multievent import Trajectory
from ehrseq.losses.modules import _cause, _Loss
from ehrseq.models.distributions import LogNormal, MultiEvent, SurvivalDistribution

Tensor = torch.Tensor


def _points(value: int | None) -> None:
    if value is not None and not (isinstance(value, int) and value >= 1):
        raise ConfigError(f"points must be a positive integer, got {value!r}")


class _DistributionLoss(_Loss):
    """Per-visit loss of a distribution against ``remaining``/``event`` (optional ``cause`` selection)."""

    def __init__(self, cause: int | None, reduction: str, visit_weighting: str) -> None:
        super().__init__(reduction, visit_weighting)
        _cause(cause)
        self.cause = cause


class SurvivalNLLLoss(_DistributionLoss):
    """Right-/interval-censored MLE of any distribution (:func:`~ehrseq.losses.functional.survival_nll`).

    Through the piecewise families it is the likelihood of [piecewise] (§A16).
    """

    def __init__(self, *, cause: int | None = None, reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(cause, reduction, visit_weighting)

    def forward(self, distribution: SurvivalDistribution, remaining: Tensor, event: Tensor, mask: Tensor,
                upper: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        return LF.survival_nll(
            distribution, remaining, event, mask, upper=upper, cause=self.cause, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class SurvivalCRPSLoss(_DistributionLoss):
    """Survival-CRPS of any distribution by quadrature (:func:`~ehrseq.losses.functional.survival_crps`;
    ``points`` nodes per term, ``None`` = the family's default)."""

    def __init__(self, *, points: int | None = None, cause: int | None = None, reduction: str = "mean",
                 visit_weighting: str = "patient") -> None:
        super().__init__(cause, reduction, visit_weighting)
        _points(points)
        self.points = points

    def forward(self, distribution: SurvivalDistribution, remaining: Tensor, event: Tensor, mask: Tensor,
                upper: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        return LF.survival_crps(
            distribution, remaining, event, mask, upper=upper, points=self.points, cause=self.cause, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class LogNormalSurvivalCRPSLoss(_DistributionLoss):
    """Survival-CRPS of a log-normal head (:func:`~ehrseq.losses.functional.survival_crps_lognormal`).

    ``rule="trapezoid"`` with ``points=32`` is [countdown]'s own approximation.
    """

    def __init__(self, *, rule: str = "gauss-legendre", points: int | None = None, cause: int | None = None,
                 reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(cause, reduction, visit_weighting)
        if rule not in ("gauss-legendre", "trapezoid"):
            raise ConfigError(f'rule must be "gauss-legendre" or "trapezoid", got {rule!r}')
        _points(points)
        self.rule = rule
        self.points = points

    def forward(self, distribution: LogNormal, remaining: Tensor, event: Tensor, mask: Tensor,
                upper: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        return LF.survival_crps_lognormal(
            distribution, remaining, event, mask, upper=upper, rule=self.rule, points=self.points, cause=self.cause,
            weight=weight, reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class LogTimeNormalCRPSLoss(_DistributionLoss):
    """Closed-form CRPS of log-time under a Gaussian (:func:`~ehrseq.losses.functional.crps_log_time_normal`)."""

    def __init__(self, *, cause: int | None = None, reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(cause, reduction, visit_weighting)

    def forward(self, distribution: LogNormal, remaining: Tensor, event: Tensor, mask: Tensor,
                upper: Tensor | None = None, weight: Tensor | None = None) -> Tensor:
        return LF.crps_log_time_normal(
            distribution, remaining, event, mask, upper=upper, cause=self.cause, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class MENSALoss(_Loss):
    """MENSA multi-event likelihood with trajectories (:func:`~ehrseq.losses.functional.mensa_loss`).

    ``trajectories``: pairs [A, B] of event names or positions, "A occurs before B".
    """

    def __init__(self, *, trajectories: Sequence[Sequence[str | int]] = (), trajectory_weight: float = 1.0,
                 reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(reduction, visit_weighting)
        pairs: list[Trajectory] = []
        for pair in trajectories:
            if isinstance(pair, str) or len(pair) != 2 or not all(isinstance(x, (str, int)) for x in pair):
                raise ConfigError(f"each trajectory must be a pair [A, B] of event names or positions, got {pair!r}")
            pairs.append((pair[0], pair[1]))
        if not (isinstance(trajectory_weight, (int, float)) and trajectory_weight >= 0):
            raise ConfigError(f"trajectory_weight must be a number >= 0, got {trajectory_weight!r}")
        self.trajectories = tuple(pairs)
        self.trajectory_weight = float(trajectory_weight)

    def forward(self, distribution: MultiEvent, event_times: Tensor, event_flags: Tensor, time: Tensor, mask: Tensor,
                event_free: SurvivalDistribution | None = None, weight: Tensor | None = None) -> Tensor:
        return LF.mensa_loss(
            distribution, event_times, event_flags, time, mask, trajectories=self.trajectories,
            trajectory_weight=self.trajectory_weight, event_free=event_free, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )
