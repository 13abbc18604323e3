"""The training objective: a primary loss plus weighted auxiliary terms, configured by name.

Every term reads what it needs from the model's :class:`~ehrseq.models.model.ModelOutput` and the
:class:`~ehrseq.data.SequenceBatch` targets, and calls the functional core in
:mod:`ehrseq.losses.functional`. Which terms a head supports is checked when the objective is built,
with a :class:`~ehrseq.errors.ConfigError` listing the alternatives.

=====================  ================================================================================
term                   meaning (head kinds)
=====================  ================================================================================
``nll``                the head's own likelihood: visit-indexed NLL (``visit_hazard``; logit-normal
                       with ``hazard_uncertainty``), logistic-hazard NLL, PMF/DeepHit NLL (incl.
                       competing risks), MLE for piecewise and parametric heads (interval-censored
                       wherever the batch has a finite ``upper``), MENSA for ``multi_event``.
                       Options ``time_weights`` / ``bin_weights`` give the time-stratified variant.
``mle_right``          right-censored MLE ignoring interval bounds (continuous heads)
``crps``               Survival-CRPS (log-normal: dedicated quadrature; other continuous and grid
                       heads: generic numerical integration); interval form where ``upper`` is finite
``crps_right``         right-censored Survival-CRPS ignoring interval bounds
``crps_log_time``      closed-form CRPS of log-time under a Gaussian (``lognormal`` only)
``focal``              focal variant of the discrete NLL (``visit_hazard``, ``logistic_hazard``)
``calibration``        expected-vs-observed event counts per bin (``visit_hazard``, ``logistic_hazard``)
``ranking``            pairwise logistic ranking of the risk within ``horizon`` days from each patient's
                       last visit (next-visit hazard for ``visit_hazard``), times = remaining time there
``deephit_ranking``    DeepHit's ranking term (``pmf``, ``competing_pmf``)
``contrastive``        supervised InfoNCE on the encoder states at the event/censoring visit
``smooth``             squared change of the hazards between consecutive visits (hazard-logit heads)
``next_visit``         MSE on the next visit's numeric features + BCE on its codes (``next_visit=True``)
=====================  ================================================================================

``balance="uncertainty"`` replaces the fixed weights by learned homoscedastic-uncertainty weights
(Kendall et al.; [catalogue] §4): Σ_k exp(−s_k) L_k + s_k.

**Visit weighting and calibration.** Per-visit losses (every head except ``visit_hazard``) score the
outcome once per visit. Weighting each patient equally (a mean over the patient's visits, weight 1/n_i
per visit) makes the weights depend on the outcome — patients who die early have few visits — and
biases the fitted risks upwards; so does a per-batch mean over visits when batches are bucketed by
history length. The unbiased choice is to weight every visit equally across the whole training set:
with ``visit_weighting="visit"`` each batch's per-visit terms are *summed* and divided by a global
constant, Σ_b w_b × (mean visits per training patient), never by the batch's own visit count.
``visit_weighting="auto"`` (default) uses ``"visit"`` for per-visit heads and ``"patient"`` for the
visit-indexed head, whose per-patient value is the patient's whole sequence likelihood (the standard,
unbiased likelihood; [catalogue]'s convention).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.losses.functional.auxiliary import codes_to_multi_hot, next_visit_code_loss, next_visit_numeric_loss
from ehrseq.losses.functional.calibration import discrete_time_calibration, logistic_hazard_calibration
from ehrseq.losses.functional.contrastive import supervised_contrastive_loss
from ehrseq.losses.functional.crps import crps_log_time_normal, survival_crps, survival_crps_lognormal
from ehrseq.losses.functional.deephit import deephit_ranking_loss, pmf_nll
from ehrseq.losses.functional.discrete import discrete_time_nll, logistic_hazard_nll
from ehrseq.losses.functional.focal import discrete_time_focal_loss, logistic_hazard_focal_loss
from ehrseq.losses.functional.likelihood import survival_nll
from ehrseq.losses.functional.multievent import mensa_loss
from ehrseq.losses.functional.multitask import uncertainty_weighted_sum
from ehrseq.losses.functional.ranking import ranking_loss
from ehrseq.losses.functional.regularizers import smooth_hazard_penalty
from ehrseq.losses.functional.uncertainty import logit_normal_hazard_nll
from ehrseq.models.distributions import LogNormal
from ehrseq.models.families import FAMILIES, HeadFamily, Likelihood
from ehrseq.models.heads import HeadConfig
from ehrseq.models.model import ModelConfig, ModelOutput
from ehrseq.train import LossResult


@dataclass(frozen=True)
class TermConfig:
    """One loss term: its name, weight and options (keyword arguments of the functional loss)."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "options": dict(self.options)}


