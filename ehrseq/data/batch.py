"""`SequenceBatch`: a padded mini-batch of patient visit histories and their per-visit targets.

Shapes use B = patients in the batch, M = longest history in the batch (dynamic padding),
F = numeric features, C = categorical features, K = most codes at one visit, E = events of a
multi-event outcome table. Padded visits have ``mask == False`` and must never contribute to a loss
or a prediction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

import torch

from ehrseq.errors import ShapeError

#: Index reserved for padding in ``categorical`` and ``codes``.
PAD_INDEX = 0
#: Index of the unknown bucket (a level or code not seen when the vocabulary was fitted).
UNKNOWN_INDEX = 1


def reached_entry(at: torch.Tensor, entry: torch.Tensor) -> torch.Tensor:
    """Whether prediction times ``at`` are at or after the patients' risk-set ``entry`` (broadcast shapes), with
    float32 rounding allowed: at ≥ entry − 10⁻⁶ · max(|entry|, 1). The one rule of left truncation, read by
    :attr:`SequenceBatch.targets` (which targets the losses read) and by anything that scores targets likewise."""
    return at >= entry - 1e-6 * entry.abs().clamp_min(1.0)


@dataclass
class SequenceBatch:
    """A batch of visit sequences with optional survival targets.

    Inputs
    ------
    numeric: ``[B, M, F]`` float32
        Standardized numeric features; missing values are filled (0 or last observation carried
        forward, see the feature pipeline) and flagged in ``numeric_missing``.
    numeric_missing: ``[B, M, F]`` bool
        True where the raw value was missing at that visit.
    categorical: ``[B, M, C]`` int64
        Vocabulary indices; :data:`PAD_INDEX` for padding, :data:`UNKNOWN_INDEX` for unseen levels.
    codes: ``[B, M, K]`` int64
        Codes recorded at each visit as vocabulary indices, right-padded with :data:`PAD_INDEX`.
    time: ``[B, M]`` float32
        Visit time in days since the patient's origin (v_m − origin).
    gap: ``[B, M]`` float32
        Days since the previous visit (v_m − v_{m−1}); 0 at the first visit.
    mask: ``[B, M]`` bool
        True for real visits. Real visits are left-aligned: ``mask[b, :n_b]`` is True.
    patient_index: ``[B]`` int64
        Row of each patient in the cohort's patient table (maps back to ``patient_id``).

    Targets (``None`` when the batch is unlabelled, e.g. when scoring)
    -------------------------------------------------------------------
    remaining: ``[B, M]`` float32
        Remaining time R_m = Y − v_m in days (event or censoring), > 0 at every real visit.
    event: ``[B]`` int64
        0 = censored, 1..K = event type (K = 1 for single-event data).
    event_visit: ``[B]`` int64
        Index of the last real visit (``n_b − 1``): the visit at which the event or censoring is
        recorded in the visit-indexed discrete-time format.
    bin: ``[B, M]`` int64
        Horizon-grid bin of ``remaining`` (κ(R_m), see :class:`ehrseq.data.TimeGrid`); −1 where no
        grid was given or at padding.
    upper: ``[B, M]`` float32
        Upper bound of the remaining time for interval censoring (event in (R_m, upper]); ``inf``
        where there is none.
    weight: ``[B]`` float32
        Per-patient sample weight (1 by default).
    elapsed: ``[B, M]`` float32 or None
        Days from visit m to the prediction time whose remaining time ``remaining`` measures (training
        samples them, :func:`ehrseq.data.sample_prediction_times`); ``None`` means 0: predictions at the
        visits. Read by models with an elapsed-time input only.
    entry: ``[B]`` float32 or None
        Left-truncation (risk-set entry) time in days since origin; ``None`` when not given. The patient is
        known to survive to it, so a target whose prediction time is before it is no observation of the
        remaining time (:attr:`targets` leaves it out).
    dropped: ``[B, M]`` bool or None
        Visits whose sampled prediction time fell at or after the outcome
        (:func:`~ehrseq.data.sample_prediction_times` with a horizon): no target this time (:attr:`targets`
        leaves them out); ``None`` when no time was sampled so.
    event_times: ``[B, E]`` float32 or None
        Multi-event data: time of each event (or censoring) in days since origin.
    event_flags: ``[B, E]`` bool or None
        Multi-event data: True where the event was observed at ``event_times``.
    event_at_risk: ``[B, E]`` bool or None
        Multi-event data: False where the patient is not at risk for the event (no row in the
        multi-event table, e.g. prevalent at entry); ``event_times`` and ``event_flags`` hold 0 and
        False there and must be ignored.
    """

    numeric: torch.Tensor
    numeric_missing: torch.Tensor
    categorical: torch.Tensor
    codes: torch.Tensor
    time: torch.Tensor
    gap: torch.Tensor
    mask: torch.Tensor
    patient_index: torch.Tensor
    remaining: torch.Tensor | None = None
    event: torch.Tensor | None = None
    event_visit: torch.Tensor | None = None
    bin: torch.Tensor | None = None
    upper: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    elapsed: torch.Tensor | None = None
    entry: torch.Tensor | None = None
    dropped: torch.Tensor | None = None
    event_times: torch.Tensor | None = None
    event_flags: torch.Tensor | None = None
    event_at_risk: torch.Tensor | None = None

    # ------------------------------------------------------------------ structure
    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def max_visits(self) -> int:
        return int(self.mask.shape[1])

    @property
    def lengths(self) -> torch.Tensor:
        """Number of real visits per patient, ``[B]`` int64."""
        return self.mask.sum(dim=1)

    @property
    def targets(self) -> torch.Tensor:
        """``[B, M]`` bool: the real visits whose survival target the losses read — those not ``dropped``
        whose prediction time v_m + e_m (``time`` + ``elapsed``) is at or after the patient's ``entry`` (all
        such visits without ``entry``). Before entry the patient is not yet at risk: survival to entry is guaranteed
        (the patient was selected for having reached it), so R_m would count immortal time. Such visits
        stay in the history the encoder reads; with prediction times sampled after the visits
        (:func:`~ehrseq.data.sample_prediction_times`) their targets move to entry or later instead. The
        comparison allows float32 rounding (10⁻⁶ of the entry time, at least 10⁻⁶ days)."""
        mask = self.mask if self.dropped is None else self.mask & ~self.dropped
        if self.entry is None:
            return mask
        at = self.time if self.elapsed is None else self.time + self.elapsed
        return mask & reached_entry(at, self.entry.unsqueeze(1))

    @property
    def has_targets(self) -> bool:
        return self.remaining is not None and self.event is not None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The non-``None`` fields by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def replace(self, **changes: Any) -> SequenceBatch:
        """A copy with some fields replaced (tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ devices
    def to(self, device: torch.device | str, non_blocking: bool = False) -> SequenceBatch:
        """Move every tensor to ``device``."""
        moved = {name: t.to(device, non_blocking=non_blocking) for name, t in self.tensors().items()}
        return dataclasses.replace(self, **moved)

    def pin_memory(self) -> SequenceBatch:
        """Page-lock every tensor (faster host → GPU copies); called by ``DataLoader(pin_memory=True)``."""
        return dataclasses.replace(self, **{name: t.pin_memory() for name, t in self.tensors().items()})

    @property
    def device(self) -> torch.device:
        return self.mask.device

    # ------------------------------------------------------------------ checks
    def validate(self) -> SequenceBatch:
        """Check that every field has the documented shape and dtype; return ``self``.

        Raises :class:`ehrseq.errors.ShapeError` naming the first inconsistent field.
        """
        b, m = self.mask.shape if self.mask.dim() == 2 else (-1, -1)
        if self.mask.dim() != 2 or self.mask.dtype != torch.bool:
            raise ShapeError(f"mask must be a [B, M] bool tensor, got {tuple(self.mask.shape)} {self.mask.dtype}")
        expected: dict[str, tuple[tuple[int | None, ...], tuple[torch.dtype, ...]]] = {
            "numeric": ((b, m, None), (torch.float32, torch.float64, torch.float16, torch.bfloat16)),
            "numeric_missing": ((b, m, None), (torch.bool,)),
            "categorical": ((b, m, None), (torch.int64,)),
            "codes": ((b, m, None), (torch.int64,)),
            "time": ((b, m), (torch.float32, torch.float64)),
            "gap": ((b, m), (torch.float32, torch.float64)),
            "patient_index": ((b,), (torch.int64,)),
            "remaining": ((b, m), (torch.float32, torch.float64)),
            "event": ((b,), (torch.int64,)),
            "event_visit": ((b,), (torch.int64,)),
            "bin": ((b, m), (torch.int64,)),
            "upper": ((b, m), (torch.float32, torch.float64)),
            "weight": ((b,), (torch.float32, torch.float64)),
            "elapsed": ((b, m), (torch.float32, torch.float64)),
            "entry": ((b,), (torch.float32, torch.float64)),
            "dropped": ((b, m), (torch.bool,)),
            "event_times": ((b, None), (torch.float32, torch.float64)),
            "event_flags": ((b, None), (torch.bool,)),
            "event_at_risk": ((b, None), (torch.bool,)),
        }
        for name, (shape, dtypes) in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            ok_shape = value.dim() == len(shape) and all(
                want is None or have == want for have, want in zip(value.shape, shape)
            )
            if not ok_shape or value.dtype not in dtypes:
                want_shape = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
                raise ShapeError(
                    f"SequenceBatch.{name} must have shape {want_shape} and dtype in "
                    f"{[str(d) for d in dtypes]}, got {list(value.shape)} {value.dtype}"
                )
        if self.numeric.shape != self.numeric_missing.shape:
            raise ShapeError("SequenceBatch.numeric and numeric_missing must have the same shape")
        if (self.event_times is None) != (self.event_flags is None) or (
            self.event_times is not None and self.event_times.shape != self.event_flags.shape
        ):
            raise ShapeError("SequenceBatch.event_times and event_flags must both be given with the same shape")
        if self.event_at_risk is not None and (
            self.event_times is None or self.event_at_risk.shape != self.event_times.shape
        ):
            raise ShapeError("SequenceBatch.event_at_risk must have the shape of event_times")
        return self
