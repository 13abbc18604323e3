"""Auxiliary next-visit prediction losses ([catalogue] §9; [monograph] §6.2.3, Dynamic-DeepHit).

The prediction made at visit t (from the history up to t) targets visit t + 1; only pairs of real
visits (t, t + 1) contribute, and the pair stands at position t for the aggregation (``[B, M − 1]``
terms, "patient" = mean over each patient's pairs then over patients with a pair).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ehrseq.data.batch import PAD_INDEX
from ehrseq.losses.functional._aggregate import (
    Reduction,
    VisitWeighting,
    aggregate_visits,
    check_floating,
    check_mask,
    check_reduction,
    check_shape,
    gather_visits,
)
from ehrseq.losses.functional._labels import check_integer


def codes_to_multi_hot(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Multi-hot targets ``[B, M, V]`` (bool) from padded code indices ``[B, M, K]``; the padding index is dropped."""
    check_shape(codes, (None, None, None), "codes")
    check_integer(codes, "codes")
    if torch.any((codes < 0) | (codes >= vocab_size)):
        raise ValueError(f"codes must be vocabulary indices in 0..{vocab_size - 1}")
    multi_hot = torch.zeros(*codes.shape[:2], vocab_size, dtype=torch.bool, device=codes.device)
    multi_hot.scatter_(-1, codes.long(), True)
    multi_hot[..., PAD_INDEX] = False
    return multi_hot


def _pairs(mask: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Pairs of real visits (t, t + 1): the ``[B, M − 1]`` indicator, the (patient, t) index of each pair,
    and the rows b·M + t of the predictions in ``[B·M, ...]`` (the targets are the next rows)."""
    pairs = mask[:, 1:] & mask[:, :-1]
    patient, visit = pairs.nonzero(as_tuple=True)
    return pairs, (patient, visit), patient * mask.shape[1] + visit


def next_visit_numeric_loss(
    prediction: torch.Tensor,
    numeric: torch.Tensor,
    numeric_missing: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Masked MSE between the numeric features predicted at visit t and those observed at t + 1.

    Per pair: the mean of (ŷ_{t,f} − x_{t+1,f})² over the features f observed at t + 1
    (``numeric_missing`` False); pairs without any observed feature do not count.

    Parameters
    ----------
    prediction: ``[B, M, F]``; numeric: ``[B, M, F]``; numeric_missing: ``[B, M, F]`` bool; mask: ``[B, M]``.
    Missing or padded values may be anything (NaN included).
    """
    check_floating(prediction, "prediction")
    check_shape(prediction, (None, None, None), "prediction")
    check_reduction(reduction, visit_weighting)
    check_shape(numeric, tuple(prediction.shape), "numeric")
    check_shape(numeric_missing, tuple(prediction.shape), "numeric_missing")
    mask = check_mask(mask, prediction.shape[:2])
    pairs, index, now = _pairs(mask)
    observed = ~gather_visits(numeric_missing, now + 1).bool()
    difference = gather_visits(prediction, now) - gather_visits(numeric, now + 1).to(prediction.dtype)
    squared = torch.where(observed, difference, 0.0).square()  # missing targets may hold NaN: selected away
    counts = observed.sum(dim=-1)
    per_pair = squared.sum(dim=-1) / counts.clamp_min(1).to(prediction.dtype)
    dense = per_pair.new_zeros(pairs.shape).index_put(index, per_pair)
    counted = torch.zeros_like(pairs).index_put(index, counts > 0)
    return aggregate_visits(dense, counted, weight=weight, reduction=reduction, visit_weighting=visit_weighting)


def next_visit_code_loss(
    logits: torch.Tensor,
    codes: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Binary cross-entropy (from logits) between codes predicted at visit t and those recorded at t + 1.

    Per pair: the mean over the vocabulary of BCE(z_{t,v}, y_{t+1,v}).

    Parameters
    ----------
    logits: ``[B, M, V]``; codes: ``[B, M, V]`` multi-hot targets (bool or 0/1, see
    :func:`codes_to_multi_hot`); mask: ``[B, M]``.
    """
    check_floating(logits, "logits")
    check_shape(logits, (None, None, None), "logits")
    check_reduction(reduction, visit_weighting)
    check_shape(codes, tuple(logits.shape), "codes")
    mask = check_mask(mask, logits.shape[:2])
    pairs, index, now = _pairs(mask)
    per_pair = F.binary_cross_entropy_with_logits(
        gather_visits(logits, now), gather_visits(codes, now + 1).to(logits.dtype), reduction="none"
    ).mean(dim=-1)
    dense = per_pair.new_zeros(pairs.shape).index_put(index, per_pair)
    return aggregate_visits(dense, pairs, weight=weight, reduction=reduction, visit_weighting=visit_weighting)
