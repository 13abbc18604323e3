"""Loss terms: the one registry of what a training objective is made of.

A :class:`LossTerm` has a name — the one name of that loss in ``DynamicSurvival(loss=...)``, in a
training configuration file (``loss = {nll = 1.0, ranking = {weight = 0.1, horizon = 365}}``), in the
loss benchmark and in the docs — the head families it applies to (asked through their capabilities,
:mod:`ehrseq.models.families`), whether it is a per-visit sum (``per_visit``: then the objective
divides it by a global constant under visit weighting, see :mod:`ehrseq.objective`), and the function
that reads the model's output and the batch targets and calls a functional core of
:mod:`ehrseq.losses.functional`. ``modules`` lists the ``nn.Module`` wrappers of those cores, for
training loops of one's own; every catalogue module is a term's or is in :data:`NOT_TERMS`, with the
reason.

=====================  ================================================================================
term                   meaning (head families)
=====================  ================================================================================
``nll``                the head's own likelihood (every family, by its declared likelihood):
                       visit-indexed NLL (logit-normal with ``hazard_uncertainty``), logistic-hazard
                       NLL, PMF/DeepHit NLL (competing risks included), log f / log S at the
                       remaining time for the piecewise and parametric families (interval-censored
                       wherever the batch has a finite ``upper``), MENSA for multi-event heads.
                       Options ``time_weights`` / ``bin_weights`` give the time-stratified variant
``mle_right``          right-censored MLE ignoring interval bounds (families with a density)
``crps``               Survival-CRPS (log-normal: dedicated quadrature; other single-event families
                       in days: generic integration in log time); interval form where ``upper`` is finite
``crps_right``         right-censored Survival-CRPS ignoring interval bounds
``crps_log_time``      closed-form CRPS of log-time under a Gaussian (log-normal families)
``focal``              focal variant of the discrete NLL (families with hazard logits)
``calibration``        expected-vs-observed event counts per bin (families with hazard logits)
``ranking``            pairwise logistic ranking of the risk within ``horizon`` days from each patient's
                       last visit (next-visit hazard for the visit-indexed head), times = remaining
                       time there (all but multi-event heads)
``deephit_ranking``    DeepHit's ranking term (PMF likelihoods: ``pmf``, ``competing_pmf``)
``contrastive``        supervised InfoNCE on the encoder states at the event/censoring visit
``smooth``             squared change of the hazards between consecutive visits (hazard logits)
``next_visit``         MSE on the next visit's numeric features + BCE on its codes (``next_visit=True``)
=====================  ================================================================================

A new term is a function ``(output, batch, context, options) -> scalar`` registered with
:func:`register_term` at the end of this module (see docs/design.md, "How to add a loss term").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.losses.continuous import (
    LogNormalSurvivalCRPSLoss,
    LogTimeNormalCRPSLoss,
    MENSALoss,
    SurvivalCRPSLoss,
    SurvivalNLLLoss,
)
from ehrseq.losses.functional.auxiliary import next_visit_code_loss_from_indices, next_visit_numeric_loss
from ehrseq.losses.functional.calibration import discrete_time_calibration, logistic_hazard_calibration
from ehrseq.losses.functional.contrastive import supervised_contrastive_loss
from ehrseq.losses.functional.crps import crps_log_time_normal, survival_crps, survival_crps_lognormal
from ehrseq.losses.functional.deephit import deephit_ranking_loss, pmf_nll
from ehrseq.losses.functional.discrete import discrete_time_nll, logistic_hazard_nll
from ehrseq.losses.functional.focal import discrete_time_focal_loss, logistic_hazard_focal_loss
from ehrseq.losses.functional.likelihood import survival_nll
from ehrseq.losses.functional.multievent import mensa_loss
from ehrseq.losses.functional.ranking import ranking_loss
from ehrseq.losses.functional.regularizers import smooth_hazard_penalty
from ehrseq.losses.functional.uncertainty import logit_normal_hazard_nll
from ehrseq.losses.modules import (
    CalibrationLoss,
    ContrastiveLoss,
    CoxPartialLikelihood,
    DeepHitLoss,
    DiscreteTimeCalibrationLoss,
    DiscreteTimeNLL,
    FocalLoss,
    LogisticHazardFocalLoss,
    LogisticHazardLoss,
    LogitNormalHazardNLL,
    MultiTaskLoss,
    NextVisitLoss,
    RankingLoss,
    SmoothHazardPenalty,
)
from ehrseq.models.distributions import LogNormal
from ehrseq.models.families import FAMILIES, HeadFamily, Likelihood
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import ModelOutput
from ehrseq.registry import Registry


# ------------------------------------------------------------------------------------------ context
@dataclass(frozen=True)
class TermContext:
    """What a term knows besides the model output and the batch: the head, the resolved visit
    weighting (``"patient"`` or ``"visit"``), the event type of interest, and the term itself."""

    head: HeadConfig
    visit_weighting: str
    cause: int | None
    term: str = ""
    per_visit: bool = False

    @property
    def family(self) -> HeadFamily:
        return self.head.family

    def for_term(self, term: LossTerm) -> TermContext:
        return replace(self, term=term.name, per_visit=term.per_visit)

    def per_visit_options(self, batch: SequenceBatch) -> dict[str, Any]:
        """``weight``, ``visit_weighting`` and ``reduction`` of a per-visit functional loss: under visit
        weighting the batch *sum* (the objective divides it by a global constant), under patient
        weighting the batch mean over patients. Only terms registered with ``per_visit=True`` may ask
        (so that no per-visit sum escapes the normalisation)."""
        if not self.per_visit:
            raise ConfigError(f"loss term {self.term!r} is not registered as per_visit and cannot aggregate per visit")
        reduction = "sum" if self.visit_weighting == "visit" else "mean"
        return {"weight": batch.weight, "visit_weighting": self.visit_weighting, "reduction": reduction}


TermFunction = Callable[[ModelOutput, SequenceBatch, TermContext, dict[str, Any]], torch.Tensor]


@dataclass(frozen=True)
class LossTerm:
    """A training term (see the module docstring).

    ``compute(output, batch, context, options)`` returns a scalar; ``applies(family)`` says whether
    the term is defined for a head family; ``per_visit`` terms aggregate through
    :meth:`TermContext.per_visit_options`; ``needs_next_visit`` terms need the model's next-visit
    predictor; ``summary`` is one line for listings and errors; ``modules`` the ``nn.Module``
    wrappers of its functional cores.
    """

    name: str
    compute: TermFunction
    applies: Callable[[HeadFamily], bool]
    per_visit: bool
    summary: str
    modules: tuple[type[nn.Module], ...] = ()
    needs_next_visit: bool = False

    def supported_kinds(self) -> list[str]:
        """The registered head kinds this term applies to."""
        return [kind for kind, family in FAMILIES.items() if self.applies(family)]


TERMS: Registry[LossTerm] = Registry("loss term")

#: Catalogue modules that are not training terms, and why.
NOT_TERMS: dict[type[nn.Module], str] = {
    CoxPartialLikelihood: "the partial likelihood needs a proportional-hazards risk score, and no head outputs one "
                          "(a head predicts the distribution of the remaining time; the ranking term is the "
                          "risk-ordering term of these heads); for risk-score models and training loops of one's own",
    MultiTaskLoss: "learned weights of several losses: the objective's balance='uncertainty', not a term of its own",
}


def register_term(term: LossTerm) -> LossTerm:
    """Add ``term`` under ``term.name`` (a new, lower-case snake_case name)."""
    return TERMS.register(term.name, term)


def get_term(name: str) -> LossTerm:
    """The term registered under ``name``; :class:`ConfigError` with close matches otherwise."""
    return TERMS.lookup(name)


# ------------------------------------------------------------------------------------------ helpers
def _require(batch: SequenceBatch, *names: str) -> None:
    missing = [n for n in names if getattr(batch, n) is None]
    if missing:
        raise ConfigError(f"this loss needs the batch targets {missing}; build the batch from a labelled cohort")


def _finite_upper(batch: SequenceBatch) -> torch.Tensor | None:
    upper = batch.upper
    if upper is None or not bool((torch.isfinite(upper) & batch.mask).any()):
        return None
    return upper


def _select_cause(event: torch.Tensor, cause: int | None) -> torch.Tensor:
    if cause is None:
        return event
    return (event == cause).to(event.dtype)


def _causes_and_event(batch: SequenceBatch, ctx: TermContext) -> tuple[int, torch.Tensor]:
    """K and the event labels of a mass-grid likelihood: every cause for a competing-risks head, else
    the event of interest (``cause``)."""
    if ctx.family.competing:
        return ctx.family.num_causes(ctx.head), batch.event
    return 1, _select_cause(batch.event, ctx.cause)


def _last_visit(values: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """values ``[B, M]`` at each patient's last real visit → ``[B]``."""
    last = (batch.lengths - 1).clamp_min(0)
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


