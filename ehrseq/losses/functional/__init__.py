"""Functional losses: pure functions on tensors (logits or log-parameters), masked and vectorized.

Every formula, convention and reduction is documented in the function's docstring; docs/reference.md
§A lists the catalogue.
"""

# Discrete-time hazard likelihoods (§A1, §A2, §A8) and their focal variants (§A6)
from ehrseq.losses.functional.auxiliary import codes_to_multi_hot, next_visit_code_loss, next_visit_numeric_loss

# Calibration (§A4), ranking (§A5), multi-task (§A7), contrastive (§A9), smoothness (§A10)
from ehrseq.losses.functional.calibration import discrete_time_calibration, logistic_hazard_calibration
from ehrseq.losses.functional.contrastive import supervised_contrastive_loss

# Cox partial likelihood and Breslow baseline (§A18)
from ehrseq.losses.functional.cox import breslow_baseline, cox_partial_likelihood, cox_survival
from ehrseq.losses.functional.crps import (
    crps_log_time_normal,
    log_time_normal_crps_elementwise,
    lognormal_survival_crps_elementwise,
    survival_crps,
    survival_crps_elementwise,
    survival_crps_lognormal,
)

# PMF / DeepHit with competing risks (§A3)
from ehrseq.losses.functional.deephit import deephit_ranking_loss, pmf_nll
from ehrseq.losses.functional.discrete import discrete_time_nll, logistic_hazard_nll, logistic_hazard_targets
from ehrseq.losses.functional.focal import discrete_time_focal_loss, logistic_hazard_focal_loss

# Losses of survival distributions: MLE (§A15, §A16), Survival-CRPS (§A14), MENSA (§A17)
from ehrseq.losses.functional.likelihood import survival_log_likelihood, survival_nll
from ehrseq.losses.functional.multievent import mensa_loss
from ehrseq.losses.functional.multitask import uncertainty_weighted_sum
from ehrseq.losses.functional.ranking import logistic_hazard_risk, pmf_risk, ranking_loss
from ehrseq.losses.functional.regularizers import smooth_hazard_penalty

# Uncertainty-aware likelihood (§A11) and auxiliary next-visit prediction (§A12)
from ehrseq.losses.functional.uncertainty import logit_normal_hazard_nll
from ehrseq.models.distributions._math import logit_normal_log_probabilities

__all__ = [
    # discrete-time catalogue
    "codes_to_multi_hot",
    "deephit_ranking_loss",
    "discrete_time_calibration",
    "discrete_time_focal_loss",
    "discrete_time_nll",
    "logistic_hazard_calibration",
    "logistic_hazard_focal_loss",
    "logistic_hazard_nll",
    "logistic_hazard_risk",
    "logistic_hazard_targets",
    "logit_normal_hazard_nll",
    "logit_normal_log_probabilities",
    "next_visit_code_loss",
    "next_visit_numeric_loss",
    "pmf_nll",
    "pmf_risk",
    "ranking_loss",
    "smooth_hazard_penalty",
    "supervised_contrastive_loss",
    "uncertainty_weighted_sum",
    # Cox
    "breslow_baseline",
    "cox_partial_likelihood",
    "cox_survival",
    # survival distributions
    "crps_log_time_normal",
    "log_time_normal_crps_elementwise",
    "lognormal_survival_crps_elementwise",
    "mensa_loss",
    "survival_crps",
    "survival_crps_elementwise",
    "survival_crps_lognormal",
    "survival_log_likelihood",
    "survival_nll",
]
