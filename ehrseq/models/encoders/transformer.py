"""Causal Transformer encoder: pre-norm self-attention over the visits seen so far.

Each of the ``n_layers`` blocks is pre-norm (LayerNorm before each sub-layer, residual around it):

    x ← x + Dropout(W_o · CausalAttention(LN₁(x)))
    x ← x + Dropout(W₂ · Dropout(GELU(W₁ · LN₂(x))))

followed by a final LayerNorm. In ``CausalAttention`` visit m attends to visits 1 … m only
(``scaled_dot_product_attention(is_causal=True)``, which uses fused causal kernels where available).
Order and timing enter through the continuous-time encoding of the visit time and gap inside the
visit embedding (:mod:`~ehrseq.models.encoders.time_encoding`); there is no learned position index,
so histories of any length are accepted.

Padding. Real visits are left-aligned, so every key a real query may attend to (positions ≤ m) is a
real visit: the future mask alone excludes all padding from real visits, and no key-padding mask is
needed. Every attention row is non-empty (a query always sees itself), so padded rows are finite
too, never NaN. The blocks are written out rather than taken from ``nn.TransformerEncoderLayer``,
whose inference fast path and nested-tensor conversion compute real visits through a different
kernel than training does (results then differ between ``no_grad`` and training, and with the
amount of padding); here one code path serves training, evaluation and inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ehrseq.errors import ConfigError
from ehrseq.models.encoders.base import SequenceEncoder
from ehrseq.models.encoders.config import EncoderConfig


class CausalTransformerBlock(nn.Module):
    """One pre-norm block (causal multi-head self-attention, GELU feed-forward): ``[B, M, D] → [B, M, D]``."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attention_dropout = dropout
        self.norm_attention = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attention_out = nn.Linear(d_model, d_model)
        self.norm_feedforward = nn.LayerNorm(d_model)
        self.feedforward = nn.Sequential(
            nn.Linear(d_model, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, d = x.shape
        qkv = self.qkv(self.norm_attention(x)).view(b, m, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout if self.training else 0.0, is_causal=True
        )
        x = x + self.dropout(self.attention_out(attended.transpose(1, 2).reshape(b, m, d)))
        return x + self.dropout(self.feedforward(self.norm_feedforward(x)))


class CausalTransformerEncoder(SequenceEncoder):
    """Visit embedding → ``n_layers`` :class:`CausalTransformerBlock` → final LayerNorm."""

    def __init__(self, config: EncoderConfig) -> None:
        if config.kind != "transformer":
            raise ConfigError(f"CausalTransformerEncoder needs kind 'transformer', got {config.kind!r}")
        super().__init__(config)
        self.blocks = nn.ModuleList(
            CausalTransformerBlock(config.d_model, config.n_heads, config.feedforward_dim, config.dropout)
            for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(config.d_model)

    def contextualize(self, visits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = visits
        for block in self.blocks:
            x = block(x)
        return self.norm(x)