@dataclass(frozen=True)
class ObjectiveConfig:
    """A primary term plus auxiliary terms; ``cause`` selects the event type of interest for
    single-event heads trained on data with K > 1 event types (others count as censored)."""

    terms: tuple[TermConfig, ...] = (TermConfig("nll"),)
    balance: str = "fixed"
    visit_weighting: str = "auto"
    cause: int | None = None

    def __post_init__(self) -> None:
        if not self.terms:
            raise ConfigError("an objective needs at least one loss term")
        if self.balance not in ("fixed", "uncertainty"):
            raise ConfigError(f"balance must be 'fixed' or 'uncertainty', got {self.balance!r}")
        if self.visit_weighting not in ("auto", "patient", "visit"):
            raise ConfigError(f"visit_weighting must be 'auto', 'patient' or 'visit', got {self.visit_weighting!r}")
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ConfigError(f"each loss term may appear once, got {names}")
        for term in self.terms:
            if term.name not in TERMS:
                raise ConfigError(f"unknown loss term {term.name!r}; available: {sorted(TERMS)}")
            if not term.weight >= 0:
                raise ConfigError(f"loss term {term.name!r} has a negative or NaN weight {term.weight}")

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any] | ObjectiveConfig, **defaults: Any) -> ObjectiveConfig:
        """Build from a user-friendly spec.

        * ``"crps"`` — one term;
        * ``{"nll": 1.0, "ranking": {"weight": 0.1, "horizon": 365}}`` — terms with weights or with a
          dict of ``weight`` and options (the first key is the primary term);
        * ``{"terms": [...], "balance": ..., ...}`` — the :meth:`to_dict` form.
        """
        if isinstance(spec, ObjectiveConfig):
            return spec
        if isinstance(spec, str):
            return cls(terms=(TermConfig(spec),), **defaults)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a loss is a name, a mapping of names to weights, or an ObjectiveConfig; got {spec!r}")
        if "terms" in spec:
            settings = {**defaults, **{k: v for k, v in spec.items() if k != "terms"}}
            unknown = set(settings) - {"balance", "visit_weighting", "cause"}
            if unknown:
                raise ConfigError(f"unknown objective settings: {sorted(unknown)}")
            terms = tuple(
                TermConfig(t["name"], float(t.get("weight", 1.0)), dict(t.get("options", {}))) for t in spec["terms"]
            )
            return cls(terms=terms, **settings)
        terms = []
        for name, value in spec.items():
            if isinstance(value, Mapping):
                options = dict(value)
                weight = float(options.pop("weight", 1.0))
                terms.append(TermConfig(name, weight, options))
            else:
                terms.append(TermConfig(name, float(value)))
        return cls(terms=tuple(terms), **defaults)

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": [t.to_dict() for t in self.terms],
            "balance": self.balance,
            "visit_weighting": self.visit_weighting,
            "cause": self.cause,
        }


# ------------------------------------------------------------------------------------------ terms
@dataclass(frozen=True)
class _Context:
    head: HeadConfig
    visit_weighting: str  # "patient" or "visit" (resolved)
    cause: int | None

    @property
    def family(self) -> HeadFamily:
        return self.head.family


def _require(batch: SequenceBatch, *names: str) -> None:
    missing = [n for n in names if getattr(batch, n) is None]
    if missing:
        raise ConfigError(f"this loss needs the batch targets {missing}; build the batch from a labelled cohort")


def _common(batch: SequenceBatch, ctx: _Context) -> dict[str, Any]:
    """Weighting arguments of a per-visit loss: with visit weighting, the batch *sum* (normalised
    globally by :class:`Objective`); with patient weighting, the batch mean over patients."""
    reduction = "sum" if ctx.visit_weighting == "visit" else "mean"
    return {"weight": batch.weight, "visit_weighting": ctx.visit_weighting, "reduction": reduction}


