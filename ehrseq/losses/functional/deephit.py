"""PMF (DeepHit) likelihood and DeepHit ranking term on a horizon grid, with competing risks (§A3).

Layout of the head output at each visit ([monograph] eqs. 66–67): logits ``[B, M, K·L + 1]`` with one
joint softmax; index (k − 1)·L + l is cause k in grid bin l (bin l = (τ_l, τ_{l+1}]), the last index
is "no event within the grid" (R > τ_L). K = 1 is the single-event PMF with ``L + 1`` outputs.
Cause-specific CIF at the end of bin l: F_k[l] = Σ_{l' ≤ l} f_{k,l'}.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.autograd.function import once_differentiable

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
    patient_weights,
)
from ehrseq.losses.functional._labels import check_bins, check_event_visit, check_horizon_weights, event_types
from ehrseq.models.distributions import _native

RankingPairs = Literal["last", "visit"]


def pmf_num_bins(logits: torch.Tensor, num_causes: int) -> int:
    """Number of grid bins L of PMF logits ``[..., K·L + 1]``; raise :class:`ShapeError` if inconsistent."""
    if num_causes < 1:
        raise ValueError(f"num_causes must be >= 1, got {num_causes}")
    outputs = logits.shape[-1]
    if outputs < num_causes + 1 or (outputs - 1) % num_causes:
        raise ShapeError(
            f"PMF logits need K·L + 1 outputs in the last dimension (K = num_causes = {num_causes}, L >= 1 bins), "
            f"got {outputs}"
        )
    return (outputs - 1) // num_causes


class _NativeMassNLL(torch.autograd.Function):
    """−log Σ_{c ∈ A_n} f_c of the logit rows ``rows [N]`` of ``table [B·M, K·L + 1]`` in the native kernel
    (:func:`~ehrseq.models.distributions._native.mass_nll`): A_n = {``index``} for an event, the outputs of bins ≥
    ``threshold`` and the tail when censored (``index`` = −1). Its backward pass writes g (softmax(z) − softmax(z on
    A)) into the whole table (zero outside the rows) in one pass, where the operations of :func:`pmf_nll` gather the
    rows and scatter their gradients back into a table of zeros."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, table: torch.Tensor, rows: torch.Tensor, index: torch.Tensor,
                threshold: torch.Tensor, bins: int) -> torch.Tensor:
        result = _native.mass_nll(table, rows, index, threshold, bins)
        if result is None:
            raise RuntimeError("the native PMF likelihood was called where it does not apply")
        loss, sums = result
        ctx.save_for_backward(table, rows, index, threshold, sums)
        ctx.bins = bins
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        table, rows, index, threshold, sums = ctx.saved_tensors
        return _native.mass_nll_gradient(table, rows, index, threshold, ctx.bins, sums, grad), None, None, None, None


