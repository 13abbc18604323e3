"""Device selection: CUDA when present, otherwise CPU."""

from __future__ import annotations

import torch


def select_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Return the device to compute on.

    ``"auto"`` (or ``None``) picks ``cuda`` when a GPU is available and ``cpu`` otherwise; any other
    value is passed to :class:`torch.device` (``"cpu"``, ``"cuda:1"``, ...). Asking for CUDA on a
    machine without it raises a :class:`RuntimeError` instead of failing later inside a kernel.
    """
    if preference is None or preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available on this machine")
    return device
