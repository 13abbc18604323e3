"""Maximum likelihood for any per-visit survival distribution, right- or interval-censored (§A15, §A16).

With y the remaining time from a visit, c the censoring flag and T an upper bound of the event time
for censored visits (interval censoring, ``inf`` = none), visit m contributes ([countdown] §2.1)

    −log f(y)                          event observed at y
    −log S(y)                          right-censored at y (T = ∞)
    −log[S(y) − S(T)]                  event known to lie in (y, T]

The censored terms are :meth:`SurvivalDistribution.log_interval_mass` (log S(y) + log(1 − S(T)/S(y))
with a stable log1mexp, never a difference of probabilities; T = ∞ gives log S(y)). The piecewise models of [piecewise] (§A16) are this
same likelihood through :mod:`ehrseq.models.distributions.piecewise`; the competing-risks grid
likelihood (DeepHit) is :func:`ehrseq.losses.functional.pmf_nll`.
"""

from __future__ import annotations

from collections.abc import Callable

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
from ehrseq.losses.functional._labels import event_indicator
from ehrseq.models.distributions.base import LeadingRows, SurvivalDistribution
from ehrseq.models.distributions.grid import sharing_knots


def survival_log_likelihood(
    distribution: SurvivalDistribution,
    y: torch.Tensor,
    observed: torch.Tensor,
    upper: torch.Tensor | None = None,
) -> torch.Tensor:
    """Elementwise log-likelihood: log f(y) if observed, else log S(y) or log[S(y) − S(T)].

    ``y`` (> 0), ``observed`` (bool) and ``upper`` (T > y, ``inf`` = right-censored) have the
    distribution's batch shape; the result too. Inputs are not validated here (see :func:`survival_nll`).
    """
    u = y.unsqueeze(-1)  # one tensor for both calls: a grid family locates it once (within sharing_knots)
    if upper is None:  # families that share work between log f and log S do it in log_likelihood
        return distribution.log_likelihood(u, observed.unsqueeze(-1)).squeeze(-1)
    bound = torch.where(observed, torch.full_like(y, torch.inf), upper)
    log_censored = distribution.log_interval_mass(u, bound.unsqueeze(-1)).squeeze(-1)
    log_f = distribution.log_density(u).squeeze(-1)
    return torch.where(observed, log_f, log_censored)


def check_targets(
    distribution: SurvivalDistribution,
    remaining: torch.Tensor,
    mask: torch.Tensor,
    upper: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate per-visit targets against a ``[B, M]`` distribution.

    Returns the mask as bool, the flat indices b·M + m of the N real visits ``[N]`` (row-major) and the
    targets there: ``remaining [N]`` and ``upper [N]`` (``None`` if not given).
    """
    shape = tuple(distribution.batch_shape)
    if len(shape) != 2:
        raise ShapeError(f"per-visit losses need a distribution of batch shape [B, M], got {list(shape)}")
    mask = check_mask(mask, shape)
    check_floating(remaining, "remaining")
    if tuple(remaining.shape) != shape:
        raise ShapeError(f"remaining must have shape {list(shape)}, got {list(remaining.shape)}")
    rows = mask.flatten().nonzero().squeeze(1).to(remaining.device)
    real = gather_visits(remaining, rows)
    if not bool(torch.all(torch.isfinite(real) & (real > 0))):
        raise ValueError("remaining times must be finite and > 0 at every real visit")
    bound = None
    if upper is not None:
        check_floating(upper, "upper")
        if tuple(upper.shape) != shape:
            raise ShapeError(f"upper must have shape {list(shape)}, got {list(upper.shape)}")
        bound = gather_visits(upper, rows)
        if torch.any((bound <= real) | torch.isnan(bound)):
            raise ValueError("upper (interval bound) must be > remaining (or inf) at every real visit")
    return mask, rows, real, bound


Score = Callable[[SurvivalDistribution, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def per_visit_score(
    score: Score,
    distribution: SurvivalDistribution,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    upper: torch.Tensor | None,
    cause: int | None,
    weight: torch.Tensor | None,
    reduction: Reduction,
    visit_weighting: VisitWeighting,
) -> torch.Tensor:
    """Validate the targets, score the real visits only and aggregate.

    ``score(distribution, y, observed, upper)`` returns the per-element loss of a distribution of batch
    shape ``[N]`` (the N real visits, in row-major order of ``mask``); ``event`` ``[B]`` (0 = censored,
    1..K or bool; ``cause`` selects one type) is broadcast over visits. Padded visits are never
    evaluated: their parameters may hold anything (NaN included) and get exactly zero gradients.
    """
    check_reduction(reduction, visit_weighting)
    mask, rows, y, bound = check_targets(distribution, remaining, mask, upper)
    observed = gather_visits(event_indicator(event, mask.shape[0], cause).unsqueeze(1).expand_as(mask), rows)
    real = distribution[LeadingRows(rows, mask.shape)]  # the rows found by check_targets
    with sharing_knots(real):
        scores = score(real, y, observed, bound)
    per_visit = scores.new_zeros(mask.numel()).index_copy(0, rows, scores).view(mask.shape)
    return aggregate_visits(per_visit, mask, weight=weight, reduction=reduction, visit_weighting=visit_weighting)


def _negative_log_likelihood(
    distribution: SurvivalDistribution, y: torch.Tensor, observed: torch.Tensor, upper: torch.Tensor | None
) -> torch.Tensor:
    return -survival_log_likelihood(distribution, y, observed, upper)


def survival_nll(
    distribution: SurvivalDistribution,
    remaining: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    upper: torch.Tensor | None = None,
    cause: int | None = None,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
) -> torch.Tensor:
    """Per-visit negative log-likelihood of the remaining time, right- or interval-censored (§A15).

    Parameters
    ----------
    distribution: batch ``[B, M]``
        Any :class:`~ehrseq.models.distributions.SurvivalDistribution` (log-normal, Weibull, mixtures,
        grid and piecewise families, ...). Parameters at padded visits may hold anything, NaN included.
    remaining: ``[B, M]``
        y = remaining time (days) from each visit to the event or censoring, > 0 at real visits.
    event: ``[B]``
        0 = censored, 1..K = event type (or bool), broadcast over the patient's visits. ``cause=k``
        takes type k as the event and the other types as censoring (a cause-specific likelihood).
    mask: ``[B, M]``
        True at real visits.
    upper: ``[B, M]``, optional
        Interval bound T of a censored visit (the event lies in (y, T]); ``inf`` = right-censored.
    weight, reduction, visit_weighting:
        Per-patient sample weights and aggregation, see :mod:`ehrseq.losses.functional._aggregate`.
    """
    return per_visit_score(
        _negative_log_likelihood, distribution, remaining, event, mask, upper=upper, cause=cause, weight=weight,
        reduction=reduction, visit_weighting=visit_weighting,
    )
