"""The training objective: a primary loss plus weighted auxiliary terms, configured by name.

The terms are those of the loss-term registry (:mod:`ehrseq.losses.terms`, where each is described):
every term reads what it needs from the model's :class:`~ehrseq.models.model.ModelOutput` and the
:class:`~ehrseq.data.SequenceBatch` targets, and calls a functional core of
:mod:`ehrseq.losses.functional`. Which terms a head supports is checked when the objective is built,
with a :class:`~ehrseq.errors.ConfigError` listing the head kinds the term applies to.

``balance="uncertainty"`` replaces the fixed weights by learned homoscedastic-uncertainty weights
(Kendall et al.; [catalogue] §4): Σ_k exp(−s_k) L_k + s_k.

**Visit weighting and calibration.** Per-visit terms (registered with ``per_visit=True``) score the
outcome once per visit. Weighting each patient equally (a mean over the patient's visits, weight 1/n_i
per visit) makes the weights depend on the outcome — patients who die early have few visits — and
biases the fitted risks upwards; so does a per-batch mean over visits when batches are bucketed by
history length. The unbiased choice is to weight every visit equally across the whole training set:
with ``visit_weighting="visit"`` each batch's per-visit terms are *summed* and divided by a global
constant, Σ_b w_b × (mean visits per training patient), never by the batch's own visit count.
``visit_weighting="auto"`` (default) uses the head family's own choice: ``"visit"`` for every head that
predicts the remaining time from each visit, ``"patient"`` for the visit-indexed head, whose
per-patient value is the patient's whole sequence likelihood (the standard, unbiased likelihood;
[catalogue]'s convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.losses.functional.multitask import uncertainty_weighted_sum
from ehrseq.losses.terms import TermContext, get_term
from ehrseq.models.families import HeadFamily
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
            get_term(term.name)
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


def resolve_visit_weighting(visit_weighting: str, family: HeadFamily) -> str:
    """``"auto"`` → the family's own default (``"patient"`` for the visit-indexed head's sequence
    likelihood, ``"visit"`` for every head predicting the remaining time from each visit)."""
    if visit_weighting != "auto":
        return visit_weighting
    return family.visit_weighting


class Objective(nn.Module):
    """``objective(output, batch) -> LossResult``: the weighted sum of the configured terms.

    ``visits_per_patient`` is the mean number of visits per training patient: the global constant that
    normalises per-visit sums under visit weighting (see the module docstring); ``visit_weighting`` is
    the resolved weighting (``"patient"`` or ``"visit"``). Holds learnable
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
        self.terms = [get_term(term.name) for term in config.terms]
        for term in self.terms:
            if not term.applies(family):
                raise ConfigError(
                    f"loss term {term.name!r} does not apply to a {head.kind!r} head; it supports {term.supported_kinds()}"
                )
            if term.needs_next_visit and not model_config.next_visit:
                raise ConfigError(f"the {term.name} term needs a model built with next_visit=True")
        if family.competing and config.cause is not None and any(t.name == "nll" for t in config.terms):
            raise ConfigError(f"a {head.kind} head models every cause; leave cause=None")
        self.visit_weighting = resolve_visit_weighting(config.visit_weighting, family)
        context = TermContext(head=head, visit_weighting=self.visit_weighting, cause=config.cause)
        self.contexts = [context.for_term(term) for term in self.terms]
        self.log_variances = (
            nn.Parameter(torch.zeros(len(config.terms))) if config.balance == "uncertainty" else None
        )

    def forward(self, output: ModelOutput, batch: SequenceBatch) -> LossResult:
        values = []
        parts: dict[str, float] = {}
        normaliser = self._visit_normaliser(batch, output.raw)
        for setting, term, context in zip(self.config.terms, self.terms, self.contexts):
            value = term.compute(output, batch, context, dict(setting.options))
            if term.per_visit and context.visit_weighting == "visit":
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
