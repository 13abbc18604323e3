"""Auxiliary next-visit prediction losses ([catalogue] §9; [monograph] §6.2.3, Dynamic-DeepHit).

The prediction made at visit t (from the history up to t) targets visit t + 1; only pairs of real
visits (t, t + 1) contribute, and the pair stands at position t for the aggregation (``[B, M − 1]``
terms, "patient" = mean over each patient's pairs then over patients with a pair).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ehrseq.data.batch import PAD_INDEX
from ehrseq.errors import ShapeError
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
from ehrseq.models.distributions import _native


def _check_codes(codes: torch.Tensor, vocab_size: int) -> None:
    check_shape(codes, (None, None, None), "codes")
    check_integer(codes, "codes")
    if torch.any((codes < 0) | (codes >= vocab_size)):
        raise ValueError(f"codes must be vocabulary indices in 0..{vocab_size - 1}")


def codes_to_multi_hot(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Multi-hot targets ``[B, M, V]`` (bool) from padded code indices ``[B, M, K]``; the padding index is dropped."""
    _check_codes(codes, vocab_size)
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
    observed = (~gather_visits(numeric_missing, now + 1).bool()).to(prediction.dtype)
    # missing targets may hold NaN: replaced before the difference, whose missing entries the mask zeroes
    target = torch.where(observed > 0, gather_visits(numeric, now + 1).to(prediction.dtype), 0.0)
    counts = observed.sum(dim=-1)
    per_pair = _PairMaskedMSE.apply(prediction.flatten(0, 1), now, target, observed, counts.clamp_min(1.0).reciprocal_())
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
    return _code_loss(logits, lambda rows: gather_visits(codes, rows).to(logits.dtype), mask, weight, reduction,
                      visit_weighting)


