"""MENSA's multi-event likelihood with trajectories, per visit (§A17; [MENSA] §4.3–4.4).

Non-exclusive events e = 1..E, each with its own marginal distribution (typically a Weibull mixture)
and, per patient, a time t_e (days since origin; event or censoring) with flag δ_e. At visit m
(time v_m) the remaining time to event e is R_e = t_e − v_m; a visit contributes to event e only while
that event is ahead of it (R_e > 0) and the patient is at risk for it (t_e not NaN):

    ℓ_m = −Σ_e [δ_e log f_e(R_e) + (1 − δ_e) log S_e(R_e)]                      ([MENSA] eq. 7)
          − γ Σ_{(A,B) ∈ 𝒯} δ_A δ_B log S_B(R_A)    for visits before both t_A and t_B   (eq. 8)
          − [δ_0 log f_0(R_0) + (1 − δ_0) log S_0(R_0)]   optional event-free state

𝒯 holds the declared orderings "A occurs before B": when both are observed, the prediction for B
should give a high probability of B not having happened yet at the time of A. γ
(``trajectory_weight``) is 1 in [MENSA]. The paper sums probabilities S_B(t_A) in eq. 8 while writing
the rest in log space; we use the log, as the rest of the likelihood.

Event-free state ([MENSA] §4.1, optional): a further distribution f_0, S_0 for leaving the event-free
state, with t_0 = the first observed event time and δ_0 = 0 when some event is observed, else
t_0 = the last censoring time and δ_0 = 1 — exactly as the paper encodes it (the "event" of state 0 is
observed when the patient stays event-free through follow-up). Events whose time is NaN are ignored.

Visits that contribute to no term are left out of the aggregation (they are not at risk for anything).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ehrseq.errors import ShapeError
from ehrseq.losses.functional._aggregate import (
    Reduction,
    VisitWeighting,
    aggregate_visits,
    check_floating,
    check_mask,
    check_reduction,
    gather_visits,
)
from ehrseq.models.distributions.base import LeadingRows, SurvivalDistribution
from ehrseq.models.distributions.multievent import MultiEvent

Trajectory = tuple[str | int, str | int]


def _check_inputs(
    distribution: MultiEvent, event_times: torch.Tensor, event_flags: torch.Tensor, time: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    shape = tuple(distribution.batch_shape)
    if len(shape) != 2:
        raise ShapeError(f"MENSA needs marginals of batch shape [B, M], got {list(shape)}")
    mask = check_mask(mask, shape)
    check_floating(time, "time")
    check_floating(event_times, "event_times")
    events = (shape[0], distribution.num_events)
    if tuple(time.shape) != shape:
        raise ShapeError(f"time must have shape {list(shape)}, got {list(time.shape)}")
    if tuple(event_times.shape) != events or tuple(event_flags.shape) != events:
        raise ShapeError(
            f"event_times and event_flags must have shape {list(events)} (one column per event), got "
            f"{list(event_times.shape)} and {list(event_flags.shape)}"
        )
    if event_flags.dtype != torch.bool:
        raise ShapeError(f"event_flags must be a bool tensor, got {event_flags.dtype}")
    if not bool(torch.isfinite(torch.where(mask, time, 0.0)).all()):
        raise ValueError("visit times must be finite at every real visit")
    if torch.any(event_flags & ~torch.isfinite(event_times)):
        raise ValueError("an observed event (event_flags True) needs a finite event time")
    return mask


def _event_free_target(event_times: torch.Tensor, event_flags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_0 ``[B]``, δ_0 ``[B]``) of the event-free state; t_0 is NaN when every event time is NaN."""
    known = torch.isfinite(event_times)
    observed = event_flags & known
    first_event = torch.where(observed, event_times, torch.full_like(event_times, torch.inf)).amin(dim=1)
    last_censoring = torch.where(known & ~observed, event_times, torch.full_like(event_times, -torch.inf)).amax(dim=1)
    any_event = observed.any(dim=1)
    start = torch.where(any_event, first_event, last_censoring)
    return torch.where(torch.isfinite(start), start, torch.full_like(start, torch.nan)), ~any_event


