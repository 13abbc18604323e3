"""The common interface of sequence encoders: history → one state per visit.

``encoder(batch) -> [B, M, output_dim]``: the state at visit m summarises visits 1 … m of the
patient and nothing after (causality); values at padded visits are finite but meaningless.
Every encoder is a :class:`VisitEmbedding` followed by a sequence model implementing
:meth:`SequenceEncoder.contextualize` on the embedded visits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.models.encoders.config import EncoderConfig
from ehrseq.models.encoders.embedding import VisitEmbedding


class SequenceEncoder(nn.Module, ABC):
    """Base class of the encoders built by :func:`~ehrseq.models.encoders.build_encoder`.

    Attributes
    ----------
    config: the :class:`EncoderConfig` it was built from (``config.to_dict()`` rebuilds it).
    embedding: the :class:`VisitEmbedding`.
    output_dim: D, the width of the per-visit states.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = VisitEmbedding(config)
        self.output_dim = config.d_model

    def forward(self, batch: SequenceBatch, *, check_values: bool = True) -> torch.Tensor:
        """Per-visit states ``[B, M, output_dim]`` (``check_values``: see :class:`VisitEmbedding`)."""
        return self.contextualize(self.embedding(batch, check_values=check_values), batch.mask)

    def encode(self, batch: SequenceBatch, *, check_values: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The visit embedding's sums before their normalisation ``[B, M, D]`` (:meth:`VisitEmbedding.sums`) and the
        per-visit states ``[B, M, output_dim]``."""
        sums = self.embedding.sums(batch, check_values=check_values)
        return sums, self.contextualize(self.embedding.normalise(sums), batch.mask)

    @abstractmethod
    def contextualize(self, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Causal sequence model: embedded visits ``[B, M, D]`` and ``mask [B, M]`` → states ``[B, M, D]``.

        The state at m may depend on ``visits[:, :m + 1]`` only. ``mask`` holds left-aligned real visits.
        """
