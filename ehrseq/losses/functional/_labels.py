"""Survival labels of a batch: validation and their Bernoulli layout for the hazard losses.

Labels follow :class:`ehrseq.data.SequenceBatch`: ``event [B]`` (0 = censored, 1..K = event type, or
bool), ``event_visit [B]`` (index of the event/censoring visit), ``bin [B, M]`` (horizon-grid bin κ of
the remaining time: κ = l for τ_l < R ≤ τ_{l+1}, κ = L beyond the last grid point) and ``mask [B, M]``.

A discrete-time hazard likelihood is a sum of Bernoulli log-likelihood terms: one per (visit, time
step) at which the patient is *at risk*, with target 1 where the event happens and 0 where it is
survived. This module turns labels into that layout:

* visit-indexed time (one hazard per visit): at risk at visits t < T and, for events, at T
  (see :func:`visit_layout` for the censored convention);
* horizon grid (L hazards per visit): at risk in bins l ≤ min(κ, L − 1); the target is 1 in bin κ
  for an event inside the grid (a censored time inside bin κ counts as surviving bin κ), see
  :class:`GridLabels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ehrseq.errors import ShapeError
from ehrseq.losses.functional._aggregate import check_floating, check_mask, check_shape, gather_visits

_MAX_SHOWN = 5


def _first_rows(bad: torch.Tensor) -> str:
    """The first few patient (row) indices where ``bad`` ``[B]`` or ``[B, ...]`` is True."""
    rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten()[:_MAX_SHOWN].tolist()
    return ", ".join(str(r) for r in rows)


def check_integer(tensor: torch.Tensor, name: str) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` holds integers (or bools)."""
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise ShapeError(f"{name} must be an integer tensor, got {tensor.dtype}")


def event_indicator(event: torch.Tensor, batch_size: int, cause: int | None = None) -> torch.Tensor:
    """Event indicator Δ ``[B]`` (bool) from event types.

    ``cause=None`` counts any event type as the event; ``cause=k`` selects type k, so that other event
    types are treated as censored (the cause-specific hazard of k).
    """
    check_shape(event, (batch_size,), "event")
    check_integer(event, "event")
    if event.dtype == torch.bool:
        if cause not in (None, 1):
            raise ValueError(f"cause={cause} given but event is a bool tensor (a single event type)")
        return event
    if torch.any(event < 0):
        raise ValueError(
            f"event must be 0 (censored) or an event type 1..K; negative at patients {_first_rows(event < 0)}"
        )
    if cause is None:
        return event > 0
    if cause < 1:
        raise ValueError(f"cause must be an event type >= 1, got {cause}")
    return event == cause


def event_types(event: torch.Tensor, batch_size: int, num_causes: int) -> torch.Tensor:
    """Event types ``[B]`` (int64, 0 = censored) checked to lie in 0..num_causes."""
    check_shape(event, (batch_size,), "event")
    check_integer(event, "event")
    event = event.long()
    bad = (event < 0) | (event > num_causes)
    if torch.any(bad):
        raise ValueError(f"event must lie in 0..{num_causes} (num_causes); violated at patients {_first_rows(bad)}")
    return event


