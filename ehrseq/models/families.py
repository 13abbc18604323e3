"""Head families: the one registry of ``head=`` kinds.

A family is one object that owns everything depending on the kind of head, so that nothing else in
ehrseq compares kind names (the objective, the estimator, scoring, evaluation and the command line ask
a family's capabilities):

* :meth:`~HeadFamily.num_outputs` — the width P of the head's raw outputs ``[B, M, P]``;
* :meth:`~HeadFamily.distribution` — raw outputs → the per-visit distribution object;
* :meth:`~HeadFamily.initial_bias` — the output bias that starts training from the pooled life table;
* :attr:`~HeadFamily.likelihood` — which likelihood its raw outputs parametrise (the objective's ``nll``
  term has one adapter per :class:`Likelihood`; a family whose distribution has a density and a survival
  function uses :attr:`Likelihood.DURATION` and needs nothing more);
* capability flags: ``in_days`` (a time-scale head: a distribution over durations in days — every
  family but the visit-indexed one), ``grid`` (needs horizon cut points), ``competing`` (K causes),
  ``multi_event`` (E non-exclusive events), ``hazard_logits`` (raw outputs are hazard logits),
  ``hazard_uncertainty`` (accepts the logit-normal hazard option), and ``visit_weighting`` (the
  unbiased default aggregation of its likelihood, see :mod:`ehrseq.objective`);
* :meth:`~HeadFamily.risk_direction` — the direction of the raw outputs along which every hazard of the
  head rises proportionally (the hazard heads; ``None`` for the others): the model's linear path has a
  proportional term along it, as a Cox model's linear predictor (:mod:`ehrseq.models.model`).

=============================  ============  ===============================================================
kind                           outputs       distribution (``ehrseq.models.distributions``)
=============================  ============  ===============================================================
``visit_hazard``               1 (or 2)      :class:`VisitHazard` (h = σ(z); time unit: visit intervals);
                                             with ``hazard_uncertainty`` the logit is N(z_0, e^{2 z_1})
                                             and h is its predictive mean E[σ(z)] (Gauss–Hermite)
``logistic_hazard``            L             :class:`LogisticHazard` on the grid (h_l = σ(z_l))
``pmf``                        L + 1         :class:`PMF` (DeepHit; softmax, last = beyond τ_L)
``piecewise_constant_hazard``  L             :class:`PiecewiseConstantHazard` (h_l = e^{z_l} per day)
``piecewise_linear_hazard``    L + 1         :class:`PiecewiseLinearHazard` (hazard at the knots)
``piecewise_constant_density`` L + 1         :class:`PiecewiseConstantDensity` (L bins + tail mass)
``piecewise_linear_density``   L + 2         :class:`PiecewiseLinearDensity`
``lognormal``                  2             :class:`LogNormal`: loc = z_0 + log(time_scale), log σ = z_1
``weibull``                    2             :class:`Weibull`: log λ = z_0 + log(time_scale), log k = z_1
``loglogistic``                2             :class:`LogLogistic`: log α = z_0 + log(time_scale), log σ = z_1
                                             (log R = log α + σ·logistic noise)
``weibull_mixture``            3·C           :class:`WeibullMixture` (gates, log λ_c − log(time_scale), log k_c)
``competing_pmf``              K·L + 1       :class:`CompetingPMF` (joint softmax over causes × bins)
``multi_event``                E·3·C         :class:`MultiEvent` of per-event Weibull mixtures (MENSA)
=============================  ============  ===============================================================

``time_scale`` (days) centres the parametric families: with zero outputs, the predicted median remaining
time is about ``time_scale`` (the estimator sets it to the median observed remaining time of the training
data). Hazard-rate families (piecewise hazards) are likewise offset by −log(time_scale) so that a zero
output means a rate of one event per ``time_scale`` days.

A new family is a subclass (or an instance of :class:`TwoParameterFamily` for a distribution with a
log-location and a log-scale parameter) passed to :func:`register_family` at the end of this module;
see docs/design.md, "How to add a head".
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ehrseq.errors import ConfigError
from ehrseq.models.distributions import (
    PMF,
    CompetingPMF,
    LogisticHazard,
    LogLogistic,
    LogNormal,
    MultiEvent,
    PiecewiseConstantDensity,
    PiecewiseConstantHazard,
    PiecewiseLinearDensity,
    PiecewiseLinearHazard,
    SurvivalDistribution,
    VisitHazard,
    Weibull,
    WeibullMixture,
)
from ehrseq.models.distributions._math import logit_normal_log_probabilities
from ehrseq.models.distributions.base import CompetingRisksDistribution
from ehrseq.models.distributions.mixture import PackedWeibullMixture
from ehrseq.registry import Registry

if TYPE_CHECKING:
    from ehrseq.models.heads import HeadConfig

#: What a head predicts at a batch of visits.
Prediction = SurvivalDistribution | CompetingRisksDistribution | MultiEvent


class Likelihood(enum.Enum):
    """The likelihood a family's raw outputs parametrise (the objective's ``nll`` term adapts each one).

    * ``VISIT_SEQUENCE`` — the visit-indexed sequence likelihood of per-visit hazard logits
      (logit-normal with ``hazard_uncertainty``);
    * ``HAZARD_GRID`` — the logistic-hazard likelihood of grid bins (bin labels, [catalogue] A1);
    * ``MASS_GRID`` — the PMF (DeepHit) likelihood of grid bins, causes included;
    * ``DURATION`` — log f / log S of the distribution at the exact remaining time, right- or
      interval-censored: any :class:`SurvivalDistribution` has it;
    * ``MULTI_EVENT`` — MENSA's likelihood of several non-exclusive events.
    """

    VISIT_SEQUENCE = "visit_sequence"
    HAZARD_GRID = "hazard_grid"
    MASS_GRID = "mass_grid"
    DURATION = "duration"
    MULTI_EVENT = "multi_event"


class HeadFamily:
    """One kind of head (see the module docstring). Subclasses set the class attributes and implement
    :meth:`num_outputs` and :meth:`distribution`; the defaults are those of a single-event
    time-scale head without a grid.
    """

    kind: str = ""
    #: the class of the distribution objects the family makes
    distribution_class: type = SurvivalDistribution
    likelihood: Likelihood = Likelihood.DURATION
    in_days: bool = True
    grid: bool = False
    competing: bool = False
    multi_event: bool = False
    hazard_logits: bool = False
    hazard_uncertainty: bool = False
    visit_weighting: str = "visit"

    @property
    def ensembles(self) -> bool:
        """Whether a deep ensemble of this head is one model: single-event survival curves in days, which
        average (:mod:`ehrseq.models.ensemble`)."""
        return self.in_days and not (self.competing or self.multi_event)

    @property
    def any_time(self) -> bool:
        """Whether this head can read the time elapsed since the visit: one remaining time in days (single-
        or competing-event heads; :mod:`ehrseq.models.model`)."""
        return self.in_days and not self.multi_event

    def validate(self, config: HeadConfig) -> None:
        """Raise :class:`ConfigError` when ``config`` does not define a head of this family."""
        if self.grid:
            grid = config.grid
            if grid is None or len(grid) < 2 or grid[0] != 0.0 or any(b <= a for a, b in zip(grid, grid[1:])):
                raise ConfigError(
                    f"head {self.kind!r} needs a grid of at least 2 strictly increasing cut points starting at 0"
                )
        if config.hazard_uncertainty and not self.hazard_uncertainty:
            having = [family.kind for family in FAMILIES.values() if family.hazard_uncertainty]
            raise ConfigError(f"hazard_uncertainty is only available for the {' and '.join(having)} head")

    def num_outputs(self, config: HeadConfig) -> int:
        """Width P of the raw outputs."""
        raise NotImplementedError

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> Prediction:
        """The per-visit distribution of batch shape ``raw.shape[:-1]`` from raw outputs ``[*, P]``;
        ``grid`` is the config's grid as a tensor in ``raw``'s dtype and device (``None`` without one)."""
        raise NotImplementedError

    def initial_bias(self, config: HeadConfig, remaining: np.ndarray, event: np.ndarray,
                     last_visit: np.ndarray) -> np.ndarray | None:
        """Output-layer bias under which the head predicts the pooled life table of (remaining, event).

        ``remaining`` ``[N]``, ``event`` ``[N]`` (0 censored, 1..K) and ``last_visit`` ``[N]`` (True at
        each patient's last visit) are per training visit. ``None``: keep zero biases (the parametric
        families are centred by ``time_scale`` instead).
        """
        return None

    def num_causes(self, config: HeadConfig) -> int:
        """K, the number of mutually exclusive causes the head models (1 unless ``competing``)."""
        return 1

    def hazard_logit(self, raw: torch.Tensor, config: HeadConfig) -> torch.Tensor:
        """The hazard logits in the raw outputs (families with ``hazard_logits``): ``[B, M]`` per visit
        or ``[B, M, L]`` per grid bin."""
        raise ConfigError(f"the {self.kind!r} head does not output hazard logits")

    def hazard_logit_scale(self, raw: torch.Tensor, config: HeadConfig) -> torch.Tensor | None:
        """log σ of a logit-normal hazard (``hazard_uncertainty``), ``None`` for a point hazard."""
        return None

    def risk_direction(self, config: HeadConfig) -> torch.Tensor | None:
        """A direction r ``[P]`` of the raw outputs along which every hazard of the head rises together, or
        ``None`` (the default) when the family has none: raw + η r multiplies the hazard odds of every bin
        (``logistic_hazard``, ``visit_hazard``) or every hazard rate (the piecewise hazards) by e^η — the
        proportional effect of a Cox-like linear predictor η (:mod:`ehrseq.models.model`)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r})"