def _finite_upper(batch: SequenceBatch) -> torch.Tensor | None:
    upper = batch.upper
    if upper is None or not bool(torch.isfinite(upper[batch.mask]).any()):
        return None
    return upper


def _visit_sequence_nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "event_visit")
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    scale = ctx.family.hazard_logit_scale(out.raw, ctx.head)
    if scale is not None:
        return logit_normal_hazard_nll(logits, scale, batch.event, batch.event_visit, batch.mask, cause=ctx.cause,
                                       **_common(batch, ctx), **opts)
    return discrete_time_nll(logits, batch.event, batch.event_visit, batch.mask, cause=ctx.cause,
                             **_common(batch, ctx), **opts)


def _hazard_grid_nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining", "bin")
    return logistic_hazard_nll(ctx.family.hazard_logit(out.raw, ctx.head), batch.bin, batch.event, batch.mask,
                               cause=ctx.cause, **_common(batch, ctx), **opts)


def _mass_grid_nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining", "bin")
    causes, event = _causes_and_event(batch, ctx)
    return pmf_nll(out.raw, batch.bin, event, batch.mask, num_causes=causes, **_common(batch, ctx), **opts)


def _duration_nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event", "remaining")
    return survival_nll(out.distribution, batch.remaining, batch.event, batch.mask, upper=_finite_upper(batch),
                        cause=ctx.cause, **_common(batch, ctx), **opts)


def _multi_event_nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    _require(batch, "event_times", "event_flags")
    times = batch.event_times
    if batch.event_at_risk is not None:
        times = torch.where(batch.event_at_risk, times, torch.full_like(times, float("nan")))
    return mensa_loss(out.distribution, times, batch.event_flags, batch.time, batch.mask, **_common(batch, ctx), **opts)


#: The ``nll`` term of each likelihood a head family can declare.
_LIKELIHOODS = {
    Likelihood.VISIT_SEQUENCE: _visit_sequence_nll,
    Likelihood.HAZARD_GRID: _hazard_grid_nll,
    Likelihood.MASS_GRID: _mass_grid_nll,
    Likelihood.DURATION: _duration_nll,
    Likelihood.MULTI_EVENT: _multi_event_nll,
}


def _nll(out: ModelOutput, batch: SequenceBatch, ctx: _Context, opts: dict[str, Any]) -> torch.Tensor:
    return _LIKELIHOODS[ctx.family.likelihood](out, batch, ctx, opts)


def _causes_and_event(batch: SequenceBatch, ctx: _Context) -> tuple[int, torch.Tensor]:
    """K and the event labels of a mass-grid likelihood: every cause for a competing-risks head, else
    the event of interest (``cause``)."""
    if ctx.family.competing:
        return ctx.family.num_causes(ctx.head), batch.event
    return 1, _select_cause(batch.event, ctx.cause)


def _select_cause(event: torch.Tensor, cause: int | None) -> torch.Tensor:
    if cause is None:
        return event
    return (event == cause).to(event.dtype)


def _mle_right(out, batch, ctx, opts):
    _require(batch, "event", "remaining")
    return survival_nll(out.distribution, batch.remaining, batch.event, batch.mask, cause=ctx.cause,
                        **_common(batch, ctx), **opts)


def _crps(out, batch, ctx, opts, *, interval: bool = True):
    _require(batch, "event", "remaining")
    upper = _finite_upper(batch) if interval else None
    if isinstance(out.distribution, LogNormal):
        return survival_crps_lognormal(out.distribution, batch.remaining, batch.event, batch.mask, upper=upper,
                                       cause=ctx.cause, **_common(batch, ctx), **opts)
    return survival_crps(out.distribution, batch.remaining, batch.event, batch.mask, upper=upper, cause=ctx.cause,
                         **_common(batch, ctx), **opts)


def _crps_log_time(out, batch, ctx, opts):
    _require(batch, "event", "remaining")
    return crps_log_time_normal(out.distribution, batch.remaining, batch.event, batch.mask,
                                upper=_finite_upper(batch), cause=ctx.cause, **_common(batch, ctx), **opts)


def _focal(out, batch, ctx, opts):
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    if not ctx.family.in_days:
        _require(batch, "event", "event_visit")
        return discrete_time_focal_loss(logits, batch.event, batch.event_visit, batch.mask,
                                        cause=ctx.cause, **_common(batch, ctx), **opts)
    _require(batch, "event", "bin")
    return logistic_hazard_focal_loss(logits, batch.bin, batch.event, batch.mask, cause=ctx.cause,
                                      **_common(batch, ctx), **opts)


