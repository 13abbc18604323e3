"""Losses: functional cores (``ehrseq.losses.functional``), the registry of training terms
(:mod:`ehrseq.losses.terms`: the one name of each loss, as used in ``DynamicSurvival(loss=...)``) and
thin ``nn.Module`` wrappers of the cores for training loops of one's own::

    from ehrseq.losses import TERMS, DeepHitLoss
    sorted(TERMS)                                   # ['calibration', 'contrastive', 'crps', ...]
    TERMS["ranking"].supported_kinds()              # the head kinds the ranking term applies to
    loss = DeepHitLoss(sigma=0.1, ranking_weight=0.5)
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
from ehrseq.losses.terms import NOT_TERMS, TERMS, LossTerm, TermContext, get_term, register_term

__all__ = [
    # registry of training terms
    "NOT_TERMS",
    "TERMS",
    "LossTerm",
    "TermContext",
    "functional",
    "get_term",
    "register_term",
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
