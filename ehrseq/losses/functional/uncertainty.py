"""Uncertainty-aware hazard likelihood: a logit-normal hazard integrated by Gauss–Hermite quadrature (§A11).

[catalogue] §8 scores the 0/1 outcome with a Gaussian density around the hazard, which is not a
likelihood for a binary outcome. Here the head predicts, at each visit, a distribution over the hazard
logit, z ~ N(μ, σ²) (``mean_logits`` μ, ``log_scale`` log σ), and the outcome is Bernoulli given the
hazard. Integrating the hazard out gives the marginal probability

    p = E[σ(z)] = ∫ σ(μ + σ ε) φ(ε) dε ≈ (1/√π) Σ_k w_k σ(μ + √2 σ x_k)

with Gauss–Hermite nodes x_k and weights w_k (``numpy.polynomial.hermite.hermgauss``), and the outcome
is Bernoulli(p): a proper likelihood. σ → 0 recovers the plain hazard σ(μ); a larger σ pulls p towards
1/2 in logit space, so a model can only buy lower loss with uncertainty where it is really unsure.
Both log p and log(1 − p) are computed as logsumexp over the nodes of log w_k + log σ(±(·)), so they
stay accurate in the tails.

The quadrature (:func:`ehrseq.models.distributions._math.log_expected_sigmoid`, with its accuracy) is
shared with the ``visit_hazard`` head, whose predicted hazard is the same marginal p.
"""

from __future__ import annotations

import torch

from ehrseq.losses.functional._aggregate import Reduction, VisitWeighting, check_floating, check_reduction, check_shape
from ehrseq.losses.functional._labels import visit_labels
from ehrseq.losses.functional.discrete import aggregate_sequence
from ehrseq.models.distributions._math import DEFAULT_HERMITE_NODES, log_expected_sigmoid


def logit_normal_hazard_nll(
    mean_logits: torch.Tensor,
    log_scale: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    nodes: int = DEFAULT_HERMITE_NODES,
    censored_survives_last: bool = False,
    cause: int | None = None,
    time_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Visit-indexed discrete-time NLL with a logit-normal hazard at every visit.

    −log L_i = −Σ_{t<T} w_t log(1 − p_t) − Δ_i w_T log p_T with p_t the marginal hazard above; the
    hazard noise is independent across visits (a per-visit random effect), so the sequence likelihood
    factorises over the marginal probabilities. Labels, conventions (``censored_survives_last``,
    ``cause``, ``time_weights``) and aggregation as in :func:`~ehrseq.losses.functional.discrete_time_nll`.

    Parameters
    ----------
    mean_logits, log_scale: ``[B, M]``
        μ and log σ of the hazard logit at each visit (any value at padding).
    nodes:
        Gauss–Hermite nodes (accuracy in :func:`~ehrseq.models.distributions._math.log_expected_sigmoid`).
    """
    check_reduction(reduction, visit_weighting)
    labels = visit_labels(
        mean_logits, event, event_visit, mask, censored_survives_last=censored_survives_last, cause=cause,
        time_weights=time_weights,
    )
    check_floating(log_scale, "log_scale")
    check_shape(log_scale, tuple(mean_logits.shape), "log_scale")
    # the terms, at the at-risk positions only: log P(observed outcome) = log E[σ(±z)],
    # + for the event step, − for a survived step
    rows = labels.at_risk.nonzero(as_tuple=True)
    mean = mean_logits[rows]
    signed_mean = torch.where(labels.target[rows], mean, -mean)
    log_likelihood = log_expected_sigmoid(signed_mean, log_scale[rows], nodes)
    terms = log_likelihood.new_zeros(labels.at_risk.shape).index_put(rows, -log_likelihood)
    return aggregate_sequence(terms, labels, weight, reduction, visit_weighting)
