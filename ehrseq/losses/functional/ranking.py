"""Pairwise ranking loss on risk scores (§A5) and risks at a common horizon from grid logits.

[catalogue] ranks patients by the sum of their per-visit hazards, which grows with the number of
visits rather than with risk; here the score is any risk at a *common horizon* — e.g. the probability
of the event within τ_h of the last visit, :func:`logistic_hazard_risk` / :func:`pmf_risk` — or any
risk score ``[B]`` (higher = earlier event expected).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ehrseq.losses.functional._aggregate import Reduction, check_floating, check_reduction, check_shape, patient_weights
from ehrseq.losses.functional._labels import event_indicator
from ehrseq.losses.functional.deephit import pmf_num_bins


def logistic_hazard_risk(logits: torch.Tensor, horizon: int) -> torch.Tensor:
    """F(τ_h) = 1 − Π_{l<h} (1 − σ(z_l)) from logistic-hazard logits ``[..., L]``; shape ``[...]``.

    ``horizon`` h ∈ 1..L counts grid bins; computed as −expm1(−Σ_{l<h} softplus(z_l)).
    """
    check_floating(logits, "logits")
    if not 1 <= horizon <= logits.shape[-1]:
        raise ValueError(f"horizon must be a number of grid bins in 1..{logits.shape[-1]}, got {horizon}")
    return -torch.expm1(-F.softplus(logits[..., :horizon]).sum(dim=-1))


def pmf_risk(logits: torch.Tensor, horizon: int, *, num_causes: int = 1, cause: int | None = None) -> torch.Tensor:
    """F(τ_h) (all causes) or F_k(τ_h) (``cause=k``) from PMF logits ``[..., K·L + 1]``; shape ``[...]``.

    Computed as exp(logsumexp(z over the selected bins < h) − logsumexp(z)).
    """
    check_floating(logits, "logits")
    num_bins = pmf_num_bins(logits, num_causes)
    if not 1 <= horizon <= num_bins:
        raise ValueError(f"horizon must be a number of grid bins in 1..{num_bins}, got {horizon}")
    if cause is not None and not 1 <= cause <= num_causes:
        raise ValueError(f"cause must lie in 1..{num_causes}, got {cause}")
    by_cause = logits[..., :-1].unflatten(-1, (num_causes, num_bins))[..., :horizon]
    selected = by_cause[..., cause - 1, :] if cause is not None else by_cause.flatten(-2)
    return torch.exp(torch.logsumexp(selected, dim=-1) - torch.logsumexp(logits, dim=-1))


def ranking_loss(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Pairwise logistic ranking loss (a smooth Harrell concordance; [catalogue] §2, corrected).

    Comparable pairs: (i, j) with Δ_i = 1 and Y_i < Y_j (strict; tied times excluded), the usual
    concordance pairs. Each contributes −log σ((r_i − r_j)/T) = softplus(−(r_i − r_j)/T): patient i,
    whose event came first, should have the higher risk.

    Parameters
    ----------
    risk: ``[B]``
        Risk scores at a common horizon (higher = riskier).
    time: ``[B]``
        Observed times Y on the clock the risks refer to (e.g. remaining time from the last visit).
    event: ``[B]``
        0 = censored, 1..K (or bool); ``cause=k`` makes only type k anchors (other types stay in the
        comparison set as later-or-censored patients).
    mask: ``[B]``, optional
        False for patients to leave out (e.g. padding rows); their values may be NaN.
    temperature: T > 0.
    weight: ``[B]``, optional
        Sample weights; a pair weighs w_i w_j (integer weights act as replicated patients).
    reduction:
        "mean" = Σ w_i w_j ℓ_ij / Σ w_i w_j over comparable pairs (0 without any), "sum", or "none" for
        the ``[B, B]`` matrix of weighted pair terms (0 where (i, j) is not comparable).
    """
    check_floating(risk, "risk")
    check_shape(risk, (None,), "risk")
    check_reduction(reduction)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch_size = risk.shape[0]
    check_floating(time, "time")
    check_shape(time, (batch_size,), "time")
    delta = event_indicator(event, batch_size, cause)
    w = patient_weights(weight, batch_size, risk)
    if mask is None:
        present = torch.ones(batch_size, dtype=torch.bool, device=risk.device)
    else:
        check_shape(mask, (batch_size,), "mask")
        present = mask.bool()
    safe_time = torch.where(present, time, torch.zeros_like(time))
    later = safe_time.unsqueeze(1) < safe_time.unsqueeze(0)
    comparable = (present & delta).unsqueeze(1) & present.unsqueeze(0) & later
    # terms of the comparable pairs only: O(pairs) memory, and left-out patients are never read
    first, second = comparable.nonzero(as_tuple=True)
    pair_weight = w[first] * w[second]
    weighted = pair_weight * F.softplus((risk[second] - risk[first]) / temperature)
    if reduction == "none":
        return risk.new_zeros(batch_size, batch_size).index_put((first, second), weighted)
    if reduction == "sum":
        return weighted.sum()
    return weighted.sum() / pair_weight.sum().clamp_min(torch.finfo(risk.dtype).tiny)
