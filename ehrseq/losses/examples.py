"""Synthetic, reproducible loss inputs for examples, smoke tests and the loss benchmark.

:func:`synthetic_targets` draws a padded batch of visit histories with survival labels in the layout of
:class:`ehrseq.data.SequenceBatch`; :func:`synthetic_logits` draws head outputs. Registered losses build
their ``example_inputs`` from these (see :mod:`ehrseq.losses.registry`).
"""

from __future__ import annotations

import torch

DAYS_PER_YEAR = 365.25


def synthetic_targets(
    batch_size: int,
    visits: int,
    bins: int,
    *,
    num_causes: int = 1,
    event_rate: float = 0.4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Labels of a batch of ``batch_size`` histories with 1..``visits`` visits (the first one has them all).

    Visits are ~90 days apart, the outcome ~1 year after the last visit; the horizon grid has ``bins``
    equal bins up to 3 years. Returns ``mask``, ``time``, ``remaining``, ``bin``, ``event`` (0..K),
    ``event_visit``, ``weight`` and the grid ``cuts [L + 1]``; padded visits hold 0 (``bin`` −1).
    """
    if batch_size < 1 or visits < 1 or bins < 1:
        raise ValueError("batch_size, visits and bins must be >= 1")
    lengths = torch.randint(1, visits + 1, (batch_size,), generator=generator)
    lengths[0] = visits
    steps = torch.arange(visits)
    mask = steps.unsqueeze(0) < lengths.unsqueeze(1)
    gaps = torch.empty(batch_size, visits, dtype=torch.float64).exponential_(1 / 90.0, generator=generator)
    gaps[:, 0] = 0.0
    time = torch.cumsum(gaps, dim=1)
    last = lengths - 1
    last_time = time[torch.arange(batch_size), last]
    follow_up = torch.empty(batch_size, dtype=torch.float64).exponential_(1 / DAYS_PER_YEAR, generator=generator)
    outcome = last_time + follow_up + 1.0
    remaining = outcome.unsqueeze(1) - time
    cuts = torch.linspace(0.0, 3 * DAYS_PER_YEAR, bins + 1, dtype=torch.float64)
    grid_bin = torch.searchsorted(cuts[1:].contiguous(), remaining.contiguous())
    has_event = torch.rand(batch_size, generator=generator) < event_rate
    cause = torch.randint(1, num_causes + 1, (batch_size,), generator=generator)
    weight = 0.5 + 1.5 * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    zero = torch.zeros((), dtype=torch.float64)
    return {
        "mask": mask,
        "time": torch.where(mask, time, zero).to(dtype),
        "remaining": torch.where(mask, remaining, zero).to(dtype),
        "bin": torch.where(mask, grid_bin, torch.full_like(grid_bin, -1)),
        "event": torch.where(has_event, cause, torch.zeros_like(cause)),
        "event_visit": last,
        "weight": weight.to(dtype),
        "cuts": cuts.to(dtype),
    }


def synthetic_logits(
    *shape: int, scale: float = 1.0, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard-normal head outputs times ``scale``, with ``requires_grad`` (leaf tensor)."""
    return (scale * torch.randn(shape, generator=generator, dtype=dtype)).requires_grad_()
