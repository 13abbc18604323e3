"""Build an encoder from its configuration: ``build_encoder(config)``."""

from __future__ import annotations

from typing import Any

from ehrseq.errors import ConfigError
from ehrseq.models.encoders.base import SequenceEncoder
from ehrseq.models.encoders.config import EncoderConfig
from ehrseq.models.encoders.landmark import LandmarkEncoder
from ehrseq.models.encoders.recurrent import RecurrentEncoder
from ehrseq.models.encoders.transformer import CausalTransformerEncoder

#: Encoder class by ``EncoderConfig.kind``.
ENCODERS: dict[str, type[SequenceEncoder]] = {
    "gru": RecurrentEncoder,
    "lstm": RecurrentEncoder,
    "transformer": CausalTransformerEncoder,
    "landmark": LandmarkEncoder,
}


def build_encoder(config: EncoderConfig | dict[str, Any]) -> SequenceEncoder:
    """The encoder named by ``config.kind`` (``"gru"``, ``"lstm"``, ``"transformer"`` or ``"landmark"``).

    ``config`` may be an :class:`EncoderConfig` or its :meth:`~EncoderConfig.to_dict` form.
    """
    if isinstance(config, dict):
        config = EncoderConfig.from_dict(config)
    if not isinstance(config, EncoderConfig):
        raise ConfigError(f"build_encoder expects an EncoderConfig or a dict, got {type(config).__name__}")
    return ENCODERS[config.kind](config)
