"""``nn.Module`` wrappers of the discrete-time, ranking, representation and Cox losses.

Each wrapper holds hyper-parameters only and calls its functional core in
:mod:`ehrseq.losses.functional` (where the mathematics is documented), for training loops of one's
own; the training objective uses the loss terms of :mod:`ehrseq.losses.terms`, which list these
wrappers with the term of the same loss. Constructor arguments are validated and raise
:class:`ehrseq.errors.ConfigError`. Forward arguments use the tensor names of
:class:`ehrseq.data.SequenceBatch` (``mask``, ``event``, ``event_visit``, ``bin``, ``remaining``, ``weight``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ehrseq.errors import ConfigError, ShapeError
from ehrseq.losses import functional as LF
from ehrseq.losses.functional._aggregate import check_reduction
from ehrseq.losses.functional.focal import check_focal_parameters
from ehrseq.models.distributions._math import DEFAULT_HERMITE_NODES

Tensor = torch.Tensor


def _config(check: Any, *args: Any) -> None:
    """Run a validation function and re-raise its ``ValueError`` as :class:`ConfigError`."""
    try:
        check(*args)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _cause(cause: int | None) -> None:
    if cause is not None and not (isinstance(cause, int) and cause >= 1):
        raise ConfigError(f"cause must be None (any event) or an event type >= 1, got {cause!r}")


def _weights_buffer(module: nn.Module, name: str, values: Sequence[float] | None) -> None:
    """Store optional non-negative weights as a float buffer (``None`` when not given)."""
    if values is None:
        module.register_buffer(name, None)
        return
    tensor = torch.as_tensor(list(values), dtype=torch.float32)
    if tensor.dim() != 1 or tensor.numel() == 0 or not torch.all(torch.isfinite(tensor)) or torch.any(tensor < 0):
        raise ConfigError(f"{name} must be a non-empty list of finite non-negative numbers")
    module.register_buffer(name, tensor)


def _per_position(weights: Tensor | None, visits: int, like: Tensor) -> Tensor | None:
    """Visit-position weights fitted to M positions: cut, or extended with the last weight."""
    if weights is None:
        return None
    weights = weights.to(dtype=like.dtype, device=like.device)
    if weights.shape[0] >= visits:
        return weights[:visits]
    return torch.cat([weights, weights[-1].expand(visits - weights.shape[0])])


class _Loss(nn.Module):
    """Common hyper-parameters: ``reduction`` and, for per-visit losses, ``visit_weighting``."""

    def __init__(self, reduction: str = "mean", visit_weighting: str | None = None) -> None:
        super().__init__()
        _config(check_reduction, reduction, visit_weighting)
        self.reduction = reduction
        self.visit_weighting = visit_weighting

    def extra_repr(self) -> str:
        shown = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "training"}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items() if v is not None)


class DiscreteTimeNLL(_Loss):
    """Visit-indexed discrete-time NLL (:func:`~ehrseq.losses.functional.discrete_time_nll`).

    ``time_weights`` (§A8): weight of each visit position; a batch with more visits than weights reuses
    the last weight for the later positions.
    """

    def __init__(
        self,
        *,
        censored_survives_last: bool = False,
        cause: int | None = None,
        time_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(reduction, visit_weighting)
        _cause(cause)
        self.censored_survives_last = bool(censored_survives_last)
        self.cause = cause
        _weights_buffer(self, "time_weights", time_weights)

    def forward(
        self, logits: Tensor, event: Tensor, event_visit: Tensor, mask: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        return LF.discrete_time_nll(
            logits, event, event_visit, mask,
            censored_survives_last=self.censored_survives_last, cause=self.cause,
            time_weights=_per_position(self.time_weights, logits.shape[-1], logits), weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class LogisticHazardLoss(_Loss):
    """Logistic-hazard grid NLL (:func:`~ehrseq.losses.functional.logistic_hazard_nll`); ``bin_weights`` ``[L]``."""

    def __init__(
        self,
        *,
        cause: int | None = None,
        bin_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(reduction, visit_weighting)
        _cause(cause)
        self.cause = cause
        _weights_buffer(self, "bin_weights", bin_weights)

    def forward(self, logits: Tensor, bin: Tensor, event: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        return LF.logistic_hazard_nll(
            logits, bin, event, mask, cause=self.cause, bin_weights=self.bin_weights, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class DeepHitLoss(_Loss):
    """DeepHit: PMF likelihood + η · ranking term (:func:`~ehrseq.losses.functional.pmf_nll`,
    :func:`~ehrseq.losses.functional.deephit_ranking_loss`; [monograph] eq. 70).

    ``ranking_weight`` η scales the ranking term (0 = likelihood only, then ``remaining`` and
    ``event_visit`` are not needed); ``cause_weights`` [K] weigh the causes inside it. Only "mean" and
    "sum" reductions: the two terms live on different index sets (visits vs pairs) — use the functional
    cores for per-term values.
    """

    def __init__(
        self,
        *,
        num_causes: int = 1,
        ranking_weight: float = 1.0,
        sigma: float = 0.1,
        pairs: str = "last",
        cause_weights: Sequence[float] | None = None,
        bin_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(reduction, visit_weighting)
        _choice("reduction", reduction, ("mean", "sum"))
        _choice("pairs", pairs, ("last", "visit"))
        if not (isinstance(num_causes, int) and num_causes >= 1):
            raise ConfigError(f"num_causes must be an integer >= 1, got {num_causes!r}")
        if not ranking_weight >= 0:
            raise ConfigError(f"ranking_weight must be >= 0, got {ranking_weight!r}")
        _positive("sigma", sigma)
        self.num_causes = num_causes
        self.ranking_weight = float(ranking_weight)
        self.sigma = float(sigma)
        self.pairs = pairs
        _weights_buffer(self, "cause_weights", cause_weights)
        _weights_buffer(self, "bin_weights", bin_weights)
        if self.cause_weights is not None and self.cause_weights.numel() != num_causes:
            raise ConfigError(
                f"cause_weights needs one weight per cause ({num_causes}), got {self.cause_weights.numel()}"
            )

    def forward(
        self,
        logits: Tensor,
        bin: Tensor,
        event: Tensor,
        mask: Tensor,
        remaining: Tensor | None = None,
        event_visit: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        loss = LF.pmf_nll(
            logits, bin, event, mask, num_causes=self.num_causes, bin_weights=self.bin_weights, weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )
        if self.ranking_weight == 0:
            return loss
        if remaining is None:
            raise ValueError("the DeepHit ranking term compares remaining times: pass remaining (or ranking_weight=0)")
        ranking = LF.deephit_ranking_loss(
            logits, bin, remaining, event, mask, event_visit=event_visit, num_causes=self.num_causes,
            sigma=self.sigma, pairs=self.pairs, cause_weights=self.cause_weights, weight=weight,
            reduction=self.reduction,
        )
        return loss + self.ranking_weight * ranking


class CalibrationLoss(_Loss):
    """Expected vs observed events per horizon bin (:func:`~ehrseq.losses.functional.logistic_hazard_calibration`)."""

    def __init__(self, *, cause: int | None = None, reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(reduction, visit_weighting)
        _cause(cause)
        self.cause = cause

    def forward(self, logits: Tensor, bin: Tensor, event: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        return LF.logistic_hazard_calibration(
            logits, bin, event, mask, cause=self.cause, weight=weight, reduction=self.reduction,
            visit_weighting=self.visit_weighting,
        )


class DiscreteTimeCalibrationLoss(_Loss):
    """Expected vs observed events per visit position (:func:`~ehrseq.losses.functional.discrete_time_calibration`)."""

    def __init__(
        self, *, censored_survives_last: bool = False, cause: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        _cause(cause)
        self.censored_survives_last = bool(censored_survives_last)
        self.cause = cause

    def forward(
        self, logits: Tensor, event: Tensor, event_visit: Tensor, mask: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        return LF.discrete_time_calibration(
            logits, event, event_visit, mask, censored_survives_last=self.censored_survives_last, cause=self.cause,
            weight=weight, reduction=self.reduction,
        )


class RankingLoss(_Loss):
    """Pairwise logistic ranking on risk scores (:func:`~ehrseq.losses.functional.ranking_loss`)."""

    def __init__(self, *, temperature: float = 1.0, cause: int | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        _positive("temperature", temperature)
        _cause(cause)
        self.temperature = float(temperature)
        self.cause = cause

    def forward(self, risk: Tensor, time: Tensor, event: Tensor, mask: Tensor | None = None,
                weight: Tensor | None = None) -> Tensor:
        return LF.ranking_loss(
            risk, time, event, mask=mask, temperature=self.temperature, cause=self.cause, weight=weight,
            reduction=self.reduction,
        )


class _FocalParameters(_Loss):
    def __init__(self, gamma: float, alpha: float | None, detach_weights: bool, cause: int | None,
                 reduction: str, visit_weighting: str) -> None:
        super().__init__(reduction, visit_weighting)
        _config(check_focal_parameters, gamma, alpha)
        _cause(cause)
        self.gamma = float(gamma)
        self.alpha = alpha
        self.detach_weights = bool(detach_weights)
        self.cause = cause


class FocalLoss(_FocalParameters):
    """Focal visit-indexed discrete-time loss (:func:`~ehrseq.losses.functional.discrete_time_focal_loss`)."""

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = 0.25,
        detach_weights: bool = False,
        censored_survives_last: bool = False,
        cause: int | None = None,
        time_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(gamma, alpha, detach_weights, cause, reduction, visit_weighting)
        self.censored_survives_last = bool(censored_survives_last)
        _weights_buffer(self, "time_weights", time_weights)

    def forward(
        self, logits: Tensor, event: Tensor, event_visit: Tensor, mask: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        return LF.discrete_time_focal_loss(
            logits, event, event_visit, mask, gamma=self.gamma, alpha=self.alpha,
            detach_weights=self.detach_weights, censored_survives_last=self.censored_survives_last, cause=self.cause,
            time_weights=_per_position(self.time_weights, logits.shape[-1], logits), weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class LogisticHazardFocalLoss(_FocalParameters):
    """Focal logistic-hazard grid loss (:func:`~ehrseq.losses.functional.logistic_hazard_focal_loss`)."""

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = 0.25,
        detach_weights: bool = False,
        cause: int | None = None,
        bin_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(gamma, alpha, detach_weights, cause, reduction, visit_weighting)
        _weights_buffer(self, "bin_weights", bin_weights)

    def forward(self, logits: Tensor, bin: Tensor, event: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        return LF.logistic_hazard_focal_loss(
            logits, bin, event, mask, gamma=self.gamma, alpha=self.alpha, detach_weights=self.detach_weights,
            cause=self.cause, bin_weights=self.bin_weights, weight=weight, reduction=self.reduction,
            visit_weighting=self.visit_weighting,
        )


class MultiTaskLoss(_Loss):
    """Σ_k exp(−s_k) L_k + s_k over named task losses (:func:`~ehrseq.losses.functional.uncertainty_weighted_sum`).

    Holds one log-variance s_k = log σ_k² per task (a learnable parameter, initialised at 0, or a fixed
    buffer with ``learnable=False``, which gives the plain sum). ``forward`` takes a mapping from task
    name to a scalar loss; tasks missing from the mapping (no labels in this batch) are left out,
    unknown names raise :class:`ConfigError`. The learned task weights are ``exp(-log_variances)``.
    """

    def __init__(self, tasks: Sequence[str], *, learnable: bool = True, reduction: str = "sum") -> None:
        super().__init__(reduction)
        tasks = list(tasks)
        if not tasks or len(set(tasks)) != len(tasks) or not all(isinstance(t, str) for t in tasks):
            raise ConfigError(f"tasks must be a non-empty list of distinct names, got {tasks!r}")
        self.tasks = tasks
        self.learnable = bool(learnable)
        initial = torch.zeros(len(tasks))
        if learnable:
            self.log_variances = nn.Parameter(initial)
        else:
            self.register_buffer("log_variances", initial)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise ConfigError(f"unknown task(s) {unknown}; this loss combines {self.tasks}")
        present = [i for i, task in enumerate(self.tasks) if task in losses]
        if not present:
            raise ValueError("no task loss given")
        values = [torch.as_tensor(losses[self.tasks[i]]) for i in present]
        for i, value in zip(present, values):
            if value.numel() != 1:
                raise ShapeError(f"the loss of task {self.tasks[i]!r} must be a scalar, got shape {list(value.shape)}")
        values = torch.stack([value.reshape(()) for value in values])
        log_variances = self.log_variances[present].to(values.dtype)
        return LF.uncertainty_weighted_sum(values, log_variances, reduction=self.reduction)


class ContrastiveLoss(_Loss):
    """Supervised InfoNCE on the states at the event/censoring visit
    (:func:`~ehrseq.losses.functional.supervised_contrastive_loss`)."""

    def __init__(self, *, temperature: float = 0.5, positives: str = "sum", cause: int | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        _positive("temperature", temperature)
        _choice("positives", positives, ("sum", "mean"))
        _cause(cause)
        self.temperature = float(temperature)
        self.positives = positives
        self.cause = cause

    def forward(
        self, states: Tensor, event: Tensor, event_visit: Tensor, mask: Tensor, weight: Tensor | None = None
    ) -> Tensor:
        return LF.supervised_contrastive_loss(
            states, event, event_visit, mask, temperature=self.temperature, positives=self.positives,
            cause=self.cause, weight=weight, reduction=self.reduction,
        )


class SmoothHazardPenalty(_Loss):
    """Squared hazard change between consecutive visits (:func:`~ehrseq.losses.functional.smooth_hazard_penalty`)."""

    def __init__(self, *, reduction: str = "mean", visit_weighting: str = "patient") -> None:
        super().__init__(reduction, visit_weighting)

    def forward(self, logits: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
        return LF.smooth_hazard_penalty(
            logits, mask, weight=weight, reduction=self.reduction, visit_weighting=self.visit_weighting
        )


class LogitNormalHazardNLL(_Loss):
    """Visit-indexed NLL with a logit-normal hazard (:func:`~ehrseq.losses.functional.logit_normal_hazard_nll`)."""

    def __init__(
        self,
        *,
        nodes: int = DEFAULT_HERMITE_NODES,
        censored_survives_last: bool = False,
        cause: int | None = None,
        time_weights: Sequence[float] | None = None,
        reduction: str = "mean",
        visit_weighting: str = "patient",
    ) -> None:
        super().__init__(reduction, visit_weighting)
        if not (isinstance(nodes, int) and nodes >= 1):
            raise ConfigError(f"nodes must be an integer >= 1, got {nodes!r}")
        _cause(cause)
        self.nodes = nodes
        self.censored_survives_last = bool(censored_survives_last)
        self.cause = cause
        _weights_buffer(self, "time_weights", time_weights)

    def forward(self, mean_logits: Tensor, log_scale: Tensor, event: Tensor, event_visit: Tensor, mask: Tensor,
                weight: Tensor | None = None) -> Tensor:
        return LF.logit_normal_hazard_nll(
            mean_logits, log_scale, event, event_visit, mask, nodes=self.nodes,
            censored_survives_last=self.censored_survives_last, cause=self.cause,
            time_weights=_per_position(self.time_weights, mean_logits.shape[-1], mean_logits), weight=weight,
            reduction=self.reduction, visit_weighting=self.visit_weighting,
        )


class NextVisitLoss(_Loss):
    """Auxiliary next-visit prediction: numeric MSE and code BCE, weighted and summed
    (:func:`~ehrseq.losses.functional.next_visit_numeric_loss`, :func:`~ehrseq.losses.functional.next_visit_code_loss`).

    Either part may be left out of a call (its inputs ``None``); ``codes`` are multi-hot targets
    ``[B, M, V]`` (see :func:`~ehrseq.losses.functional.codes_to_multi_hot`).
    """

    def __init__(self, *, numeric_weight: float = 1.0, code_weight: float = 1.0, reduction: str = "mean",
                 visit_weighting: str = "patient") -> None:
        super().__init__(reduction, visit_weighting)
        if not (numeric_weight >= 0 and code_weight >= 0):
            raise ConfigError(f"numeric_weight and code_weight must be >= 0, got {numeric_weight!r}, {code_weight!r}")
        self.numeric_weight = float(numeric_weight)
        self.code_weight = float(code_weight)

    def forward(
        self,
        mask: Tensor,
        numeric_prediction: Tensor | None = None,
        numeric: Tensor | None = None,
        numeric_missing: Tensor | None = None,
        code_logits: Tensor | None = None,
        codes: Tensor | None = None,
        weight: Tensor | None = None,
    ) -> Tensor:
        parts = []
        options = {"weight": weight, "reduction": self.reduction, "visit_weighting": self.visit_weighting}
        if numeric_prediction is not None:
            if numeric is None or numeric_missing is None:
                raise ValueError("numeric_prediction needs numeric and numeric_missing targets")
            parts.append(self.numeric_weight * LF.next_visit_numeric_loss(
                numeric_prediction, numeric, numeric_missing, mask, **options
            ))
        if code_logits is not None:
            if codes is None:
                raise ValueError("code_logits needs multi-hot codes targets")
            parts.append(self.code_weight * LF.next_visit_code_loss(code_logits, codes, mask, **options))
        if not parts:
            raise ValueError("give numeric_prediction and/or code_logits")
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]


class CoxPartialLikelihood(_Loss):
    """Negative Cox partial log-likelihood (:func:`~ehrseq.losses.functional.cox_partial_likelihood`)."""

    def __init__(self, *, ties: str = "breslow", cause: int | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        _choice("ties", ties, ("breslow", "efron"))
        _cause(cause)
        self.ties = ties
        self.cause = cause

    def forward(self, risk: Tensor, time: Tensor, event: Tensor, weight: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        return LF.cox_partial_likelihood(
            risk, time, event, weight=weight, mask=mask, ties=self.ties, cause=self.cause, reduction=self.reduction
        )
