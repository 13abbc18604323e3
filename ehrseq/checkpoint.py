"""Model directories: safetensors weights + JSON documents, checksummed, written atomically. No pickle.

Layout of a model directory::

    manifest.json        format name and version, ehrseq/torch versions, sha256 and size of every file
    weights.safetensors  tensors (the model's state dict)
    <name>.json          one JSON document per named part (model config, feature pipeline, grid, ...)

:func:`save_checkpoint` writes into a temporary sibling directory and renames it into place, so an
interrupted save never leaves a half-written model behind. :func:`load_checkpoint` refuses, with a
:class:`~ehrseq.errors.CheckpointError` naming the file, any directory whose manifest is missing or of
an unknown format, whose files are missing, extra or modified (checksum), or that was written by a
newer format version than this ehrseq understands.

Format versions: 1 — the estimator's settings as separate entries of ``estimator.json`` (encoder, head,
objective, table and trainer settings); 2 — one ``settings`` entry, :class:`ehrseq.settings.EstimatorSettings`.
This ehrseq reads both (version 1 through :meth:`ehrseq.DynamicSurvival.load`) and writes version 2;
an older ehrseq refuses version 2 with a message to upgrade.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ehrseq.errors import CheckpointError, option

FORMAT_NAME = "ehrseq-model"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class Checkpoint:
    """The content of a model directory."""

    state_dict: dict[str, torch.Tensor]
    documents: dict[str, Any]
    manifest: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_document_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"document names must be non-empty and use only letters, digits, '_' and '-': {name!r}")
    if name in ("manifest", "weights"):
        raise ValueError(f"{name!r} is reserved in a model directory")


def save_checkpoint(
    directory: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    documents: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``state_dict`` and JSON ``documents`` to ``directory`` atomically; return its path.

    Tensors are stored contiguous on the CPU; shared storage (tied weights) is cloned, as safetensors
    requires. Documents must be JSON-serialisable (``json.dumps`` with ``allow_nan=False``).
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass {option('overwrite', True)} to replace it")
    for name in documents:
        _check_document_name(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": FORMAT_NAME})
        for name, document in documents.items():
            text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False)
            (staging / f"{name}.json").write_text(text + "\n", encoding="utf-8")
        files = sorted(p.name for p in staging.iterdir())
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "ehrseq_version": _ehrseq_version(),
            "torch_version": torch.__version__,
            "files": {name: {"sha256": _sha256(staging / name), "bytes": (staging / name).stat().st_size} for name in files},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a model directory, checked for its format name and version (the files it lists
    are verified by :func:`load_checkpoint`)."""
    source = Path(directory)
    if not source.is_dir():
        raise CheckpointError(f"{source} is not a model directory (it does not exist or is not a folder)")
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{source} has no {MANIFEST}; it was not written by ehrseq.save")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{manifest_path} does not describe an {FORMAT_NAME} directory")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{source} uses model format version {version!r}; this ehrseq ({_ehrseq_version()}) reads "
            f"versions 1..{FORMAT_VERSION} — upgrade ehrseq to load it"
        )
    return manifest


def load_checkpoint(directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify a model directory written by :func:`save_checkpoint`."""
    source = Path(directory)
    manifest = read_manifest(source)
    manifest_path = source / MANIFEST
    listed = manifest.get("files")
    if not isinstance(listed, dict) or WEIGHTS not in listed:
        raise CheckpointError(f"{manifest_path} lists no {WEIGHTS}")
    present = {p.name for p in source.iterdir() if p.name != MANIFEST}
    missing = sorted(set(listed) - present)
    extra = sorted(name for name in present - set(listed) if not name.startswith("."))
    if missing:
        raise CheckpointError(f"{source} is incomplete: missing {', '.join(missing)}")
    if extra:
        raise CheckpointError(f"{source} contains files the manifest does not list: {', '.join(extra)}")
    for name, entry in listed.items():
        if _sha256(source / name) != entry.get("sha256"):
            raise CheckpointError(f"{source / name} does not match its checksum in the manifest (modified or corrupted)")
    try:
        state_dict = load_file(str(source / WEIGHTS), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{source / WEIGHTS} cannot be read: {exc}") from exc
    documents: dict[str, Any] = {}
    for name in listed:
        if name.endswith(".json"):
            documents[name[: -len(".json")]] = json.loads((source / name).read_text(encoding="utf-8"))
    return Checkpoint(state_dict=state_dict, documents=documents, manifest=manifest)


def _ehrseq_version() -> str:
    from ehrseq import __version__

    return __version__
