"""Discrete-time hazard likelihoods from logits: visit-indexed (A1) and on a horizon grid (A2).

Both are sums of Bernoulli log-likelihood terms, one per time step at which the patient is at risk
(docs/reference.md §A1, §A2; [monograph] eqs. 24–26). Time-stratified weights (§A8) multiply every
log-term of a visit position (``time_weights``) or of a horizon bin (``bin_weights``).
"""

from __future__ import annotations

from typing import Any

import torch

from ehrseq.losses.functional._aggregate import Reduction, VisitWeighting, aggregate_visits, check_reduction
from ehrseq.losses.functional._bernoulli import event_nll, survival_nll
from ehrseq.losses.functional._labels import GridLabels, VisitLabels, compact_grid_labels, grid_labels, visit_labels


def visit_terms(logits: torch.Tensor, at_risk: torch.Tensor, target: torch.Tensor, **focal: object) -> torch.Tensor:
    """Per-visit log-terms ``[B, M]`` of a visit-indexed likelihood: survived steps and the event step."""
    return survival_nll(logits, at_risk & ~target, **focal) + event_nll(logits, target, **focal)


def grid_terms(logits: torch.Tensor, labels: GridLabels, **focal: object) -> torch.Tensor:
    """Per-visit sums of the log-terms of a logistic-hazard grid likelihood, ``[N]`` (real visits).

    ``logits`` are the real visits' rows ``[N, L]``; bin weights of ``labels`` multiply every term.
    """
    survived = survival_nll(logits, labels.survived(), **focal)
    event_logit = logits.gather(-1, labels.last_at_risk.unsqueeze(-1)).squeeze(-1)
    event = event_nll(event_logit, labels.event_here, **focal)
    if labels.bin_weights is not None:
        survived = survived * labels.bin_weights
        event = event * labels.bin_weights[labels.last_at_risk]
    return survived.sum(dim=-1) + event


def aggregate_sequence(
    terms: torch.Tensor, labels: VisitLabels, weight: torch.Tensor | None, reduction: Reduction,
    visit_weighting: VisitWeighting,
) -> torch.Tensor:
    """Weigh visit-indexed terms ``[B, M]`` by position and aggregate them as sequence log-likelihoods."""
    if labels.time_weights is not None:
        terms = terms * labels.time_weights
    return aggregate_visits(
        terms, labels.in_sequence, weight=weight, reduction=reduction, visit_weighting=visit_weighting,
        within_patient="sum",
    )


def visit_likelihood(
    logits: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    censored_survives_last: bool,
    cause: int | None,
    time_weights: torch.Tensor | None,
    weight: torch.Tensor | None,
    reduction: Reduction,
    visit_weighting: VisitWeighting,
    **focal: Any,
) -> torch.Tensor:
    """Visit-indexed likelihood, plain or focal (``gamma``, ``alpha``, ``detach_weights``)."""
    check_reduction(reduction, visit_weighting)
    labels = visit_labels(
        logits, event, event_visit, mask, censored_survives_last=censored_survives_last, cause=cause,
        time_weights=time_weights,
    )
    terms = visit_terms(logits, labels.at_risk, labels.target, **focal)
    return aggregate_sequence(terms, labels, weight, reduction, visit_weighting)


def grid_likelihood(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    cause: int | None,
    bin_weights: torch.Tensor | None,
    weight: torch.Tensor | None,
    reduction: Reduction,
    visit_weighting: VisitWeighting,
    **focal: Any,
) -> torch.Tensor:
    """Logistic-hazard grid likelihood, plain or focal (``gamma``, ``alpha``, ``detach_weights``)."""
    check_reduction(reduction, visit_weighting)
    labels = grid_labels(logits, bin, event, mask, cause=cause, bin_weights=bin_weights)
    per_visit = labels.scatter(grid_terms(labels.gather(logits), labels, **focal))
    return aggregate_visits(per_visit, labels.mask, weight=weight, reduction=reduction, visit_weighting=visit_weighting)


