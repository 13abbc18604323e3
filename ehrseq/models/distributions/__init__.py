"""Per-visit survival distributions: the single prediction object of every head."""

from ehrseq.models.distributions.base import CompetingRisksDistribution, ConditionalSurvival, SurvivalDistribution

__all__ = ["CompetingRisksDistribution", "ConditionalSurvival", "SurvivalDistribution"]