FAMILIES: Registry[HeadFamily] = Registry("head kind")


def register_family(family: HeadFamily) -> HeadFamily:
    """Add ``family`` to the registry under ``family.kind`` (a new, lower-case snake_case name)."""
    return FAMILIES.register(family.kind, family)


def get_family(kind: str) -> HeadFamily:
    """The family registered under ``kind``; :class:`ConfigError` listing the kinds otherwise."""
    return FAMILIES.lookup(kind)


# ------------------------------------------------------------------------------------------ life table
def life_table(remaining: np.ndarray, event: np.ndarray, grid: Sequence[float],
               num_causes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pooled discrete-time life table of per-visit remaining times on the grid.

    Returns (at_risk ``[L]``, events ``[K, L]``): visits whose remaining time reaches bin l, and those
    among them with an event of cause k inside bin l (the grid convention: censored inside a bin counts
    as surviving it; beyond τ_L nothing is counted).
    """
    cuts = np.asarray(grid, dtype=np.float64)
    bins = np.clip(np.searchsorted(cuts, remaining, side="left") - 1, 0, cuts.size - 1)
    L = cuts.size - 1
    at_risk = np.bincount(np.minimum(bins, L), minlength=L + 1)[::-1].cumsum()[::-1][:L].astype(np.float64)
    events = np.zeros((num_causes, L))
    inside = (bins < L) & (event > 0)
    causes = np.clip(event[inside], 1, num_causes) - 1 if num_causes > 1 else np.zeros(inside.sum(), dtype=np.int64)
    np.add.at(events, (causes, bins[inside]), 1.0)
    return at_risk, events


class _LifeTable:
    """The pooled life table of the training visits on a head's grid, in the quantities the grid
    families' biases are made of (hazards clipped to [1e-4, 1 − 1e-4])."""

    EPS = 1e-4

    def __init__(self, config: HeadConfig, remaining: np.ndarray, event: np.ndarray, num_causes: int) -> None:
        at_risk, events = life_table(np.asarray(remaining, dtype=np.float64), np.asarray(event), config.grid,
                                     num_causes)
        self.hazard_by_cause = events / np.maximum(at_risk, 1.0)  # [K, L]
        self.hazard = np.clip(self.hazard_by_cause.sum(axis=0), self.EPS, 1 - self.EPS)
        self.log_survival = np.concatenate([[0.0], np.cumsum(np.log1p(-self.hazard))])  # log S(τ_l), l = 0..L
        self.widths = np.diff(np.asarray(config.grid, dtype=np.float64))
        self.log_mass = self.log_survival[:-1] + np.log(self.hazard)  # log P(R in bin l)
        self.rate = -np.log1p(-self.hazard) / self.widths  # constant hazard per day inside each bin
        self.density = np.exp(self.log_mass) / self.widths

    @staticmethod
    def knots(values: np.ndarray) -> np.ndarray:
        """Per-bin values → values at the L + 1 knots (ends kept, interior knots averaged)."""
        return np.concatenate([values[:1], 0.5 * (values[:-1] + values[1:]), values[-1:]])


# ------------------------------------------------------------------------------------------ families
class VisitHazardFamily(HeadFamily):
    """Visit-indexed discrete time: one hazard logit per visit (plus its log-scale with uncertainty)."""

    kind = "visit_hazard"
    distribution_class = VisitHazard
    likelihood = Likelihood.VISIT_SEQUENCE
    in_days = False
    hazard_logits = True
    hazard_uncertainty = True
    visit_weighting = "patient"

    def num_outputs(self, config: HeadConfig) -> int:
        return 2 if config.hazard_uncertainty else 1

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> VisitHazard:
        scale = self.hazard_logit_scale(raw, config)
        if scale is None:
            return VisitHazard(raw[..., 0])
        log_p, log_not_p = logit_normal_log_probabilities(raw[..., 0], scale)
        return VisitHazard(log_p - log_not_p)

    def initial_bias(self, config: HeadConfig, remaining: np.ndarray, event: np.ndarray,
                     last_visit: np.ndarray) -> np.ndarray:
        """The share of visits followed by the event before the next visit, as a logit."""
        share = float(np.clip(np.mean(np.asarray(last_visit) & (np.asarray(event) > 0)), 1e-4, 1 - 1e-4))
        bias = np.zeros(self.num_outputs(config))
        bias[0] = math.log(share) - math.log1p(-share)
        return bias

    def hazard_logit(self, raw: torch.Tensor, config: HeadConfig) -> torch.Tensor:
        return raw[..., 0]

    def hazard_logit_scale(self, raw: torch.Tensor, config: HeadConfig) -> torch.Tensor | None:
        return raw[..., 1] if config.hazard_uncertainty else None

    def risk_direction(self, config: HeadConfig) -> torch.Tensor:
        """The hazard logit (not the log-scale of its uncertainty)."""
        direction = torch.zeros(self.num_outputs(config))
        direction[0] = 1.0
        return direction


class GridFamily(HeadFamily):
    """A head on the horizon grid τ_0 = 0 < … < τ_L; its bias reproduces the pooled life table."""

    grid = True
    #: extra outputs beyond L per cause-free head (the tail mass, the last knot, ...)
    extra_outputs = 0
    #: every raw output is a log hazard odds or log hazard rate (of a bin or a knot), so adding η to all of
    #: them scales every hazard alike (:meth:`risk_direction`)
    hazard_outputs = False

    def num_outputs(self, config: HeadConfig) -> int:
        return config.num_bins + self.extra_outputs

    def risk_direction(self, config: HeadConfig) -> torch.Tensor | None:
        """Every output, for the families whose outputs are all log hazards or log hazard odds."""
        return torch.ones(self.num_outputs(config)) if self.hazard_outputs else None

    def initial_bias(self, config: HeadConfig, remaining: np.ndarray, event: np.ndarray,
                     last_visit: np.ndarray) -> np.ndarray:
        return self.bias_from_life_table(_LifeTable(config, remaining, event, self.num_causes(config)), config)

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        raise NotImplementedError


class LogisticHazardFamily(GridFamily):
    kind = "logistic_hazard"
    hazard_outputs = True
    distribution_class = LogisticHazard
    likelihood = Likelihood.HAZARD_GRID
    hazard_logits = True

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> LogisticHazard:
        return LogisticHazard(raw, grid)

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.log(table.hazard) - np.log1p(-table.hazard)

    def hazard_logit(self, raw: torch.Tensor, config: HeadConfig) -> torch.Tensor:
        return raw


class PMFFamily(GridFamily):
    kind = "pmf"
    distribution_class = PMF
    likelihood = Likelihood.MASS_GRID
    extra_outputs = 1

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> PMF:
        return PMF(raw, grid)

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.concatenate([table.log_mass, table.log_survival[-1:]])


class CompetingPMFFamily(GridFamily):
    kind = "competing_pmf"
    distribution_class = CompetingPMF
    likelihood = Likelihood.MASS_GRID
    competing = True

    def validate(self, config: HeadConfig) -> None:
        super().validate(config)
        if config.num_causes < 1:
            raise ConfigError(f"num_causes must be >= 1, got {config.num_causes}")

    def num_outputs(self, config: HeadConfig) -> int:
        return config.num_causes * config.num_bins + 1

    def num_causes(self, config: HeadConfig) -> int:
        return config.num_causes

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> CompetingPMF:
        return CompetingPMF(raw, grid, config.num_causes)

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        by_cause = np.clip(table.hazard_by_cause, table.EPS, None)
        per_cause = table.log_mass[None, :] + np.log(by_cause / by_cause.sum(axis=0))
        return np.concatenate([per_cause.reshape(-1), table.log_survival[-1:]])


class PiecewiseFamily(GridFamily):
    """The piecewise families of [piecewise]: ``distribution_class(raw, grid)``; hazard rates (``rates``)
    are per ``time_scale`` days (``rate_unit``), so that a zero output is one event per ``time_scale`` days."""

    rates = False

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> SurvivalDistribution:
        if self.rates:
            return self.distribution_class(raw, grid, rate_unit=config.time_scale)
        return self.distribution_class(raw, grid)


class PiecewiseConstantHazardFamily(PiecewiseFamily):
    kind = "piecewise_constant_hazard"
    hazard_outputs = True
    distribution_class = PiecewiseConstantHazard
    rates = True

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.log(table.rate) + math.log(config.time_scale)


class PiecewiseLinearHazardFamily(PiecewiseFamily):
    kind = "piecewise_linear_hazard"
    hazard_outputs = True
    distribution_class = PiecewiseLinearHazard
    extra_outputs = 1
    rates = True

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.log(table.knots(table.rate)) + math.log(config.time_scale)


class PiecewiseConstantDensityFamily(PiecewiseFamily):
    kind = "piecewise_constant_density"
    distribution_class = PiecewiseConstantDensity
    extra_outputs = 1

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.concatenate([np.log(table.density), table.log_survival[-1:]])


class PiecewiseLinearDensityFamily(PiecewiseFamily):
    kind = "piecewise_linear_density"
    distribution_class = PiecewiseLinearDensity
    extra_outputs = 2

    def bias_from_life_table(self, table: _LifeTable, config: HeadConfig) -> np.ndarray:
        return np.concatenate([np.log(table.knots(table.density)), table.log_survival[-1:]])


class TwoParameterFamily(HeadFamily):
    """A distribution of two unconstrained parameters, a log-location in days and a log-scale or
    log-shape: ``distribution_class(z_0 + log(time_scale), z_1)`` (log-normal, Weibull, ...).
    Trained through its density and survival function (:attr:`Likelihood.DURATION`)."""

    def __init__(self, kind: str, distribution_class: type[SurvivalDistribution]) -> None:
        self.kind = kind
        self.distribution_class = distribution_class

    def num_outputs(self, config: HeadConfig) -> int:
        return 2

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> SurvivalDistribution:
        return self.distribution_class(raw[..., 0] + math.log(config.time_scale), raw[..., 1])


class WeibullMixtureFamily(HeadFamily):
    """C Weibull components: gates, log λ_c − log(time_scale), log k_c."""

    kind = "weibull_mixture"
    distribution_class = WeibullMixture

    def num_outputs(self, config: HeadConfig) -> int:
        return 3 * config.num_components

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> WeibullMixture:
        return PackedWeibullMixture(raw, math.log(config.time_scale))


class MultiEventFamily(HeadFamily):
    """MENSA: one Weibull mixture per event, ``[B, M, E·3C]`` → events stacked along a batch dim."""

    kind = "multi_event"
    distribution_class = MultiEvent
    likelihood = Likelihood.MULTI_EVENT
    multi_event = True

    def validate(self, config: HeadConfig) -> None:
        super().validate(config)
        if not config.event_names:
            raise ConfigError("a multi_event head needs event_names")

    def num_outputs(self, config: HeadConfig) -> int:
        return len(config.event_names) * 3 * config.num_components

    def distribution(self, raw: torch.Tensor, config: HeadConfig, grid: torch.Tensor | None) -> MultiEvent:
        per_event = raw.unflatten(-1, (len(config.event_names), 3 * config.num_components))
        return MultiEvent.stacked(PackedWeibullMixture(per_event, math.log(config.time_scale)), config.event_names)


for _family in (
    VisitHazardFamily(),
    LogisticHazardFamily(),
    PMFFamily(),
    PiecewiseConstantHazardFamily(),
    PiecewiseLinearHazardFamily(),
    PiecewiseConstantDensityFamily(),
    PiecewiseLinearDensityFamily(),
    CompetingPMFFamily(),
    TwoParameterFamily("lognormal", LogNormal),
    TwoParameterFamily("weibull", Weibull),
    TwoParameterFamily("loglogistic", LogLogistic),
    WeibullMixtureFamily(),
    MultiEventFamily(),
):
    register_family(_family)
