"""The landmark encoder: no sequence model — the state at visit m is visit m's embedding alone.

``contextualize(visits, mask) = visits``: causal trivially. The history reaches the state only through
what the visit itself carries (numeric values carried forward, their missingness, the time since each
was measured, visit time and gap), which is what a landmark model uses. With ``hidden=()`` and the
linear path (``wide=True``) the model is linear in the current visit's inputs — the landmark linear
model fitted jointly over all prediction times — so :func:`ehrseq.tune` can weigh it against the
sequence encoders on the user's own data.
"""

from __future__ import annotations

import torch

from ehrseq.models.encoders.base import SequenceEncoder


class LandmarkEncoder(SequenceEncoder):
    """Visit embedding only (``kind="landmark"``): states ``[B, M, d_model]`` = the embedded visits."""

    def contextualize(self, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return visits
