"""Typed, JSON-friendly configuration of the visit embedding and the sequence encoders.

:class:`EmbeddingConfig` holds what the visit embedding needs (input sizes from the fitted feature
pipeline, width, pooling, time encoding); :class:`EncoderConfig` extends it with the sequence model
(``kind``, depth, heads). Both are plain dataclasses with keyword-only fields, validated on creation
(:class:`~ehrseq.errors.ConfigError` naming the field), and round-trip through JSON with
:meth:`to_dict` / :meth:`from_dict`.

Vocabulary sizes count every index the tensors may hold, *including* the reserved
:data:`~ehrseq.data.PAD_INDEX` (0) and :data:`~ehrseq.data.UNKNOWN_INDEX` (1): a categorical column
with three observed levels has cardinality 5, and indices run over ``0 … cardinality − 1``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from ehrseq.errors import ConfigError

Pooling = Literal["mean", "attention"]
EncoderKind = Literal["gru", "lstm", "transformer", "landmark"]

POOLINGS: tuple[str, ...] = ("mean", "attention")
ENCODER_KINDS: tuple[str, ...] = ("gru", "lstm", "transformer", "landmark")

#: Keys that other sequence libraries accept but that would break causality here, with the reason.
_REFUSED_KEYS = {
    "bidirectional": "bidirectional encoders are not supported: the state at visit m would depend on "
    "visits after m, which leaks the future into every per-visit prediction",
}

_C = TypeVar("_C", bound="EmbeddingConfig")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(kw_only=True)
class EmbeddingConfig:
    """Sizes and options of :class:`~ehrseq.models.encoders.VisitEmbedding`.

    Fields
    ------
    n_numeric:
        F, number of numeric features (each also gets a missingness indicator).
    categorical_cardinalities:
        One vocabulary size per categorical column (C columns), reserved indices included (≥ 2).
    code_vocab_size:
        Size of the code vocabulary, reserved indices included; 0 when the data has no codes.
    d_model:
        D, width of the visit embedding and of the encoder states.
    pooling:
        How the codes of one visit are pooled: ``"mean"`` or ``"attention"`` (learned query).
    dropout:
        Dropout probability on the visit embedding (and inside the sequence model).
    time_frequencies:
        Number of sinusoid frequencies of the continuous-time encoding of ``time`` and ``gap``
        (0 keeps only the signed-log feature).
    time_min_period, time_max_period:
        Shortest and longest sinusoid period, in days; periods are spaced geometrically between them.
    learnable_time_frequencies:
        Learn the sinusoid frequencies (initialised at the geometric grid) instead of fixing them.
    time_unit:
        u > 0, the clock's units per day of the encoding: ``time`` and ``gap`` are encoded as t / u and g / u
        (1: the clock is read as days; :class:`ehrseq.DynamicSurvival` sets it from the data, so that the
        encoding does not depend on the unit of the clock).
    """

    n_numeric: int = 0
    categorical_cardinalities: tuple[int, ...] = ()
    code_vocab_size: int = 0
    d_model: int = 64
    pooling: Pooling = "mean"
    dropout: float = 0.1
    time_frequencies: int = 8
    time_min_period: float = 1.0
    time_max_period: float = 3652.5
    learnable_time_frequencies: bool = False
    time_unit: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.categorical_cardinalities, list):
            self.categorical_cardinalities = tuple(self.categorical_cardinalities)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        _check_int("n_numeric", self.n_numeric, 0)
        if not isinstance(self.categorical_cardinalities, tuple):
            raise ConfigError(
                f"categorical_cardinalities must be a list of integers, got {self.categorical_cardinalities!r}"
            )
        for j, cardinality in enumerate(self.categorical_cardinalities):
            _check_int(f"categorical_cardinalities[{j}]", cardinality, 2)
        _check_int("code_vocab_size", self.code_vocab_size, 0)
        if self.code_vocab_size == 1:
            raise ConfigError("code_vocab_size must be 0 (no codes) or >= 2 (padding and unknown included), got 1")
        _check_int("d_model", self.d_model, 1)
        _check_choice("pooling", self.pooling, POOLINGS)
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        _check_int("time_frequencies", self.time_frequencies, 0)
        _check_positive_float("time_min_period", self.time_min_period)
        _check_positive_float("time_max_period", self.time_max_period)
        if self.time_max_period < self.time_min_period:
            raise ConfigError(
                f"time_max_period ({self.time_max_period}) must be >= time_min_period ({self.time_min_period})"
            )
        _check_positive_float("time_unit", self.time_unit)
        if not isinstance(self.learnable_time_frequencies, bool):
            raise ConfigError(f"learnable_time_frequencies must be a bool, got {self.learnable_time_frequencies!r}")

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return {
            f.name: list(value) if isinstance(value, tuple) else value
            for f in fields(self)
            for value in (getattr(self, f.name),)
        }

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` (missing keys take defaults)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key in _REFUSED_KEYS:
                raise ConfigError(_REFUSED_KEYS[key])
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self: _C, **changes: Any) -> _C:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(kw_only=True)
class EncoderConfig(EmbeddingConfig):
    """Configuration of a sequence encoder: the visit embedding plus the sequence model.

    Fields (in addition to :class:`EmbeddingConfig`)
    ------------------------------------------------
    kind:
        ``"gru"``, ``"lstm"`` (unidirectional recurrent), ``"transformer"`` (causal, pre-norm) or
        ``"landmark"`` (no sequence model: the current visit's embedding).
    n_layers:
        Number of recurrent or Transformer layers.
    n_heads:
        Attention heads of the Transformer (must divide ``d_model``); unused by recurrent encoders.
    ff_dim:
        Width of the Transformer's feed-forward block; ``None`` means ``4 * d_model``.
    """

    kind: EncoderKind = "gru"
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int | None = None

    def validate(self) -> None:
        super().validate()
        _check_choice("kind", self.kind, ENCODER_KINDS)
        _check_int("n_layers", self.n_layers, 1)
        _check_int("n_heads", self.n_heads, 1)
        if self.ff_dim is not None:
            _check_int("ff_dim", self.ff_dim, 1)
        if self.kind == "transformer" and self.d_model % self.n_heads != 0:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @property
    def feedforward_dim(self) -> int:
        """Resolved width of the Transformer feed-forward block."""
        return 4 * self.d_model if self.ff_dim is None else self.ff_dim