def pmf_nll(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    num_causes: int = 1,
    bin_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """DeepHit negative log-likelihood ([monograph] eq. 66; competing risks with K causes).

    With f = softmax(z) over the ``K·L + 1`` outputs and κ = ``bin[b, m]``, visit m contributes

        −log f_{k,κ}                        event of cause k inside the grid (κ < L)
        −log f_tail                         event beyond the grid (κ = L): only R > τ_L is known
        −log (Σ_k Σ_{l>κ} f_{k,l} + f_tail)  censored: the patient survives bin κ (as in
                                             :func:`logistic_hazard_nll`); beyond the grid, f_tail

    computed from log-softmaxes (log of the remaining mass as a normalised sum of exponentials), never
    as log(1 − cumulative); on CPU by the native kernel where it was built (:class:`_NativeMassNLL`: the same
    log-sum-exps read from the logit rows in place, the gradient written once), by the operations below elsewhere.
    ``bin_weights [L + 1]`` (§A8) weighs the term of a visit by its bin κ (index L: beyond the grid).

    Parameters
    ----------
    logits: ``[B, M, K·L + 1]``; bin: ``[B, M]`` in 0..L; event: ``[B]`` in 0..K; mask: ``[B, M]``.

    Returns a scalar for "mean"/"sum"; ``[B]`` or ``[B, M]`` for "none".
    """
    check_floating(logits, "logits")
    check_shape(logits, (None, None, None), "logits")
    check_reduction(reduction, visit_weighting)
    num_bins = pmf_num_bins(logits, num_causes)
    mask = check_mask(mask, logits.shape[:2])
    bins = check_bins(bin, mask, num_bins)
    types = event_types(event, logits.shape[0], num_causes)
    bin_weights = check_horizon_weights(bin_weights, num_bins + 1, "bin_weights", logits)

    rows = mask.nonzero(as_tuple=True)  # real visits only: padding costs nothing and never reaches a log
    flat_rows = rows[0] * mask.shape[1] + rows[1]
    kappa, cause = bins[rows], types[rows[0]]
    tail = logits.shape[-1] - 1
    # event: log f_{k,κ} (the tail beyond the grid); censored: the outputs of the bins after κ and the tail
    index = torch.where((cause > 0) & (kappa < num_bins), (cause - 1).clamp(min=0) * num_bins + kappa, tail)
    if logits.device.type == "cpu" and _native.available() and logits.dtype in (torch.float32, torch.float64):
        threshold = kappa.clamp(max=num_bins - 1) + 1
        per_visit = _NativeMassNLL.apply(logits.flatten(0, 1), flat_rows, torch.where(cause > 0, index, -1),
                                         threshold, num_bins)
    else:
        z = gather_visits(logits, flat_rows)  # [N, K·L + 1]
        log_mass = torch.log_softmax(z, dim=-1)
        per_visit = -log_mass.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        # censored: log Σ_{l>κ} f = log f_tail − log_softmax(z restricted to {l > κ} ∪ tail)_tail
        censored = (cause == 0).nonzero().squeeze(-1)
        output_bin = torch.arange(z.shape[-1], device=z.device) % num_bins
        output_bin[tail] = num_bins
        beyond = output_bin > kappa[censored].clamp(max=num_bins - 1).unsqueeze(-1)
        restricted = torch.where(beyond, z.index_select(0, censored), -torch.inf)
        tail_share = torch.log_softmax(restricted, dim=-1)[:, tail]
        per_visit = per_visit.index_add(0, censored, tail_share)
    if bin_weights is not None:
        per_visit = per_visit * bin_weights[kappa]
    per_visit = per_visit.new_zeros(mask.shape).index_put(rows, per_visit)
    return aggregate_visits(per_visit, mask, weight=weight, reduction=reduction, visit_weighting=visit_weighting)


def _ranking_groups(
    logits: torch.Tensor,
    bins: torch.Tensor,
    remaining: torch.Tensor,
    mask: torch.Tensor,
    event_visit: torch.Tensor | None,
    pairs: RankingPairs,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions compared together: ``[G, B, ...]`` with G = 1 ("last") or G = M ("visit")."""
    if pairs == "last":
        if event_visit is None:
            raise ValueError('pairs="last" compares predictions at the event/censoring visit: pass event_visit')
        last = check_event_visit(event_visit, mask)
        rows = torch.arange(mask.shape[0], device=mask.device)
        return (
            logits[rows, last].unsqueeze(0),
            bins[rows, last].unsqueeze(0),
            remaining[rows, last].unsqueeze(0),
            mask.any(dim=1).unsqueeze(0),
        )
    if pairs == "visit":
        return logits.transpose(0, 1), bins.transpose(0, 1), remaining.transpose(0, 1), mask.transpose(0, 1)
    raise ValueError(f'pairs must be "last" or "visit", got {pairs!r}')


#: :func:`deephit_ranking_loss` with ``pairs="last"`` factors its pair sums while 1/σ is at most this: the factors
#: e^{±(F − shift)/σ} then stay within e^{±40} (finite in float32, with room for their products).
_FACTORED_MAX_EXPONENT = 40.0


def _last_pairs_factored(cif: torch.Tensor, patients: torch.Tensor, types: torch.Tensor, bins: torch.Tensor,
                         times: torch.Tensor, w: torch.Tensor, eta: torch.Tensor | None, num_causes: int,
                         num_bins: int, sigma: float, reduction: Reduction) -> torch.Tensor:
    """The ``"last"`` ranking term ("mean" or "sum") without a list of pairs: for an event patient i with cause
    k and bin κ_i, with c = (k − 1)·L + κ_i,

        Σ_{j: R_j > R_i} w_i w_j e^{−(F_i[c] − F_j[c])/σ} = w_i e^{(s_c − F_i[c])/σ} Σ_{j: R_j > R_i} w_j e^{(F_j[c] − s_c)/σ},

    the inner sums of every i and column at once as one product of the ``[P, P]`` comparability matrix and the
    ``[P, K·L]`` table w_j e^{(F_j − s)/σ} (P present patients; s_c = max_j F_j[c], a constant shift, so that every
    factor is at most e^{1/σ}: CIFs lie in [0, 1]). ``cif`` ``[P, K·L]`` holds the present patients ``patients``
    ``[P]``; ``types``, ``bins``, ``times`` ``[B]``; ``w`` ``[B]``. Equal to the pair sums up to float rounding."""
    types, bins, times, w = types[patients], bins[patients], times[patients], w[patients]
    event = types > 0
    comparable = (event.unsqueeze(1) & (times.unsqueeze(1) < times.unsqueeze(0))).to(cif.dtype)  # [P, P]: i, j
    shift = cif.detach().amax(dim=0)  # [K·L]
    inner = comparable @ (w.unsqueeze(1) * torch.exp((cif - shift) / sigma))  # [P, K·L]
    column = torch.where(event, (types - 1) * num_bins + bins.clamp(max=num_bins - 1), 0).unsqueeze(1)  # [P, 1]
    own = cif.gather(1, column).squeeze(1)
    terms = w * torch.exp((shift[column.squeeze(1)] - own) / sigma) * inner.gather(1, column).squeeze(1)
    cause = torch.where(event, types, 0)
    totals = terms.new_zeros(num_causes + 1).index_add(0, cause, terms)[1:]
    if reduction == "mean":
        counts = terms.new_zeros(num_causes + 1).index_add(0, cause, w * (comparable @ w))[1:]
        totals = totals / torch.where(counts > 0, counts, 1.0)  # a cause without pairs adds 0 (and no NaN gradient)
    if eta is not None:
        totals = totals * eta
    return totals.sum() / num_causes


def deephit_ranking_loss(
    logits: torch.Tensor,
    bin: torch.Tensor,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    event_visit: torch.Tensor | None = None,
    num_causes: int = 1,
    sigma: float = 0.1,
    pairs: RankingPairs = "last",
    cause_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """DeepHit ranking term ([monograph] eqs. 68–70) with cause-specific CIFs.

    Comparable pairs for cause k: (i, j) with Δ_i = k and R_i < R_j (strict; ties excluded), where R is
    the remaining time from the compared predictions. The pair's term is

        exp(−(F_{k,i}[κ_i] − F_{k,j}[κ_i]) / σ)

    (both CIFs at the end of i's bin κ_i; beyond the grid, at τ_L). Which predictions are compared:

    * ``pairs="last"`` (default): each patient's prediction at its event/censoring visit
      (``event_visit``), with R = remaining time from that visit — the static DeepHit ranking applied to
      the last prediction of every history; pairs form a ``[B, B]`` matrix.
    * ``pairs="visit"``: at every visit position m, the patients with a real m-th visit are compared by
      their predictions at that visit, with R = remaining time from it (visit index as the common clock,
      as in the visit-indexed catalogue); the comparable-pair mask is ``[M, B, B]`` (bool).

    Terms are computed from the CIFs of real visits only: with ``pairs="last"`` (reduction "mean" or "sum", 1/σ ≤ 40)
    as one product of the ``[B, B]`` comparability matrix with a ``[B, K·L]`` table (:func:`_last_pairs_factored`),
    otherwise for a list of the comparable pairs (O(pairs) memory).

    Reduction: each pair weighs w_i w_j (sample weights; integer weights act as replicated patients).
    "mean" = (1/K) Σ_k η_k Σ_{pairs of k} w ℓ / Σ_{pairs of k} w (a cause without pairs adds 0),
    "sum" = (1/K) Σ_k η_k Σ_{pairs of k} w ℓ, "none" = the weighted terms η_{Δ_i} w_i w_j ℓ_ij as
    ``[B, B]`` ("last") or ``[M, B, B]`` ("visit"), 0 where (i, j) is not comparable.
    ``cause_weights`` η ``[K]`` default to 1.
    """
    check_floating(logits, "logits")
    check_shape(logits, (None, None, None), "logits")
    check_reduction(reduction)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    batch_size = logits.shape[0]
    num_bins = pmf_num_bins(logits, num_causes)
    mask = check_mask(mask, logits.shape[:2])
    bins = check_bins(bin, mask, num_bins)
    check_floating(remaining, "remaining")
    check_shape(remaining, tuple(mask.shape), "remaining")
    types = event_types(event, batch_size, num_causes)
    eta = check_horizon_weights(cause_weights, num_causes, "cause_weights", logits)
    w = patient_weights(weight, batch_size, logits)

    group_logits, group_bins, group_remaining, present = _ranking_groups(
        logits, bins, remaining, mask, event_visit, pairs
    )
    # CIFs of the compared predictions (present rows only: padding is never read)
    row_group, row_patient = present.nonzero(as_tuple=True)
    mass = torch.softmax(group_logits[row_group, row_patient], dim=-1)[:, :-1]
    cif = mass.unflatten(-1, (num_causes, num_bins)).cumsum(dim=-1).flatten(-2)  # [R, K·L]
    times = torch.where(present, group_remaining, torch.zeros_like(group_remaining))
    if pairs == "last" and reduction != "none" and 1.0 / sigma <= _FACTORED_MAX_EXPONENT:
        return _last_pairs_factored(cif, row_patient, types, group_bins[0], times[0], w, eta, num_causes, num_bins,
                                    sigma, reduction)
    position = torch.full(present.shape, -1, dtype=torch.long, device=present.device)
    position = position.index_put((row_group, row_patient), torch.arange(row_group.shape[0], device=present.device))

    # comparable pairs (g, i, j): i has an event, both present, R_i < R_j
    comparable = (
        (present & (types > 0)).unsqueeze(2) & present.unsqueeze(1) & (times.unsqueeze(2) < times.unsqueeze(1))
    )
    group, first, second = comparable.nonzero(as_tuple=True)
    cause = types[first]
    column = (cause - 1) * num_bins + group_bins[group, first].clamp(max=num_bins - 1)  # F_cause at κ_i
    difference = cif[position[group, first], column] - cif[position[group, second], column]
    pair_weight = w[first] * w[second]
    weighted = pair_weight * torch.exp(-difference / sigma)
    if reduction == "none":
        scaled = weighted if eta is None else weighted * eta[cause - 1]
        dense = scaled.new_zeros(present.shape[0], batch_size, batch_size).index_put((group, first, second), scaled)
        return dense.squeeze(0) if pairs == "last" else dense
    per_cause = weighted.new_zeros(num_causes + 1)
    totals = per_cause.index_add(0, cause, weighted)[1:]
    if reduction == "mean":
        counts = per_cause.index_add(0, cause, pair_weight)[1:]
        totals = totals / torch.where(counts > 0, counts, 1.0)  # a cause without pairs adds 0 (and no NaN gradient)
    if eta is not None:
        totals = totals * eta
    return totals.sum() / num_causes
