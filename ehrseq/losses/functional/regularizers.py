"""Regularizers on predicted hazards (§A10)."""

from __future__ import annotations

import torch

from ehrseq.errors import ShapeError
from ehrseq.losses.functional._aggregate import (
    Reduction,
    VisitWeighting,
    aggregate_visits,
    check_floating,
    check_mask,
    check_reduction,
)


def smooth_hazard_penalty(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Squared change of the hazard between consecutive real visits ([catalogue] §7).

    For hazards h = σ(z) the term of the visit pair (t, t + 1), both real, is (h_{t+1} − h_t)²;
    for grid logits ``[B, M, L]`` it is the mean over bins of (h_{t+1,l} − h_{t,l})². Pairs are
    aggregated like visits (pair t stands at position t): "patient" = mean over each patient's pairs,
    then over patients that have a pair; "visit" = mean over all pairs ([catalogue]'s form).

    Parameters
    ----------
    logits: ``[B, M]`` (visit-indexed) or ``[B, M, L]`` (grid); any value at padding.
    mask: ``[B, M]``.

    Returns a scalar for "mean"/"sum"; ``[B]`` or ``[B, M − 1]`` for "none".
    """
    check_floating(logits, "logits")
    if logits.dim() not in (2, 3):
        raise ShapeError(f"logits must have shape [B, M] or [B, M, L], got {list(logits.shape)}")
    check_reduction(reduction, visit_weighting)
    mask = check_mask(mask, logits.shape[:2])
    # hazards of the real visits only (row-major); consecutive rows are a pair when they are visits t and
    # t + 1 of the same patient
    patient, visit = mask.nonzero(as_tuple=True)
    hazard = torch.sigmoid(logits[patient, visit])
    squared = (hazard[1:] - hazard[:-1]) ** 2
    if logits.dim() == 3:
        squared = squared.mean(dim=-1)
    is_pair = (patient[1:] == patient[:-1]) & (visit[1:] == visit[:-1] + 1)
    first = (patient[:-1][is_pair], visit[:-1][is_pair])
    pairs = torch.zeros(mask.shape[0], max(mask.shape[1] - 1, 0), dtype=torch.bool, device=mask.device)
    pairs = pairs.index_put(first, torch.ones_like(first[0], dtype=torch.bool))
    terms = squared.new_zeros(pairs.shape).index_put(first, squared[is_pair])
    return aggregate_visits(terms, pairs, weight=weight, reduction=reduction, visit_weighting=visit_weighting)
