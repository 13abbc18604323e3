"""Per-visit survival distributions: the single prediction object of every head."""

from ehrseq.models.distributions.base import CompetingRisksDistribution, ConditionalSurvival, SurvivalDistribution
from ehrseq.models.distributions.competing import CompetingPMF
from ehrseq.models.distributions.grid import PMF, ConstantHazardGrid, GridDistribution, LogisticHazard
from ehrseq.models.distributions.loglogistic import LogLogistic
from ehrseq.models.distributions.mixture import WeibullMixture
from ehrseq.models.distributions.multievent import MultiEvent
from ehrseq.models.distributions.parametric import LogNormal, Weibull
from ehrseq.models.distributions.piecewise import (
    PiecewiseConstantDensity,
    PiecewiseConstantHazard,
    PiecewiseLinearDensity,
    PiecewiseLinearHazard,
)
from ehrseq.models.distributions.visit import VisitHazard

__all__ = [
    "PMF",
    "CompetingPMF",
    "CompetingRisksDistribution",
    "ConditionalSurvival",
    "ConstantHazardGrid",
    "GridDistribution",
    "LogLogistic",
    "LogNormal",
    "LogisticHazard",
    "MultiEvent",
    "PiecewiseConstantDensity",
    "PiecewiseConstantHazard",
    "PiecewiseLinearDensity",
    "PiecewiseLinearHazard",
    "SurvivalDistribution",
    "VisitHazard",
    "Weibull",
    "WeibullMixture",
]
