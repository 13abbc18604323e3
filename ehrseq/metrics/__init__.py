"""Evaluation metrics on numpy/torch arrays, validated against scikit-survival and brute force.

Conventions shared by every metric:

* outcomes ``time [n]`` (≥ 0) and ``event [n]`` (bool or 0/1; 0..K for competing risks);
* risk scores ``[n]``: higher = earlier event;
* survival curves ``surv [n, T]`` at increasing ``times [T]`` (read between grid points linearly or as a
  step, see :func:`survival_at`), or a :class:`~ehrseq.models.distributions.base.SurvivalDistribution`
  with batch shape ``[n]`` — flatten ``[B, M]`` visit predictions and their targets first;
* inverse probability of censoring weights come from a :class:`CensoringDistribution` (and
  pseudo event times from a :class:`KaplanMeier`) **fitted on training outcomes** and reused frozen;
* bad input raises :class:`~ehrseq.errors.ShapeError` (shapes) or ``ValueError`` (values, times outside
  the censoring support); a concordance index without comparable pairs raises
  :class:`NoComparablePairsError`.
"""

from ehrseq.metrics._curves import survival_at
from ehrseq.metrics._validation import NoComparablePairsError
from ehrseq.metrics.auc import AUCResult, cumulative_dynamic_auc
from ehrseq.metrics.auprc import survival_auprc, survival_auprc_lognormal
from ehrseq.metrics.brier import brier_score, integrated_brier_score
from ehrseq.metrics.calibration import (
    CalibrationSlopeResult,
    DCalibrationResult,
    OneCalibrationResult,
    calibration_slope,
    d_calibration,
    one_calibration,
)
from ehrseq.metrics.competing import (
    aalen_johansen,
    cause_specific_auc,
    cause_specific_brier_score,
    cause_specific_concordance,
    cause_specific_harrell_c,
    cause_specific_integrated_brier_score,
    cause_specific_uno_c,
)
from ehrseq.metrics.concordance import ConcordanceResult, antolini_c, harrell_c, uno_c
from ehrseq.metrics.crps import survival_crps
from ehrseq.metrics.ipcw import CensoringDistribution
from ehrseq.metrics.kaplan_meier import KaplanMeier
from ehrseq.metrics.mae import mae
from ehrseq.metrics.nll import held_out_nll
from ehrseq.metrics.sharpness import coefficient_of_variation, coefficient_of_variation_lognormal

__all__ = [
    "AUCResult",
    "CalibrationSlopeResult",
    "CensoringDistribution",
    "ConcordanceResult",
    "DCalibrationResult",
    "KaplanMeier",
    "NoComparablePairsError",
    "OneCalibrationResult",
    "aalen_johansen",
    "antolini_c",
    "brier_score",
    "calibration_slope",
    "cause_specific_auc",
    "cause_specific_brier_score",
    "cause_specific_concordance",
    "cause_specific_harrell_c",
    "cause_specific_integrated_brier_score",
    "cause_specific_uno_c",
    "coefficient_of_variation",
    "coefficient_of_variation_lognormal",
    "cumulative_dynamic_auc",
    "d_calibration",
    "harrell_c",
    "held_out_nll",
    "integrated_brier_score",
    "mae",
    "one_calibration",
    "survival_at",
    "survival_auprc",
    "survival_auprc_lognormal",
    "survival_crps",
    "uno_c",
]