def _calibration(out, batch, ctx, opts):
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    if not ctx.family.in_days:
        _require(batch, "event", "event_visit")
        return discrete_time_calibration(logits, batch.event, batch.event_visit, batch.mask,
                                         cause=ctx.cause, weight=batch.weight, **opts)
    _require(batch, "event", "bin")
    return logistic_hazard_calibration(logits, batch.bin, batch.event, batch.mask, cause=ctx.cause,
                                       weight=batch.weight, **opts)


def _last_visit(values: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """values ``[B, M]`` at each patient's last real visit → ``[B]``."""
    last = (batch.lengths - 1).clamp_min(0)
    return values.gather(1, last.unsqueeze(1)).squeeze(1)


def _ranking(out, batch, ctx, opts):
    _require(batch, "event", "remaining")
    opts = dict(opts)
    if not ctx.family.in_days:  # the visit-indexed head ranks by the hazard before the next visit
        risk = torch.sigmoid(ctx.family.hazard_logit(out.raw, ctx.head))
        opts.pop("horizon", None)
    else:
        if "horizon" not in opts:
            raise ConfigError("the ranking term needs a 'horizon' in days, e.g. {'ranking': {'weight': 0.1, 'horizon': 365}}")
        horizon = float(opts.pop("horizon"))
        distribution = out.distribution
        if ctx.family.competing:
            risk = distribution.risk(horizon, ctx.cause or 1)[..., 0]
        else:
            risk = distribution.masked(batch.mask).risk(horizon)[..., 0]
    has_visit = batch.lengths > 0
    return ranking_loss(_last_visit(risk, batch), _last_visit(batch.remaining, batch), batch.event, mask=has_visit,
                        cause=ctx.cause, weight=batch.weight, **opts)


def _deephit_ranking(out, batch, ctx, opts):
    _require(batch, "event", "remaining", "bin", "event_visit")
    causes, event = _causes_and_event(batch, ctx)
    return deephit_ranking_loss(out.raw, batch.bin, batch.remaining, event, batch.mask,
                                event_visit=batch.event_visit, num_causes=causes, weight=batch.weight, **opts)


def _contrastive(out, batch, ctx, opts):
    _require(batch, "event", "event_visit")
    return supervised_contrastive_loss(out.states, batch.event, batch.event_visit, batch.mask, cause=ctx.cause,
                                       weight=batch.weight, **opts)


def _smooth(out, batch, ctx, opts):
    logits = ctx.family.hazard_logit(out.raw, ctx.head)
    return smooth_hazard_penalty(logits, batch.mask, **_common(batch, ctx), **opts)


def _next_visit(out, batch, ctx, opts):
    if out.next_numeric is None and out.next_code_logits is None:
        raise ConfigError("the next_visit term needs a model built with next_visit=True")
    common = _common(batch, ctx)
    total = out.raw.new_zeros(())
    if out.next_numeric is not None:
        total = total + next_visit_numeric_loss(out.next_numeric, batch.numeric, batch.numeric_missing, batch.mask,
                                                **common, **opts)
    if out.next_code_logits is not None:
        targets = codes_to_multi_hot(batch.codes, out.next_code_logits.shape[-1]).to(out.next_code_logits.dtype)
        total = total + next_visit_code_loss(out.next_code_logits, targets, batch.mask, **common, **opts)
    return total


TermFunction = Callable[[ModelOutput, SequenceBatch, _Context, dict[str, Any]], torch.Tensor]
Applies = Callable[[HeadFamily], bool]


def _single_event_in_days(family: HeadFamily) -> bool:
    return family.in_days and not family.competing and not family.multi_event


def _any(family: HeadFamily) -> bool:
    return True


#: term name → (function, which head families it applies to). Terms built on :func:`_common` are
#: per-visit sums under visit weighting and are normalised by :meth:`Objective._visit_normaliser`.
TERMS: dict[str, tuple[TermFunction, Applies]] = {
    "nll": (_nll, _any),
    "mle_right": (_mle_right, lambda family: family.likelihood is Likelihood.DURATION),
    "crps": (_crps, _single_event_in_days),
    "crps_right": (lambda o, b, c, p: _crps(o, b, c, p, interval=False), _single_event_in_days),
    "crps_log_time": (_crps_log_time, lambda family: issubclass(family.distribution_class, LogNormal)),
    "focal": (_focal, lambda family: family.hazard_logits),
    "calibration": (_calibration, lambda family: family.hazard_logits),
    "ranking": (_ranking, lambda family: not family.multi_event),
    "deephit_ranking": (_deephit_ranking, lambda family: family.likelihood is Likelihood.MASS_GRID),
    "contrastive": (_contrastive, _any),
    "smooth": (_smooth, lambda family: family.hazard_logits),
    "next_visit": (_next_visit, _any),
}


def supported_kinds(term: str) -> list[str]:
    """The registered head kinds a term applies to."""
    applies = TERMS[term][1]
    return [kind for kind, family in FAMILIES.items() if applies(family)]


#: Terms whose functional loss receives :func:`_common` (per-visit aggregation).
PER_VISIT_TERMS = frozenset({"nll", "mle_right", "crps", "crps_right", "crps_log_time", "focal", "smooth", "next_visit"})


def resolve_visit_weighting(visit_weighting: str, family: HeadFamily) -> str:
    """``"auto"`` → the family's own default (``"patient"`` for the visit-indexed head's sequence
    likelihood, ``"visit"`` for every head predicting the remaining time from each visit)."""
    if visit_weighting != "auto":
        return visit_weighting
    return family.visit_weighting


class Objective(nn.Module):
    """``objective(output, batch) -> LossResult``: the weighted sum of the configured terms.

    ``visits_per_patient`` is the mean number of visits per training patient: the global constant that
    normalises per-visit sums under visit weighting (see the module docstring). Holds learnable
    log-variances s_k when ``balance="uncertainty"``; they are trained with the model.
    """

    def __init__(self, config: ObjectiveConfig, model_config: ModelConfig, visits_per_patient: float = 1.0) -> None:
        super().__init__()
        if not visits_per_patient > 0:
            raise ConfigError(f"visits_per_patient must be > 0, got {visits_per_patient}")
        self.config = config
        self.visits_per_patient = float(visits_per_patient)
        head = model_config.head
        family = head.family
        for term in config.terms:
            if not TERMS[term.name][1](family):
                raise ConfigError(
                    f"loss term {term.name!r} does not apply to a {head.kind!r} head; it supports "
                    f"{supported_kinds(term.name)}"
                )
            if term.name == "next_visit" and not model_config.next_visit:
                raise ConfigError("the next_visit term needs a model built with next_visit=True")
        if family.competing and config.cause is not None and any(t.name == "nll" for t in config.terms):
            raise ConfigError(f"a {head.kind} head models every cause; leave cause=None")
        self.context = _Context(head=head, visit_weighting=resolve_visit_weighting(config.visit_weighting, family),
                                cause=config.cause)
        self.log_variances = (
            nn.Parameter(torch.zeros(len(config.terms))) if config.balance == "uncertainty" else None
        )

    def forward(self, output: ModelOutput, batch: SequenceBatch) -> LossResult:
        values = []
        parts: dict[str, float] = {}
        normaliser = self._visit_normaliser(batch, output.raw)
        for term in self.config.terms:
            function = TERMS[term.name][0]
            value = function(output, batch, self.context, dict(term.options))
            if term.name in PER_VISIT_TERMS and self.context.visit_weighting == "visit":
                value = value / normaliser
            values.append(value)
            parts[term.name] = float(value.detach())
        stacked = torch.stack(values)
        if self.log_variances is not None:
            total = uncertainty_weighted_sum(stacked, self.log_variances)
        else:
            weights = torch.tensor([t.weight for t in self.config.terms], dtype=stacked.dtype, device=stacked.device)
            total = (weights * stacked).sum()
        return LossResult(total=total, parts=parts if len(values) > 1 else {})

    def _visit_normaliser(self, batch: SequenceBatch, like: torch.Tensor) -> torch.Tensor:
        """Σ_b w_b × visits_per_patient: the expected number of (weighted) visits in this batch."""
        weight = batch.weight if batch.weight is not None else torch.ones(batch.batch_size, device=like.device)
        return weight.to(like.dtype).sum().clamp_min(torch.finfo(like.dtype).tiny) * self.visits_per_patient
