"""Masking, weighting and reduction shared by every loss of the catalogue.

Per-visit losses produce a term ℓ_{b,m} for each visit m of patient b (zero or any finite value at
padding). They are aggregated with an explicit ``visit_weighting``:

* ``"patient"`` (default) — each patient weighs 1: L_b = (1/n_b) Σ_m ℓ_{b,m} over its n_b real visits
  (or Σ_m ℓ_{b,m} with ``within_patient="sum"``, used by sequence likelihoods such as the visit-indexed
  NLL whose per-patient value is one log-likelihood), then
  ``mean`` = Σ_b w_b L_b / Σ_b w_b over patients with at least one real visit, ``sum`` = Σ_b w_b L_b,
  ``none`` = w_b L_b, shape ``[B]``;
* ``"visit"`` — each real visit weighs 1 (as in Countdown Regression):
  ``mean`` = Σ_{b,m} w_b ℓ_{b,m} / Σ_{b,m} w_b over real visits, ``sum`` = Σ_{b,m} w_b ℓ_{b,m},
  ``none`` = w_b ℓ_{b,m}, shape ``[B, M]`` (0 at padding).

``w_b`` is an optional per-patient sample weight ``[B]`` (1 when ``None``); as in ``torch.nn`` losses,
``reduction="none"`` returns the weighted terms. A batch with no real
visit gives a loss of 0 that still depends on the inputs (so ``backward`` works and gives zeros).
"""

from __future__ import annotations

from typing import Literal

import torch

from ehrseq.errors import ShapeError

Reduction = Literal["mean", "sum", "none"]
VisitWeighting = Literal["patient", "visit"]
WithinPatient = Literal["mean", "sum"]

_REDUCTIONS = ("mean", "sum", "none")
_VISIT_WEIGHTINGS = ("patient", "visit")


def check_reduction(reduction: str, visit_weighting: str | None = None) -> None:
    """Raise ``ValueError`` for an unknown ``reduction`` or ``visit_weighting``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if visit_weighting is not None and visit_weighting not in _VISIT_WEIGHTINGS:
        raise ValueError(f"visit_weighting must be one of {_VISIT_WEIGHTINGS}, got {visit_weighting!r}")


def check_mask(mask: torch.Tensor, shape: torch.Size | tuple[int, ...], name: str = "mask") -> torch.Tensor:
    """Validate a ``[B, M]`` visit mask against the leading shape of the predictions; return it as bool."""
    if tuple(mask.shape) != tuple(shape):
        raise ShapeError(f"{name} must have shape {list(shape)}, got {list(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
            return mask != 0
        raise ShapeError(f"{name} must be a bool (or 0/1) tensor, got {mask.dtype}")
    return mask


def check_shape(tensor: torch.Tensor, shape: tuple[int | None, ...], name: str) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has ``shape`` (``None`` = any size)."""
    ok = tensor.dim() == len(shape) and all(w is None or h == w for h, w in zip(tensor.shape, shape))
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ShapeError(f"{name} must have shape {want}, got {list(tensor.shape)}")


def check_floating(tensor: torch.Tensor, name: str) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` is floating point (logits / parameters)."""
    if not tensor.dtype.is_floating_point:
        raise ShapeError(f"{name} must be a floating-point tensor of logits/parameters, got {tensor.dtype}")


def patient_weights(weight: torch.Tensor | None, batch_size: int, like: torch.Tensor) -> torch.Tensor:
    """Per-patient weights ``[B]`` in the dtype/device of ``like`` (ones when ``weight`` is None)."""
    if weight is None:
        return torch.ones(batch_size, dtype=like.dtype, device=like.device)
    check_shape(weight, (batch_size,), "weight")
    if torch.any(weight < 0):
        raise ValueError("sample weights must be non-negative")
    return weight.to(dtype=like.dtype, device=like.device)


def gather_visits(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``values [B, M, ...]`` at flat visit rows b·M + m (``rows [N]``, int64): ``[N, ...]``.

    An ``index_select`` on the ``[B·M, ...]`` view, whose gradient is one ``index_add`` (advanced indexing
    ``values[b, m]`` accumulates its gradient through the slower ``index_put``).
    """
    return values.flatten(0, 1).index_select(0, rows)


def aggregate_visits(
    per_visit: torch.Tensor,
    mask: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    visit_weighting: VisitWeighting = "patient",
    within_patient: WithinPatient = "mean",
) -> torch.Tensor:
    """Aggregate per-visit loss terms ``[B, M]`` as described in the module docstring."""
    check_reduction(reduction, visit_weighting)
    mask = check_mask(mask, per_visit.shape[:2])
    if per_visit.dim() != 2:
        raise ShapeError(f"per-visit loss terms must be [B, M], got {list(per_visit.shape)}")
    w = patient_weights(weight, per_visit.shape[0], per_visit)
    terms = torch.where(mask, per_visit, torch.zeros_like(per_visit))
    if visit_weighting == "visit":
        weighted = terms * w.unsqueeze(1)
        if reduction == "none":
            return weighted
        if reduction == "sum":
            return weighted.sum()
        denominator = (mask.to(per_visit.dtype) * w.unsqueeze(1)).sum()
        return weighted.sum() / denominator.clamp_min(torch.finfo(per_visit.dtype).tiny)
    counts = mask.sum(dim=1)
    per_patient = terms.sum(dim=1)
    if within_patient == "mean":
        per_patient = per_patient / counts.clamp_min(1).to(per_visit.dtype)
    return aggregate_patients(per_patient, weight=weight, reduction=reduction, present=counts > 0)


def aggregate_patients(
    per_patient: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted reduction of per-patient losses ``[B]``.

    ``present`` ``[B]`` bool marks patients that count in the mean's denominator (patients without any
    real visit contribute neither to the numerator nor to the denominator).
    """
    check_reduction(reduction)
    if per_patient.dim() != 1:
        raise ShapeError(f"per-patient losses must be [B], got {list(per_patient.shape)}")
    w = patient_weights(weight, per_patient.shape[0], per_patient)
    if present is not None:
        w = w * present.to(per_patient.dtype)
        per_patient = torch.where(present, per_patient, torch.zeros_like(per_patient))
    if reduction == "none":
        return w * per_patient
    weighted = (w * per_patient).sum()
    if reduction == "sum":
        return weighted
    return weighted / w.sum().clamp_min(torch.finfo(per_patient.dtype).tiny)
