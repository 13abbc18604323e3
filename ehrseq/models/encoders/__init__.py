"""Sequence encoders: a patient's visit history → one state per visit, ``[B, M, D]``, causally.

>>> from ehrseq.models.encoders import EncoderConfig, build_encoder
>>> encoder = build_encoder(EncoderConfig(kind="transformer", n_numeric=7, categorical_cardinalities=(5, 4),
...                                       code_vocab_size=120, d_model=64, pooling="attention"))
>>> encoder.output_dim
64

``states = encoder(batch)`` for a :class:`~ehrseq.data.SequenceBatch`; the state at visit m depends on
visits 1 … m only.
"""

from ehrseq.models.encoders.base import SequenceEncoder
from ehrseq.models.encoders.config import ENCODER_KINDS, POOLINGS, EmbeddingConfig, EncoderConfig
from ehrseq.models.encoders.embedding import VisitEmbedding, attention_pool_codes, mean_pool_codes
from ehrseq.models.encoders.factory import ENCODERS, build_encoder
from ehrseq.models.encoders.landmark import LandmarkEncoder
from ehrseq.models.encoders.recurrent import RecurrentEncoder
from ehrseq.models.encoders.time_encoding import TimeEncoding, signed_log1p, time_features
from ehrseq.models.encoders.transformer import CausalTransformerBlock, CausalTransformerEncoder

__all__ = [
    "ENCODERS",
    "ENCODER_KINDS",
    "POOLINGS",
    "CausalTransformerBlock",
    "CausalTransformerEncoder",
    "EmbeddingConfig",
    "EncoderConfig",
    "LandmarkEncoder",
    "RecurrentEncoder",
    "SequenceEncoder",
    "TimeEncoding",
    "VisitEmbedding",
    "attention_pool_codes",
    "build_encoder",
    "mean_pool_codes",
    "signed_log1p",
    "time_features",
]