def next_visit_code_loss_from_indices(
    logits: torch.Tensor,
    codes: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """:func:`next_visit_code_loss` with the visits' padded code indices ``codes [B, M, K]`` (as in a
    :class:`~ehrseq.data.batch.SequenceBatch`) instead of multi-hot targets: equal to it on
    :func:`codes_to_multi_hot` of them, with the targets formed only at the visits that follow a pair.
    """
    check_floating(logits, "logits")
    check_shape(logits, (None, None, None), "logits")
    check_reduction(reduction, visit_weighting)
    vocab_size = logits.shape[-1]
    _check_codes(codes, vocab_size)
    mask = check_mask(mask, logits.shape[:2])
    if codes.shape[:2] != logits.shape[:2]:
        raise ShapeError(f"codes must have shape {list(logits.shape[:2])} + [K], got {list(codes.shape)}")

    pairs, index, now = _pairs(mask)
    per_pair = _PairCodeBCE.apply(logits.flatten(0, 1), now, gather_visits(codes, now + 1).long())
    dense = per_pair.new_zeros(pairs.shape).index_put(index, per_pair)
    return aggregate_visits(dense, pairs, weight=weight, reduction=reduction, visit_weighting=visit_weighting)


class _PairCodeBCE(torch.autograd.Function):
    """Mean BCE-with-logits over the vocabulary of the logits of visit rows ``rows [P]`` of ``logits [R, V]``
    against the codes ``codes [P, K]`` listed at the next visit, whose set C_p counts each code once and never the
    padding index:

        ℓ_p = (1/V) [Σ_v softplus(z_{r_p v}) − Σ_{v ∈ C_p} z_{r_p v}]

    (softplus(z) − y·z summed with y the multi-hot target of C_p, without forming y). The backward pass writes
    (σ(z) − y)/V times the incoming gradient into the rows r_p of a ``[R, V]`` gradient (zero elsewhere), with no
    ``[P, V]`` targets. On CPU the native kernel (:func:`~ehrseq.models.distributions._native.pair_code_bce` and its
    gradient) reads the rows and the listed codes in place and writes the gradient table in one pass where it was
    built; the operations below elsewhere.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor
                ) -> torch.Tensor:
        ctx.total_rows = logits.shape[0]
        native = _native.pair_code_bce(logits, rows, codes)
        ctx.native = native is not None
        if ctx.native:
            ctx.save_for_backward(logits, rows, codes)
            return native
        z = logits.index_select(0, rows)
        codes = codes.sort(dim=1).values
        keep = codes != PAD_INDEX  # a code counts once however often it is listed; padding never
        keep[:, 1:] &= codes[:, 1:] != codes[:, :-1]
        keep = keep.to(z.dtype)
        ctx.save_for_backward(z, rows, codes, keep)
        # softplus is linear beyond 40: e⁻⁴⁰ is below float64's resolution
        listed = z.gather(1, codes).mul_(keep).sum(dim=1)
        return F.softplus(z, threshold=40.0).sum(dim=1).sub_(listed).div_(z.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if ctx.native:
            logits, rows, codes = ctx.saved_tensors
            return _native.pair_code_bce_gradient(logits, rows, codes, grad), None, None
        z, rows, codes, keep = ctx.saved_tensors
        scale = (grad / z.shape[1]).unsqueeze(1)
        rows_gradient = torch.sigmoid(z).mul_(scale).scatter_add_(1, codes, keep.mul(scale).neg_())
        full = z.new_zeros(ctx.total_rows, z.shape[1])
        return full.index_copy_(0, rows, rows_gradient), None, None


class _PairMaskedMSE(torch.autograd.Function):
    """Mean squared error of the prediction rows ``rows [P]`` of ``prediction [R, F]`` against ``target [P, F]`` over
    the features that ``observed [P, F]`` (0/1) marks, ``inverse_counts [P]`` = 1/max(#observed, 1):

        ℓ_p = (1/n_p) Σ_f o_pf (ŷ_{r_p f} − x_pf)²

    The backward pass writes 2 o (ŷ − x)/n_p times the incoming gradient into the rows r_p of a ``[R, F]``
    gradient (zero elsewhere): one new table, no graph of the ``[P, F]`` intermediates.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, prediction: torch.Tensor, rows: torch.Tensor,
                target: torch.Tensor, observed: torch.Tensor, inverse_counts: torch.Tensor) -> torch.Tensor:
        difference = prediction.index_select(0, rows).sub_(target).mul_(observed)
        ctx.save_for_backward(difference, rows, inverse_counts)
        ctx.total_rows = prediction.shape[0]
        return torch.linalg.vecdot(difference, difference).mul_(inverse_counts)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        difference, rows, inverse_counts = ctx.saved_tensors
        rows_gradient = difference * (2.0 * grad * inverse_counts).unsqueeze(1)
        full = difference.new_zeros(ctx.total_rows, difference.shape[1])
        return full.index_copy_(0, rows, rows_gradient), None, None, None, None


class _RowMeanBCE(torch.autograd.Function):
    """Mean over the last dim of BCE-with-logits(z, y) = softplus(z) − y·z, ``[P, V]`` → ``[P]``; the backward
    pass is (σ(z) − y)/V times the incoming gradient (no graph of the ``[P, V]`` intermediates)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, targets)
        # softplus is linear beyond 40: e⁻⁴⁰ is below float64's resolution
        return F.softplus(logits, threshold=40.0).addcmul_(targets, logits, value=-1.0).mean(dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets = ctx.saved_tensors
        return torch.sigmoid(logits).sub_(targets).mul_(grad.unsqueeze(1) / logits.shape[1]), None


def _code_loss(logits: torch.Tensor, targets: Callable[[torch.Tensor], torch.Tensor], mask: torch.Tensor,
               weight: torch.Tensor | None, reduction: Reduction, visit_weighting: VisitWeighting) -> torch.Tensor:
    """Per-pair mean BCE of the logits at t against ``targets(rows of t + 1)`` ``[P, V]``, aggregated."""
    pairs, index, now = _pairs(mask)
    predicted, observed = gather_visits(logits, now), targets(now + 1)
    if observed.requires_grad:
        per_pair = F.binary_cross_entropy_with_logits(predicted, observed, reduction="none").mean(dim=-1)
    else:
        per_pair = _RowMeanBCE.apply(predicted, observed)
    dense = per_pair.new_zeros(pairs.shape).index_put(index, per_pair)
    return aggregate_visits(dense, pairs, weight=weight, reduction=reduction, visit_weighting=visit_weighting)