# ------------------------------------------------------------------------------------------ nll
def _visit_sequence_nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "event_visit")
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    scale = ctx.family.hazard_logit_scale(out.raw, ctx.head)
    if scale is not None:
        return logit_normal_hazard_nll(logits, scale, batch.event, batch.event_visit, batch.targets, cause=ctx.cause,
                                       **ctx.per_visit_options(batch), **opts)
    return discrete_time_nll(logits, batch.event, batch.event_visit, batch.targets, cause=ctx.cause,
                             **ctx.per_visit_options(batch), **opts)


def _hazard_grid_nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining", "bin")
    return logistic_hazard_nll(ctx.family.hazard_logit(out.raw, ctx.head), batch.bin, batch.event, batch.targets,
                               cause=ctx.cause, **ctx.per_visit_options(batch), **opts)


def _mass_grid_nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining", "bin")
    causes, event = _causes_and_event(batch, ctx)
    return pmf_nll(out.raw, batch.bin, event, batch.targets, num_causes=causes, **ctx.per_visit_options(batch), **opts)


def _duration_nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return survival_nll(out.distribution, batch.remaining, batch.event, batch.targets, upper=_finite_upper(batch),
                        cause=ctx.cause, **ctx.per_visit_options(batch), **opts)


def _multi_event_nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event_times", "event_flags")
    times = batch.event_times
    if batch.event_at_risk is not None:
        times = torch.where(batch.event_at_risk, times, torch.full_like(times, float("nan")))
    return mensa_loss(out.distribution, times, batch.event_flags, batch.time, batch.mask,
                      **ctx.per_visit_options(batch), **opts)


