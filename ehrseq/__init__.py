"""ehrseq: dynamic (per-visit) time-to-event prediction from longitudinal electronic health records."""

from __future__ import annotations

from ehrseq.errors import CheckpointError, ConfigError, DataError, EhrseqError, ShapeError

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EhrseqError",
    "ShapeError",
    "__version__",
]
