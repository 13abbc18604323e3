"""Synthetic, reproducible model outputs and batches for the loss benchmark (and the loss tests).

:func:`synthetic_targets` draws a padded batch of visit histories with survival labels in the layout
of :class:`ehrseq.data.SequenceBatch`; :func:`synthetic_logits` draws head outputs;
:func:`synthetic_step` puts both together as what a loss term receives — a
:class:`~ehrseq.models.model.ModelOutput` of a head of any registered family, and the batch.
"""

from __future__ import annotations

import math

import torch

from ehrseq.data.batch import SequenceBatch
from ehrseq.models.heads import HeadConfig, SurvivalHead
from ehrseq.models.model import ModelOutput

DAYS_PER_YEAR = 365.25
#: the state width, numeric features, code vocabulary and multi-event events of :func:`synthetic_step`
STATE_DIM, FEATURES, VOCABULARY, EVENTS = 64, 16, 64, 3
#: the spread of the raw outputs of a parametric head (log-location offsets, log-scales, log-shapes): at
#: ±4 sd a log-normal σ or a Weibull 1/k of e^{±1.2}, as fitted heads give; standard-normal outputs
#: would give σ up to e^4 ≈ 55, whose Survival-CRPS (≈ e^{σ²}) overflows float32 and times an inf
PARAMETRIC_SPREAD = 0.3


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


def synthetic_step(kind: str, batch_size: int, visits: int, bins: int, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[SurvivalHead, SequenceBatch, dict[str, torch.Tensor]]:
    """A head of family ``kind`` on the synthetic grid of ``bins`` bins, a labelled batch (two causes for
    a competing-risks head, one otherwise; :data:`EVENTS` non-exclusive events with times after the
    last visit) and the leaf tensors of a
    model output: ``raw`` ``[B, M, P]`` (standard normal; :data:`PARAMETRIC_SPREAD` times it for a
    parametric head), ``states`` ``[B, M, D]``, ``next_numeric`` and
    ``next_code_logits`` — pass them to :func:`model_output` to build the output inside a timed step."""
    cuts = torch.linspace(0.0, 3 * DAYS_PER_YEAR, bins + 1, dtype=torch.float64)
    config = HeadConfig(kind=kind, grid=tuple(cuts.tolist()), num_causes=2, time_scale=DAYS_PER_YEAR,
                        event_names=tuple(f"event_{e}" for e in range(EVENTS)))
    labels = synthetic_targets(batch_size, visits, bins, num_causes=config.family.num_causes(config),
                               generator=generator, dtype=dtype)
    mask = labels["mask"]
    last_time = labels["time"].amax(dim=1, keepdim=True)
    spread = torch.empty(batch_size, EVENTS, dtype=dtype).exponential_(1 / DAYS_PER_YEAR, generator=generator)
    batch = SequenceBatch(
        numeric=torch.randn(batch_size, visits, FEATURES, generator=generator, dtype=dtype),
        numeric_missing=torch.rand(batch_size, visits, FEATURES, generator=generator) < 0.3,
        categorical=torch.zeros(batch_size, visits, 0, dtype=torch.long),
        codes=torch.randint(0, VOCABULARY, (batch_size, visits, 4), generator=generator) * mask.unsqueeze(-1),
        time=labels["time"], gap=torch.diff(labels["time"], prepend=labels["time"][:, :1]), mask=mask,
        patient_index=torch.arange(batch_size), remaining=labels["remaining"], event=labels["event"],
        event_visit=labels["event_visit"], bin=labels["bin"], upper=torch.full_like(labels["remaining"], math.inf),
        weight=labels["weight"], event_times=last_time + 1.0 + spread.cumsum(dim=1),
        event_flags=torch.rand(batch_size, EVENTS, generator=generator) < 0.5,
    )
    leaves = {
        "raw": synthetic_logits(batch_size, visits, config.num_outputs, generator=generator, dtype=dtype,
                                scale=1.0 if config.family.grid or not config.family.in_days else PARAMETRIC_SPREAD),
        "states": synthetic_logits(batch_size, visits, STATE_DIM, generator=generator, dtype=dtype),
        "next_numeric": synthetic_logits(batch_size, visits, FEATURES, generator=generator, dtype=dtype),
        "next_code_logits": synthetic_logits(batch_size, visits, VOCABULARY, generator=generator, dtype=dtype),
    }
    return SurvivalHead(config, STATE_DIM).to(dtype), batch, leaves


def model_output(head: SurvivalHead, leaves: dict[str, torch.Tensor]) -> ModelOutput:
    """The :class:`ModelOutput` of leaf tensors from :func:`synthetic_step` (its distribution is built
    from ``raw`` on first use, as in training)."""
    return ModelOutput(states=leaves["states"], raw=leaves["raw"], head=head,
                       next_numeric=leaves["next_numeric"], next_code_logits=leaves["next_code_logits"])
