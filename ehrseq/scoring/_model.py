"""The model being scored: a fitted estimator or a saved model directory, and its identity.

**Model id.** The id of a model is the first 16 hex digits of the SHA-256 of the canonical JSON of
its directory's file checksums — the ``files`` mapping of the model's ``manifest.json`` reduced to
``{file name: sha256}`` (``json.dumps(..., sort_keys=True, separators=(",", ":"))``). It changes
whenever a weight, the configuration, the fitted feature pipeline or the grid changes, and not when
the same model is copied, moved or re-saved by another ehrseq or torch version (those versions are
recorded in the manifest but are not part of the id). A fitted estimator that has not been saved gets
the id its directory would have: it is saved to a temporary directory and hashed the same way.

**Model version.** A free-form label written next to the id. By default the ehrseq version that saved
the model; pass your own (a model-registry version, a release tag) to :func:`ehrseq.scoring.score`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ehrseq.checkpoint import MANIFEST, read_manifest
from ehrseq.errors import CheckpointError, ConfigError
from ehrseq.estimator import DynamicSurvival

#: Hex digits of the SHA-256 kept in a model id.
MODEL_ID_LENGTH = 16


@dataclass(frozen=True)
class ModelIdentity:
    """What the prediction rows say about the model: ``id``, ``version`` and, when loaded from disk, ``path``."""

    id: str
    version: str
    path: str | None = None


def _id_from_manifest(manifest: dict[str, Any]) -> str:
    checksums = {name: entry.get("sha256") for name, entry in manifest["files"].items()}
    text = json.dumps(checksums, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:MODEL_ID_LENGTH]


@functools.lru_cache(maxsize=4)
def _load(directory: str, stamp: tuple[int, int]) -> tuple[DynamicSurvival, dict[str, Any]]:
    """Load (and verify) a model directory once per process; ``stamp`` (manifest mtime and size)
    makes a re-saved directory load again."""
    del stamp  # part of the cache key only
    estimator = DynamicSurvival.load(directory)
    return estimator, read_manifest(directory)


def _stamp(directory: Path) -> tuple[int, int]:
    try:
        stat = (directory / MANIFEST).stat()
    except OSError as exc:
        raise CheckpointError(f"{directory} is not a model directory: {exc}") from exc
    return stat.st_mtime_ns, stat.st_size


def check_model(model: Any) -> None:
    """Raise :class:`ConfigError` unless ``model`` is a fitted estimator or a path (checked when loaded)."""
    if isinstance(model, (str, os.PathLike)):
        return
    if not isinstance(model, DynamicSurvival):
        raise ConfigError(
            f"model must be a fitted DynamicSurvival or the path of a saved model, got {type(model).__name__}")
    if not hasattr(model, "model_"):
        raise ConfigError("the model is not fitted yet; call fit() or ehrseq.load() before scoring")


def resolve_model(model: Any, model_version: str | None = None,
                  saved: str | os.PathLike[str] | None = None) -> tuple[DynamicSurvival, ModelIdentity]:
    """The fitted estimator and its identity, from an estimator or the path of a saved model.

    ``saved`` is a directory a fitted estimator has just been saved to: its id is read from there
    instead of saving the estimator once more.
    """
    check_model(model)
    if isinstance(model, (str, os.PathLike)):
        directory = Path(model).resolve()
        if not directory.is_dir():
            raise CheckpointError(f"{model} is not a model directory (it does not exist or is not a folder)")
        estimator, manifest = _load(str(directory), _stamp(directory))
        version = model_version or str(manifest.get("ehrseq_version", "unknown"))
        return estimator, ModelIdentity(_id_from_manifest(manifest), version, str(directory))
    if saved is not None:
        manifest = read_manifest(saved)
    else:
        with tempfile.TemporaryDirectory(prefix="ehrseq-model-") as scratch:
            manifest = read_manifest(model.save(Path(scratch) / "model"))
    from ehrseq import __version__

    return model, ModelIdentity(_id_from_manifest(manifest), model_version or __version__)


def model_id(model: Any) -> str:
    """The stable id of a fitted :class:`~ehrseq.DynamicSurvival` or of a saved model directory
    (see the module docstring)."""
    return resolve_model(model)[1].id