def discrete_time_nll(
    logits: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    censored_survives_last: bool = False,
    cause: int | None = None,
    time_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Visit-indexed discrete-time negative log-likelihood ([catalogue] §A1).

    With h_{t} = σ(z_{t}) the hazard of the event at visit t and T = ``event_visit``, patient i
    contributes

        −log L_i = −Σ_{t<T} w_t log(1 − h_t) − Δ_i w_T log h_T

    computed as Σ_{t<T} w_t softplus(z_t) + Δ_i w_T softplus(−z_T). By default (the [catalogue]
    convention) a censored patient contributes nothing at its censoring visit: censoring is recorded at
    visit T, before the hazard of T has been lived through. With ``censored_survives_last=True`` it
    also contributes −log(1 − h_T) (the patient is known to have survived the step of visit T).

    Parameters
    ----------
    logits: ``[B, M]``
        Hazard logits z per visit (any value at padding, NaN included).
    event: ``[B]``
        0 = censored, 1..K = event type (or bool). ``cause=k`` takes type k as the event and the other
        types as censored; ``cause=None`` takes any type.
    event_visit: ``[B]``
        Index T of the event/censoring visit (a real visit); later visits do not contribute.
    mask: ``[B, M]``
        True at real visits.
    time_weights: ``[M]``, optional
        Weight w_t of every log-term at visit position t (time-stratified loss, §A8); 1 by default.
    weight: ``[B]``, optional
        Per-patient sample weights (§A13).
    reduction, visit_weighting:
        See :mod:`ehrseq.losses.functional._aggregate`. The per-patient value is the *sum* of its
        terms (a sequence log-likelihood): "patient" gives Σ_i w_i (−log L_i) / Σ_i w_i; "visit" gives
        the weighted mean of the per-visit terms over the visits t ≤ T.

    Returns
    -------
    Scalar for "mean"/"sum"; ``[B]`` ("patient") or ``[B, M]`` ("visit") for "none".
    """
    return visit_likelihood(
        logits, event, event_visit, mask, censored_survives_last=censored_survives_last, cause=cause,
        time_weights=time_weights, weight=weight, reduction=reduction, visit_weighting=visit_weighting,
    )


def logistic_hazard_targets(
    bin: torch.Tensor, event: torch.Tensor, mask: torch.Tensor, num_bins: int, *, cause: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked binary-cross-entropy form of the logistic-hazard likelihood.

    Returns ``(targets, at_risk)``, both ``[B, M, L]`` bool: bin l of visit m is at risk for l ≤ min(κ, L − 1)
    and its target is 1 only in bin κ of an event inside the grid. For logits z ``[B, M, L]``,

        F.binary_cross_entropy_with_logits(z, targets.to(z), weight=at_risk.to(z), reduction="none").sum(-1)

    equals the per-visit terms of :func:`logistic_hazard_nll` (with NaN-free logits: the weighted form
    multiplies by the mask and cannot protect against non-finite padding).
    """
    labels = compact_grid_labels(bin, event, mask, num_bins, cause=cause)
    return labels.scatter(labels.targets()), labels.scatter(labels.at_risk())


def logistic_hazard_nll(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    cause: int | None = None,
    bin_weights: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Logistic-hazard (Nnet-survival) negative log-likelihood on a horizon grid ([monograph] eqs. 24–26).

    At visit m the head gives L logits z_l with h_l = σ(z_l) = P(R ∈ bin l | R > τ_l) for the remaining
    time R. With κ = ``bin[b, m]`` and Δ the event indicator, the visit contributes

        −Σ_{l<κ} w_l log(1 − h_l) − Δ w_κ log h_κ − (1 − Δ) w_κ log(1 − h_κ)       (κ < L)
        −Σ_{l<L} w_l log(1 − h_l)                                                    (κ = L)

    A censoring time inside bin κ counts as surviving bin κ (the usual discretisation of
    Nnet-survival and pycox: it slightly overstates exposure when censoring falls early in a bin);
    an event beyond the grid (κ = L) is known only to survive the whole grid. Bin weights w_l
    (``bin_weights [L]``, §A8) default to 1. The per-visit value is the sum over bins; visits are then
    aggregated with ``visit_weighting`` (mean over each patient's visits for "patient").

    Equivalent to a masked BCE-with-logits, see :func:`logistic_hazard_targets`. For K > 1 event types,
    ``cause=k`` gives the cause-specific hazard of k (other types censored).

    Returns a scalar for "mean"/"sum"; ``[B]`` or ``[B, M]`` for "none".
    """
    return grid_likelihood(
        logits, bin, event, mask, cause=cause, bin_weights=bin_weights, weight=weight, reduction=reduction,
        visit_weighting=visit_weighting,
    )
