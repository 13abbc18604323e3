"""ehrseq: dynamic (per-visit) time-to-event prediction from longitudinal electronic health records.

The top-level names are imported on first use, so ``import ehrseq`` stays light::

    import ehrseq
    visits, outcomes = ehrseq.datasets.load_pbcseq()
    model = ehrseq.DynamicSurvival(encoder="gru", head="logistic_hazard").fit(visits, outcomes)
    model.predict_risk(visits, horizon=365, landmark=730)
    ehrseq.evaluate.landmark(model, visits, outcomes, landmarks=[365], horizons=[365], train_outcomes=...)
    model, trials = ehrseq.tune(visits, outcomes, n_trials=20)      # hyperparameter search (ehrseq[tune])
"""

from __future__ import annotations

import importlib
from typing import Any

from ehrseq.errors import CheckpointError, ConfigError, DataError, EhrseqError, ShapeError

__version__ = "0.1.0"

_LAZY = {
    "DynamicSurvival": ("ehrseq.estimator", "DynamicSurvival"),
    "load": ("ehrseq.estimator", "load"),
    "build_cohort": ("ehrseq.data", "build_cohort"),
    "validate": ("ehrseq.data", "validate"),
    "read_meds": ("ehrseq.data", "read_meds"),
    "from_counting_process": ("ehrseq.data", "from_counting_process"),
    "score": ("ehrseq.scoring", "score"),
    "tune": ("ehrseq.tuning", "tune"),
}
_SUBMODULES = ("baselines", "data", "datasets", "evaluate", "losses", "metrics", "models", "objective", "plot", "scoring", "train", "tuning")

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "EhrseqError",
    "ShapeError",
    "__version__",
    *_LAZY,
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"ehrseq.{name}")
    else:
        raise AttributeError(f"module 'ehrseq' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
