"""Losses: functional cores (``ehrseq.losses.functional``) and thin ``nn.Module`` wrappers.

Every wrapper is registered by name, so a trainer can build a composition from configuration::

    from ehrseq.losses import available_losses, get_loss
    loss = get_loss("deephit", sigma=0.1, ranking_weight=0.5)
"""

from ehrseq.losses import functional

# Losses of survival distributions: MLE, Survival-CRPS, log-time CRPS, MENSA
from ehrseq.losses.continuous import (
    LogNormalSurvivalCRPSLoss,
    LogTimeNormalCRPSLoss,
    MENSALoss,
    SurvivalCRPSLoss,
    SurvivalNLLLoss,
)

# Discrete-time catalogue, ranking / representation losses and Cox
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
from ehrseq.losses.registry import available_losses, get_loss, loss_class, register_loss

__all__ = [
    # registry
    "available_losses",
    "functional",
    "get_loss",
    "loss_class",
    "register_loss",
    # discrete-time catalogue, ranking / representation losses and Cox
    "CalibrationLoss",
    "ContrastiveLoss",
    "CoxPartialLikelihood",
    "DeepHitLoss",
    "DiscreteTimeCalibrationLoss",
    "DiscreteTimeNLL",
    "FocalLoss",
    "LogisticHazardFocalLoss",
    "LogisticHazardLoss",
    "LogitNormalHazardNLL",
    "MultiTaskLoss",
    "NextVisitLoss",
    "RankingLoss",
    "SmoothHazardPenalty",
    # survival distributions
    "LogNormalSurvivalCRPSLoss",
    "LogTimeNormalCRPSLoss",
    "MENSALoss",
    "SurvivalCRPSLoss",
    "SurvivalNLLLoss",
]
