"""`DynamicSurvivalModel`: encoder (history → one state per visit) × head (state → distribution).

One prediction path serves training, evaluation and scoring: ``model(batch)`` returns a
:class:`ModelOutput` whose :attr:`~ModelOutput.distribution` is the per-visit survival distribution
(batch shape ``[B, M]``) that losses, metrics and scoring all consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError
from ehrseq.models.encoders import EncoderConfig, build_encoder
from ehrseq.models.families import Prediction
from ehrseq.models.heads import HeadConfig, SurvivalHead


@dataclass(frozen=True)
class ModelConfig:
    """Fully describes a :class:`DynamicSurvivalModel` (JSON round trip with :meth:`to_dict`/:meth:`from_dict`).

    ``next_visit`` adds an auxiliary predictor of the next visit's numeric features and codes
    (trained by the ``next_visit`` loss term; [catalogue] §9, monograph §6.2.3).
    """

    encoder: EncoderConfig
    head: HeadConfig
    next_visit: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict(), "head": self.head.to_dict(), "next_visit": self.next_visit}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        unknown = set(values) - {"encoder", "head", "next_visit"}
        if unknown:
            raise ConfigError(f"unknown model settings: {sorted(unknown)}")
        if "encoder" not in values or "head" not in values:
            raise ConfigError("a model config needs 'encoder' and 'head'")
        return cls(
            encoder=EncoderConfig.from_dict(values["encoder"]),
            head=HeadConfig.from_dict(values["head"]),
            next_visit=bool(values.get("next_visit", False)),
        )


@dataclass
class ModelOutput:
    """What the model computes for a batch.

    states: ``[B, M, D]`` encoder state per visit; raw: ``[B, M, P]`` head outputs;
    next_numeric: ``[B, M, F]`` predicted numeric features of visit m + 1 (if enabled);
    next_code_logits: ``[B, M, V]`` logits of the codes of visit m + 1 (if enabled).
    """

    states: torch.Tensor
    raw: torch.Tensor
    head: SurvivalHead = field(repr=False)
    next_numeric: torch.Tensor | None = None
    next_code_logits: torch.Tensor | None = None

    @cached_property
    def distribution(self) -> Prediction:
        """The per-visit survival distribution, batch shape ``[B, M]``."""
        return self.head.distribution(self.raw)


class NextVisitPredictor(nn.Module):
    """Linear maps from the state at visit m to visit m + 1's numeric features and code logits."""

    def __init__(self, input_dim: int, n_numeric: int, code_vocab_size: int) -> None:
        super().__init__()
        self.numeric = nn.Linear(input_dim, n_numeric) if n_numeric else None
        self.codes = nn.Linear(input_dim, code_vocab_size) if code_vocab_size else None

    def forward(self, states: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        numeric = self.numeric(states) if self.numeric is not None else None
        codes = self.codes(states) if self.codes is not None else None
        return numeric, codes


class DynamicSurvivalModel(nn.Module):
    """``forward(batch) -> ModelOutput``; causal by construction (the encoders never look ahead)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder)
        self.head = SurvivalHead(config.head, self.encoder.output_dim)
        self.next_visit = (
            NextVisitPredictor(self.encoder.output_dim, config.encoder.n_numeric, config.encoder.code_vocab_size)
            if config.next_visit
            else None
        )

    def forward(self, batch: SequenceBatch) -> ModelOutput:
        states = self.encoder(batch)
        raw = self.head(states)
        next_numeric = next_codes = None
        if self.next_visit is not None:
            next_numeric, next_codes = self.next_visit(states)
        return ModelOutput(states=states, raw=raw.float(), head=self.head, next_numeric=next_numeric,
                           next_code_logits=next_codes)

    def distribution_at(self, batch: SequenceBatch, index: tuple[torch.Tensor, torch.Tensor], *,
                        check_values: bool = True) -> Prediction:
        """The head's distribution at the visits ``index`` = (patient rows ``[n]``, visit positions
        ``[n]``) of ``batch``, batch shape ``[n]``: the encoder reads every visit (the recurrence needs
        them), the head only the selected states. ``check_values``: see
        :class:`~ehrseq.models.encoders.embedding.VisitEmbedding`."""
        states = self.encoder(batch, check_values=check_values)
        return self.head.distribution(self.head(states[index]).float())

    @torch.no_grad()
    def predict(self, batch: SequenceBatch) -> Prediction:
        """The per-visit distribution in eval mode, without gradients."""
        was_training = self.training
        self.eval()
        try:
            return self(batch).distribution
        finally:
            self.train(was_training)
