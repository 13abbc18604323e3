"""Recurrent encoders: unidirectional GRU or LSTM over the embedded visits.

A unidirectional recurrence is causal by construction (h_m = cell(h_{m−1}, e_m)), and because real
visits are left-aligned, the padding that follows them can never reach a real visit's state. The
recurrence therefore runs over the padded batch as it is: no packing, no sort, no host
synchronisation for the lengths. (Packing with ``pack_padded_sequence(enforce_sorted=False)`` gives
the same real-visit states but was slower on CPU even with half of the batch padded, and length
bucketing keeps padding small anyway.) States at padded visits are finite and meaningless.
Bidirectional recurrences are refused by the configuration (they would let visit m see later visits).

Under CPU autocast the recurrence runs in the weights' dtype: oneDNN has no bfloat16 LSTM primitive
on most x86 CPUs (``nn.LSTM`` fails there with "could not create a primitive descriptor"), and the
CPU GRU is not autocast anyway. On CUDA, autocast applies as usual (cuDNN in float16/bfloat16).
"""

from __future__ import annotations

import torch
from torch import nn

from ehrseq.errors import ConfigError
from ehrseq.models.encoders.base import SequenceEncoder
from ehrseq.models.encoders.config import EncoderConfig

_CELLS: dict[str, type[nn.RNNBase]] = {"gru": nn.GRU, "lstm": nn.LSTM}


class RecurrentEncoder(SequenceEncoder):
    """Visit embedding → ``n_layers`` stacked GRU or LSTM layers of width ``d_model`` (``config.kind``).

    ``dropout`` is applied to the visit embedding and between recurrent layers.
    """

    def __init__(self, config: EncoderConfig) -> None:
        if config.kind not in _CELLS:
            raise ConfigError(f"RecurrentEncoder needs kind in {sorted(_CELLS)}, got {config.kind!r}")
        super().__init__(config)
        self.rnn = _CELLS[config.kind](
            input_size=config.d_model,
            hidden_size=config.d_model,
            num_layers=config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )

    def contextualize(self, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if visits.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                states, _ = self.rnn(visits.to(self.rnn.weight_ih_l0.dtype))
        else:
            states, _ = self.rnn(visits)
        return states
