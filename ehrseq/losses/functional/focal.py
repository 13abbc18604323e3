"""Focal variants of the discrete-time hazard likelihoods ([catalogue] §3, docs/reference.md §A6).

Every Bernoulli log-term of the likelihood (survive a step: y = 0; event at a step: y = 1) is
multiplied by α_y (1 − p_y)^γ, where p_y is the probability the model gives to the observed outcome.
Easy terms (p_y → 1) are down-weighted, hard ones kept. γ = 0 and ``alpha=None`` recover the
likelihood exactly. Unlike the [catalogue] snippet (which weighs survival terms by h^γ computed from
clamped probabilities) the factors are computed from logits and are finite for any finite logit.

By default the modulating factor is part of the graph, as in the original focal loss (Lin et al.,
2017) and ``torchvision.ops.sigmoid_focal_loss``; ``detach_weights=True`` treats it as a constant
weight (the gradient is then that of a re-weighted likelihood).
"""

from __future__ import annotations

import torch

from ehrseq.losses.functional._aggregate import Reduction, VisitWeighting
from ehrseq.losses.functional.discrete import grid_likelihood, visit_likelihood


def check_focal_parameters(gamma: float, alpha: float | None) -> None:
    """Raise ``ValueError`` unless γ ≥ 0 and α ∈ [0, 1] (or None)."""
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (or be None for no balancing), got {alpha}")


def discrete_time_focal_loss(
    logits: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    detach_weights: bool = False,
    censored_survives_last: bool = False,
    cause: int | None = None,
    time_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Focal visit-indexed discrete-time loss: the terms of :func:`discrete_time_nll`, focal-weighted.

    Per patient: Σ_{t<T} w_t (1−α) h_t^γ (−log(1 − h_t)) + Δ w_T α (1 − h_T)^γ (−log h_T). Shapes,
    conventions and aggregation as in :func:`~ehrseq.losses.functional.discrete_time_nll`.
    """
    check_focal_parameters(gamma, alpha)
    return visit_likelihood(
        logits, event, event_visit, mask, censored_survives_last=censored_survives_last, cause=cause,
        time_weights=time_weights, weight=weight, reduction=reduction, visit_weighting=visit_weighting,
        gamma=gamma, alpha=alpha, detach_weights=detach_weights,
    )


def logistic_hazard_focal_loss(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    detach_weights: bool = False,
    cause: int | None = None,
    bin_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Focal logistic-hazard loss on a horizon grid: the terms of :func:`logistic_hazard_nll`, focal-weighted.

    Per visit: Σ_{l ≤ min(κ, L−1)} w_l α_y (1 − p_y)^γ (−log p_y) with y = 1 only in bin κ of an event
    inside the grid. Shapes, conventions and aggregation as in
    :func:`~ehrseq.losses.functional.logistic_hazard_nll`.
    """
    check_focal_parameters(gamma, alpha)
    return grid_likelihood(
        logits, bin, event, mask, cause=cause, bin_weights=bin_weights, weight=weight, reduction=reduction,
        visit_weighting=visit_weighting, gamma=gamma, alpha=alpha, detach_weights=detach_weights,
    )
