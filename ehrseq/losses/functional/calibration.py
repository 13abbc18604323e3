"""Calibration penalty: expected vs observed events per time step within the batch (§A4).

[catalogue] compares the mean per-visit hazard with the fraction of patients who have an event —
two different quantities, so its penalty does not vanish for a calibrated model. The penalty here
compares like with like, as a life table does. For every time step s (a horizon bin of the grid, or
a visit position for visit-indexed hazards):

    n_s = Σ_{at risk in s} v          (exposure: visit-steps at risk in s)
    E_s = Σ_{at risk in s} v · h_s    (expected events: sum of predicted hazards)
    O_s = Σ_{events in s} v           (observed events)

with v the weight of a visit (the sample weight w_b of its patient, divided by the patient's number
of visits for ``visit_weighting="patient"``). The penalty is the exposure-weighted mean squared
difference between the predicted hazard and the life-table hazard of each step,

    Σ_s n_s (E_s/n_s − O_s/n_s)² / Σ_s n_s  =  Σ_s (E_s − O_s)²/n_s / Σ_s n_s,

which is 0 when, at every step, the predicted hazards average to the observed event rate (the
discrete-time Kaplan–Meier hazard) of the patients at risk. The at-risk sets are those of the
corresponding likelihood, so the penalty and the NLL agree on who is at risk where.

Reduction: "mean" is the formula above; "none" returns the per-step squared differences
(E_s/n_s − O_s/n_s)² ``[S]`` (0 where nobody is at risk); "sum" is their plain sum over steps with
exposure. Steps with nobody at risk are ignored. A batch without exposure gives 0.
"""

from __future__ import annotations

import torch

from ehrseq.losses.functional._aggregate import Reduction, VisitWeighting, check_reduction, patient_weights
from ehrseq.losses.functional._labels import grid_labels, visit_labels


def _visit_weights(
    mask: torch.Tensor, weight: torch.Tensor | None, visit_weighting: VisitWeighting, like: torch.Tensor
) -> torch.Tensor:
    """Weight v ``[B, M]`` of every real visit in the counts (0 at padding)."""
    w = patient_weights(weight, mask.shape[0], like).unsqueeze(1)
    if visit_weighting == "patient":
        w = w / mask.sum(dim=1, keepdim=True).clamp_min(1).to(like.dtype)
    return torch.where(mask, w.expand(mask.shape), torch.zeros((), dtype=like.dtype, device=like.device))


def _penalty(
    expected: torch.Tensor, observed: torch.Tensor, exposure: torch.Tensor, reduction: Reduction
) -> torch.Tensor:
    """Reduce per-step expected/observed counts and exposures ``[S]`` as described in the module docstring."""
    has_exposure = exposure > 0
    safe_exposure = torch.where(has_exposure, exposure, torch.ones_like(exposure))
    squared = torch.where(has_exposure, ((expected - observed) / safe_exposure) ** 2, torch.zeros_like(expected))
    if reduction == "none":
        return squared
    if reduction == "sum":
        return squared.sum()
    return (exposure * squared).sum() / exposure.sum().clamp_min(torch.finfo(exposure.dtype).tiny)


def logistic_hazard_calibration(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Calibration penalty of logistic-hazard grid logits ``[B, M, L]``; one step per horizon bin.

    A visit is at risk in bin l for l ≤ min(κ, L − 1) and has its event in bin κ when Δ = 1 and κ < L
    (the at-risk sets of :func:`logistic_hazard_nll`). Returns a scalar, or ``[L]`` for "none".
    """
    check_reduction(reduction, visit_weighting)
    labels = grid_labels(logits, bin, event, mask, cause=cause)
    v = _visit_weights(labels.mask, weight, visit_weighting, logits)[labels.rows]  # [N]
    at_risk = labels.at_risk()
    z = labels.gather(logits)
    hazard = torch.sigmoid(torch.where(at_risk, z, torch.full_like(z, -torch.inf)))
    expected = v @ hazard
    exposure = v @ at_risk.to(logits.dtype)
    event_v = torch.where(labels.event_here, v, torch.zeros_like(v))
    observed = torch.zeros(labels.num_bins, dtype=logits.dtype, device=logits.device).index_add(
        0, labels.last_at_risk, event_v
    )
    return _penalty(expected, observed, exposure, reduction)


def discrete_time_calibration(
    logits: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    censored_survives_last: bool = False,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Calibration penalty of visit-indexed hazard logits ``[B, M]``; one step per visit position.

    At-risk sets and events are those of :func:`discrete_time_nll` (visits t < T, and T for an event or
    with ``censored_survives_last``); every patient counts with its sample weight at each position.
    Returns a scalar, or ``[M]`` for "none".
    """
    check_reduction(reduction)
    labels = visit_labels(
        logits, event, event_visit, mask, censored_survives_last=censored_survives_last, cause=cause
    )
    w = patient_weights(weight, logits.shape[0], logits).unsqueeze(1)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    hazard = torch.sigmoid(torch.where(labels.at_risk, logits, torch.full_like(logits, -torch.inf)))
    expected = (w * hazard).sum(dim=0)
    exposure = torch.where(labels.at_risk, w, zero).sum(dim=0)
    observed = torch.where(labels.target, w, zero).sum(dim=0)
    return _penalty(expected, observed, exposure, reduction)