def mensa_loss(
    distribution: MultiEvent,
    event_times: torch.Tensor,
    event_flags: torch.Tensor,
    time: torch.Tensor,
    mask: torch.Tensor,
    *,
    trajectories: Sequence[Trajectory] = (),
    trajectory_weight: float = 1.0,
    event_free: SurvivalDistribution | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Per-visit MENSA negative log-likelihood (module doc for the formula).

    The marginals are evaluated at the real visits only; Weibull-mixture marginals as a ``multi_event`` head gives
    them (:class:`~ehrseq.models.distributions.mixture.PackedWeibullMixture`) are read there in place on CPU by the
    native kernel (:meth:`~ehrseq.models.distributions.multievent.MultiEvent.selected_log_likelihood`).

    Parameters
    ----------
    distribution: :class:`MultiEvent` with E marginals of batch ``[B, M]``
        Per-visit predictions for every event (parameters at padded visits may hold anything).
    event_times: ``[B, E]``
        Time of each event or its censoring, in days since the patient's origin; NaN where the patient
        is not at risk for that event.
    event_flags: ``[B, E]`` bool
        True where the event was observed at ``event_times``.
    time: ``[B, M]``
        Visit times (days since origin); ``mask [B, M]`` marks real visits.
    trajectories:
        Ordered pairs (A, B), by event name or position: "A occurs before B".
    trajectory_weight:
        γ ≥ 0, the weight of the trajectory term.
    event_free: batch ``[B, M]``, optional
        Distribution of the time to leaving the event-free state; adds its term.
    weight, reduction, visit_weighting:
        See :mod:`ehrseq.losses.functional._aggregate`.
    """
    check_reduction(reduction, visit_weighting)
    if not trajectory_weight >= 0:
        raise ValueError(f"trajectory_weight must be >= 0, got {trajectory_weight}")
    mask = _check_inputs(distribution, event_times, event_flags, time, mask)
    pairs = [(distribution.index(a), distribution.index(b)) for a, b in trajectories]
    if any(a == b for a, b in pairs):
        raise ValueError("a trajectory must order two different events")

    # the N real visits only (row-major order of the mask, found once): padded parameters are never evaluated
    real = LeadingRows.of(mask)
    patient = real.rows.div(mask.shape[1], rounding_mode="floor")  # [N], the patient of each real visit
    visit_time = gather_visits(time, real.rows)
    remaining = event_times.index_select(0, patient) - visit_time.unsqueeze(1)  # [N, E]; NaN where not at risk
    at_risk = remaining > 0
    safe = torch.where(at_risk, remaining, torch.ones_like(remaining))

    flags = event_flags.index_select(0, patient)
    # [N, E]; the marginals' parameters of the real visits read in place where the family can (a Weibull mixture's
    # packed rows on CPU, by the native kernel)
    own = distribution.selected_log_likelihood(real, safe.unsqueeze(-1), flags.unsqueeze(-1)).squeeze(-1)
    per_visit = -torch.where(at_risk, own, 0.0).sum(dim=-1)
    contributes = at_risk.any(dim=-1)

    dist = distribution.select(real) if pairs else None
    for a, b in pairs:
        both = flags[:, a] & flags[:, b] & at_risk[:, a] & at_risk[:, b]
        term = dist[b].log_survival(safe[:, a : a + 1]).squeeze(-1)  # log S_B(R_A), [N]
        per_visit = per_visit - trajectory_weight * torch.where(both, term, 0.0)

    if event_free is not None:
        if tuple(event_free.batch_shape) != tuple(mask.shape):
            raise ShapeError(f"event_free must have batch shape {list(mask.shape)}, got {list(event_free.batch_shape)}")
        start, stayed = _event_free_target(event_times, event_flags)
        free_remaining = start[patient] - visit_time
        free_at_risk = free_remaining > 0
        free_safe = torch.where(free_at_risk, free_remaining, torch.ones_like(free_remaining)).unsqueeze(-1)
        term = event_free[real].log_likelihood(free_safe, stayed[patient].unsqueeze(-1)).squeeze(-1)
        per_visit = per_visit - torch.where(free_at_risk, term, 0.0)
        contributes = contributes | free_at_risk

    return aggregate_visits(
        per_visit.new_zeros(mask.shape).masked_scatter(mask, per_visit),
        torch.zeros_like(mask).masked_scatter(mask, contributes),
        weight=weight, reduction=reduction, visit_weighting=visit_weighting,
    )
