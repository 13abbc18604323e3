"""Supervised contrastive (InfoNCE) loss on visit states at the event/censoring visit (§A9)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ehrseq.losses.functional._aggregate import (
    Reduction,
    aggregate_patients,
    check_floating,
    check_mask,
    check_reduction,
    check_shape,
)
from ehrseq.losses.functional._labels import check_event_visit, event_indicator

Positives = Literal["sum", "mean"]


def supervised_contrastive_loss(
    states: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 0.5,
    positives: Positives = "sum",
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Supervised InfoNCE between patients with and without the event ([catalogue] §6).

    Each patient is represented by its state at the event/censoring visit, L2-normalised:
    u_i = s_{i,T_i} / ‖s_{i,T_i}‖, with similarities S_ij = u_i·u_j / T. Anchors are event patients
    (Δ_i = 1) with at least one positive; the positives P(i) are the other event patients, the
    negatives N(i) the censored ones (and, with ``cause=k``, patients with another event type), and
    A(i) = P(i) ∪ N(i) every other patient. Per anchor:

    * ``positives="sum"`` ([catalogue]'s form): −log(Σ_{p∈P(i)} e^{S_ip} / Σ_{a∈A(i)} e^{S_ia})
    * ``positives="mean"`` (SupCon "L_out", Khosla et al. 2020):
      −(1/|P(i)|) Σ_{p∈P(i)} log(e^{S_ip} / Σ_{a∈A(i)} e^{S_ia})

    both computed with logsumexp on the masked ``[B, B]`` similarity matrix. Anchors are averaged with
    their sample weights ("mean"), summed ("sum"), or returned per patient ``[B]`` ("none", 0 for
    non-anchors). A batch without any anchor gives 0 (with a zero gradient).

    Parameters
    ----------
    states: ``[B, M, D]``
        Visit states (encoder outputs); padding may hold any value.
    event: ``[B]``; event_visit: ``[B]``; mask: ``[B, M]`` — as in :class:`ehrseq.data.SequenceBatch`.
    temperature: T > 0.
    """
    check_floating(states, "states")
    check_shape(states, (None, None, None), "states")
    check_reduction(reduction)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if positives not in ("sum", "mean"):
        raise ValueError(f'positives must be "sum" or "mean", got {positives!r}')
    batch_size = states.shape[0]
    mask = check_mask(mask, states.shape[:2])
    delta = event_indicator(event, batch_size, cause)
    last = check_event_visit(event_visit, mask)
    present = mask.any(dim=1)

    rows = torch.arange(batch_size, device=states.device)
    final = states[rows, last]
    final = torch.where(present.unsqueeze(1), final, torch.ones_like(final))
    unit = F.normalize(final, dim=-1)
    similarity = unit @ unit.T / temperature

    others = present.unsqueeze(0) & ~torch.eye(batch_size, dtype=torch.bool, device=states.device)
    positive = others & delta.unsqueeze(0) & delta.unsqueeze(1)
    anchor = present & delta & positive.any(dim=1)
    # rows that are not anchors use every column so that no logsumexp runs over an empty set
    row_free = ~anchor.unsqueeze(1)
    neg_inf = torch.full_like(similarity, -torch.inf)
    log_all = torch.logsumexp(torch.where(others | row_free, similarity, neg_inf), dim=1)
    if positives == "sum":
        log_positive = torch.logsumexp(torch.where(positive | row_free, similarity, neg_inf), dim=1)
        per_anchor = log_all - log_positive
    else:
        positive_f = positive.to(similarity.dtype)
        mean_positive = (torch.where(positive, similarity, torch.zeros_like(similarity))).sum(dim=1) / (
            positive_f.sum(dim=1).clamp_min(1)
        )
        per_anchor = log_all - mean_positive
    per_anchor = torch.where(anchor, per_anchor, torch.zeros_like(per_anchor))
    return aggregate_patients(per_anchor, weight=weight, reduction=reduction, present=anchor)