def check_event_visit(event_visit: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Validate ``event_visit [B]`` against ``mask [B, M]``; return it as int64 clamped to ``0..M−1``.

    Every patient with at least one real visit must have ``event_visit`` pointing at a real visit;
    patients without real visits (padding rows) may hold any value.
    """
    batch_size, visits = mask.shape
    check_shape(event_visit, (batch_size,), "event_visit")
    check_integer(event_visit, "event_visit")
    index = event_visit.long()
    inside = (index >= 0) & (index < visits)
    clamped = index.clamp(0, max(visits - 1, 0))
    if visits == 0:
        return clamped
    real = mask.gather(1, clamped.unsqueeze(1)).squeeze(1) & inside
    bad = mask.any(dim=1) & ~real
    if torch.any(bad):
        raise ValueError(
            f"event_visit must index a real visit (mask True) of every patient with visits; violated at "
            f"patients {_first_rows(bad)}"
        )
    return clamped


def check_bins(bins: torch.Tensor, mask: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Validate the grid bins ``bin [B, M]`` (0..L at real visits); return int64 with 0 at padding."""
    check_shape(bins, tuple(mask.shape), "bin")
    check_integer(bins, "bin")
    bins = bins.long()
    bad = mask & ((bins < 0) | (bins > num_bins))
    if torch.any(bad):
        raise ValueError(
            f"bin must lie in 0..{num_bins} (L = number of grid bins; L = beyond the grid) at real visits; "
            f"violated at patients {_first_rows(bad)}"
        )
    return torch.where(mask, bins, torch.zeros_like(bins))


def check_horizon_weights(
    weights: torch.Tensor | Sequence[float] | None, size: int, name: str, like: torch.Tensor
) -> torch.Tensor | None:
    """Validate optional per-position/per-bin weights ``[size]`` (a tensor or a sequence of numbers, e.g.
    from a JSON objective configuration); return them in ``like``'s dtype/device."""
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor):
        weights = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    check_shape(weights, (size,), name)
    weights = weights.to(dtype=like.dtype, device=like.device)
    if not torch.all(torch.isfinite(weights)) or torch.any(weights < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    return weights


def visit_layout(
    mask: torch.Tensor, event_visit: torch.Tensor, delta: torch.Tensor, censored_survives_last: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bernoulli layout of the visit-indexed likelihood, each ``[B, M]`` bool.

    Returns ``(at_risk, target, in_sequence)``: ``at_risk`` marks the log-terms (t < T, and t = T for an
    event or when ``censored_survives_last``), ``target`` the event term (t = T, Δ = 1), and
    ``in_sequence`` the real visits up to T (those that make up the patient's sequence).
    """
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = event_visit.unsqueeze(1)
    at_last = (steps == last) & mask
    in_sequence = (steps <= last) & mask
    last_counts = delta.unsqueeze(1) | censored_survives_last
    at_risk = ((steps < last) & mask) | (at_last & last_counts)
    target = at_last & delta.unsqueeze(1)
    return at_risk, target, in_sequence


@dataclass(frozen=True)
class VisitLabels:
    """Validated labels of a visit-indexed hazard loss in Bernoulli layout (see :func:`visit_layout`)."""

    at_risk: torch.Tensor
    target: torch.Tensor
    in_sequence: torch.Tensor
    time_weights: torch.Tensor | None


def visit_labels(
    logits: torch.Tensor,
    event: torch.Tensor,
    event_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    censored_survives_last: bool = False,
    cause: int | None = None,
    time_weights: torch.Tensor | None = None,
) -> VisitLabels:
    """Check visit-indexed logits ``[B, M]`` and their labels; return the Bernoulli layout."""
    check_floating(logits, "logits")
    check_shape(logits, (None, None), "logits")
    mask = check_mask(mask, logits.shape)
    delta = event_indicator(event, logits.shape[0], cause)
    last = check_event_visit(event_visit, mask)
    time_weights = check_horizon_weights(time_weights, logits.shape[1], "time_weights", logits)
    at_risk, target, in_sequence = visit_layout(mask, last, delta, censored_survives_last)
    return VisitLabels(at_risk, target, in_sequence, time_weights)


@dataclass(frozen=True)
class GridLabels:
    """Validated labels of a grid loss, compacted to the N real visits (``rows``, row-major order).

    ``bins`` κ, ``last_at_risk`` min(κ, L − 1) and ``event_here`` (Δ = 1 and κ < L) are ``[N]``; losses
    gather ``logits`` at ``rows`` (:meth:`gather`, ``[N, L]``) so that padding costs nothing and never reaches a log, and
    :meth:`scatter` puts per-visit results back in ``[B, M]``.
    """

    mask: torch.Tensor
    rows: tuple[torch.Tensor, torch.Tensor]
    bins: torch.Tensor
    last_at_risk: torch.Tensor
    event_here: torch.Tensor
    num_bins: int
    bin_weights: torch.Tensor | None

    def at_risk(self) -> torch.Tensor:
        """``[N, L]``: bins at risk, l ≤ min(κ, L − 1)."""
        return torch.arange(self.num_bins, device=self.bins.device) <= self.last_at_risk.unsqueeze(-1)

    def survived(self) -> torch.Tensor:
        """``[N, L]``: bins survived — those at risk, except the bin of an event inside the grid."""
        last_survived = self.last_at_risk - self.event_here.long()
        return torch.arange(self.num_bins, device=self.bins.device) <= last_survived.unsqueeze(-1)

    def targets(self) -> torch.Tensor:
        """``[N, L]``: True only in bin κ of an event inside the grid."""
        steps = torch.arange(self.num_bins, device=self.bins.device)
        return (steps == self.bins.unsqueeze(-1)) & self.event_here.unsqueeze(-1)

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values [B, M, ...]`` at the real visits: ``[N, ...]`` (row-major, as ``rows``)."""
        return gather_visits(values, self.rows[0] * self.mask.shape[1] + self.rows[1])

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Per-visit values ``[N, ...]`` back to ``[B, M, ...]`` (0 at padding)."""
        dense = values.new_zeros(*self.mask.shape, *values.shape[1:])
        return dense.index_put(self.rows, values)


def grid_labels(
    logits: torch.Tensor,
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    *,
    cause: int | None = None,
    bin_weights: torch.Tensor | None = None,
) -> GridLabels:
    """Check grid logits ``[B, M, L]`` and their labels; return them compacted to the real visits."""
    check_floating(logits, "logits")
    check_shape(logits, (None, None, None), "logits")
    mask = check_mask(mask, logits.shape[:2])
    bin_weights = check_horizon_weights(bin_weights, logits.shape[-1], "bin_weights", logits)
    return compact_grid_labels(bin, event, mask, logits.shape[-1], cause=cause, bin_weights=bin_weights)


def compact_grid_labels(
    bin: torch.Tensor,
    event: torch.Tensor,
    mask: torch.Tensor,
    num_bins: int,
    *,
    cause: int | None = None,
    bin_weights: torch.Tensor | None = None,
) -> GridLabels:
    """Check grid labels (``bin [B, M]`` in 0..L, ``event [B]``, ``mask [B, M]``); compact them to the real visits."""
    mask = check_mask(mask, bin.shape[:2])
    bins = check_bins(bin, mask, num_bins)
    delta = event_indicator(event, mask.shape[0], cause)
    rows = mask.nonzero(as_tuple=True)
    real_bins = bins[rows]
    event_here = delta[rows[0]] & (real_bins < num_bins)
    return GridLabels(mask, rows, real_bins, real_bins.clamp(max=num_bins - 1), event_here, num_bins, bin_weights)