#: The ``nll`` of each likelihood a head family can declare.
_LIKELIHOODS: dict[Likelihood, TermFunction] = {
    Likelihood.VISIT_SEQUENCE: _visit_sequence_nll,
    Likelihood.HAZARD_GRID: _hazard_grid_nll,
    Likelihood.MASS_GRID: _mass_grid_nll,
    Likelihood.DURATION: _duration_nll,
    Likelihood.MULTI_EVENT: _multi_event_nll,
}


def _nll(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    return _LIKELIHOODS[ctx.family.likelihood](out, batch, ctx, opts)


# ------------------------------------------------------------------------------------------ other terms
def _mle_right(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return survival_nll(out.distribution, batch.remaining, batch.event, batch.targets, cause=ctx.cause,
                        **ctx.per_visit_options(batch), **opts)


def _crps_with(upper: torch.Tensor | None, out: ModelOutput, batch: SequenceBatch, ctx: TermContext,
               opts: dict[str, Any]) -> torch.Tensor:
    if isinstance(out.distribution, LogNormal):
        return survival_crps_lognormal(out.distribution, batch.remaining, batch.event, batch.targets, upper=upper,
                                       cause=ctx.cause, **ctx.per_visit_options(batch), **opts)
    return survival_crps(out.distribution, batch.remaining, batch.event, batch.targets, upper=upper, cause=ctx.cause,
                         **ctx.per_visit_options(batch), **opts)


def _crps(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return _crps_with(_finite_upper(batch), out, batch, ctx, opts)


def _crps_right(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return _crps_with(None, out, batch, ctx, opts)


def _crps_log_time(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return crps_log_time_normal(out.distribution, batch.remaining, batch.event, batch.targets,
                                upper=_finite_upper(batch), cause=ctx.cause, **ctx.per_visit_options(batch), **opts)


def _focal(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    if not ctx.family.in_days:
        _require(batch, "event", "event_visit")
        return discrete_time_focal_loss(logits, batch.event, batch.event_visit, batch.targets,
                                        cause=ctx.cause, **ctx.per_visit_options(batch), **opts)
    _require(batch, "event", "bin")
    return logistic_hazard_focal_loss(logits, batch.bin, batch.event, batch.targets, cause=ctx.cause,
                                      **ctx.per_visit_options(batch), **opts)


def _calibration(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    if not ctx.family.in_days:
        _require(batch, "event", "event_visit")
        return discrete_time_calibration(logits, batch.event, batch.event_visit, batch.targets,
                                         cause=ctx.cause, weight=batch.weight, **opts)
    _require(batch, "event", "bin")
    return logistic_hazard_calibration(logits, batch.bin, batch.event, batch.targets, cause=ctx.cause,
                                       weight=batch.weight, **opts)


def _ranking(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    opts = dict(opts)
    has_visit = batch.lengths > 0
    if not ctx.family.in_days:  # the visit-indexed head ranks by the hazard before the next visit
        risk = _last_visit(torch.sigmoid(ctx.family.hazard_logit(out.raw, ctx.head)), batch)
        opts.pop("horizon", None)
    else:
        if "horizon" not in opts:
            raise ConfigError("the ranking term needs a 'horizon' in days, e.g. {'ranking': {'weight': 0.1, 'horizon': 365}}")
        horizon = float(opts.pop("horizon"))
        # the distribution at each patient's last visit only (batch [B]), neutral for patients without one
        last = (torch.arange(batch.lengths.shape[0], device=batch.lengths.device), (batch.lengths - 1).clamp_min(0))
        distribution = out.distribution[last].masked(has_visit)
        if ctx.family.competing:
            risk = distribution.risk(horizon, ctx.cause or 1)[..., 0]
        else:
            risk = distribution.risk(horizon)[..., 0]
    at_risk = has_visit & _last_visit(batch.targets, batch)  # a last visit before entry counts immortal time
    return ranking_loss(risk, _last_visit(batch.remaining, batch), batch.event, mask=at_risk,
                        cause=ctx.cause, weight=batch.weight, **opts)


def _deephit_ranking(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining", "bin", "event_visit")
    causes, event = _causes_and_event(batch, ctx)
    # compared at the event visit: a visit whose sampled prediction time fell past the outcome (``dropped``) is
    # compared at its unmoved prediction time (the visit, or entry), whose target it keeps, not left out
    compared = batch.targets if batch.dropped is None else batch.targets | batch.dropped
    return deephit_ranking_loss(out.raw, batch.bin, batch.remaining, event, compared,
                                event_visit=batch.event_visit, num_causes=causes, weight=batch.weight, **opts)


def _contrastive(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "event_visit")
    return supervised_contrastive_loss(out.states, batch.event, batch.event_visit, batch.mask, cause=ctx.cause,
                                       weight=batch.weight, **opts)


def _smooth(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    return smooth_hazard_penalty(logits, batch.mask, **ctx.per_visit_options(batch), **opts)


def _next_visit(out: ModelOutput, batch: SequenceBatch, ctx: TermContext, opts: dict[str, Any]) -> torch.Tensor:
    if out.next_numeric is None and out.next_code_logits is None:
        raise ConfigError("the next_visit term needs a model built with next_visit=True")
    common = ctx.per_visit_options(batch)
    total = out.raw.new_zeros(())
    if out.next_numeric is not None:
        total = total + next_visit_numeric_loss(out.next_numeric, batch.numeric, batch.numeric_missing, batch.mask,
                                                **common, **opts)
    if out.next_code_logits is not None:
        total = total + next_visit_code_loss_from_indices(out.next_code_logits, batch.codes, batch.mask, **common, **opts)
    return total


# ------------------------------------------------------------------------------------------ applicability
def _every_family(family: HeadFamily) -> bool:
    return True


def _single_event_in_days(family: HeadFamily) -> bool:
    return family.in_days and not family.competing and not family.multi_event


def _with_density(family: HeadFamily) -> bool:
    return family.likelihood is Likelihood.DURATION


def _log_normal(family: HeadFamily) -> bool:
    return issubclass(family.distribution_class, LogNormal)


def _with_hazard_logits(family: HeadFamily) -> bool:
    return family.hazard_logits


def _single_or_competing(family: HeadFamily) -> bool:
    return not family.multi_event


def _mass_grid(family: HeadFamily) -> bool:
    return family.likelihood is Likelihood.MASS_GRID


for _term in (
    LossTerm("nll", _nll, _every_family, True, "the head's own likelihood",
             (DiscreteTimeNLL, LogitNormalHazardNLL, LogisticHazardLoss, SurvivalNLLLoss, MENSALoss)),
    LossTerm("mle_right", _mle_right, _with_density, True, "right-censored MLE ignoring interval bounds"),
    LossTerm("crps", _crps, _single_event_in_days, True, "Survival-CRPS (interval form where upper is finite)",
             (SurvivalCRPSLoss, LogNormalSurvivalCRPSLoss)),
    LossTerm("crps_right", _crps_right, _single_event_in_days, True,
             "right-censored Survival-CRPS ignoring interval bounds"),
    LossTerm("crps_log_time", _crps_log_time, _log_normal, True, "closed-form CRPS of log-time under a Gaussian",
             (LogTimeNormalCRPSLoss,)),
    LossTerm("focal", _focal, _with_hazard_logits, True, "focal discrete-time NLL",
             (FocalLoss, LogisticHazardFocalLoss)),
    LossTerm("calibration", _calibration, _with_hazard_logits, False, "expected vs observed events per bin",
             (CalibrationLoss, DiscreteTimeCalibrationLoss)),
    LossTerm("ranking", _ranking, _single_or_competing, False,
             "pairwise ranking of the risk within a horizon from the last visit", (RankingLoss,)),
    LossTerm("deephit_ranking", _deephit_ranking, _mass_grid, False,
             "DeepHit's ranking term (DeepHitLoss: the PMF nll plus this term)", (DeepHitLoss,)),
    LossTerm("contrastive", _contrastive, _every_family, False, "supervised InfoNCE on the states at the last visit",
             (ContrastiveLoss,)),
    LossTerm("smooth", _smooth, _with_hazard_logits, True, "squared change of the hazards between visits",
             (SmoothHazardPenalty,)),
    LossTerm("next_visit", _next_visit, _every_family, True, "prediction of the next visit's features and codes",
             (NextVisitLoss,), needs_next_visit=True),
):
    register_term(_term)
