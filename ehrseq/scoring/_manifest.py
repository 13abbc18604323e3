"""The output directory's ``_manifest.json``: what was scored, with what, and which outputs are complete.

Layout (JSON, rewritten atomically — temporary file, fsync, rename — after every completed shard)::

    format, format_version, ehrseq_version
    model      {id, version, path}
    settings   {horizons, at, landmark, cause, event, batch_size, patients_per_chunk, outcomes}
    inputs     [{name, path, bytes, rows | fingerprint, output}]       one per input shard
    shards     {output name: {input, rows_in, rows_out, rows_extrapolated, patients_in, patients_scored, visits_used,
                              visits_dropped {reason: n}, patients_dropped {reason: n},
                              patients_without_prediction, bytes, sha256, row_groups, seconds,
                              stage_seconds {stage: s}}}                 completed outputs only
    totals     sums of the shard counts (dropped rows by reason included)
    complete   true once every input shard has its output

An output listed in ``shards`` is complete: it was renamed into place after it was fully written,
and its SHA-256 is recorded. Resuming compares the model id and every setting with the manifest
(any difference is refused) and the description of every input whose output is complete (an input
that changed or disappeared is refused: its predictions would be stale).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ehrseq.errors import ConfigError, option

MANIFEST = "_manifest.json"
FORMAT_NAME = "ehrseq-predictions"
#: 2: the outputs have the columns ``extrapolated`` and ``median_extrapolated``.
FORMAT_VERSION = 2


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` to ``path`` through a temporary file in the same folder and a rename."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def landmark_json(landmark: Any) -> Any:
    """A landmark as JSON: a number of days, or ``{"date": ...}`` / ``{"datetime": ...}`` (ISO 8601)."""
    if landmark is None:
        return None
    if isinstance(landmark, dt.datetime):
        return {"datetime": landmark.isoformat()}
    if isinstance(landmark, dt.date):
        return {"date": landmark.isoformat()}
    return float(landmark)


@dataclass(frozen=True)
class ScoreSettings:
    """Every setting that shapes the output files; a run resumes only with the very same settings."""

    horizons: tuple[float, ...]
    at: str
    landmark: Any
    cause: int | None
    event: str | None
    batch_size: int
    patients_per_chunk: int
    outcomes: str | None  # fingerprint of the outcome table, if one was given

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["horizons"] = list(self.horizons)
        values["landmark"] = landmark_json(self.landmark)
        return values


def new_manifest(model: Mapping[str, Any], settings: ScoreSettings, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    from ehrseq import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "ehrseq_version": __version__,
        "model": dict(model),
        "settings": settings.to_dict(),
        "inputs": inputs,
        "shards": {},
        "totals": totals([]),
        "complete": False,
    }


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of ``out_dir``, or ``None`` when there is none."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); it cannot be resumed") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ConfigError(f"{path} is not an ehrseq prediction manifest")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > FORMAT_VERSION:
        raise ConfigError(f"{path} has format version {manifest.get('format_version')!r}; this ehrseq reads "
                          f"versions up to {FORMAT_VERSION}")
    return manifest


def check_resumable(old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Refuse to resume ``old`` (the manifest on disk) as the run described by ``new``."""
    where = "cannot resume this output directory"
    if old.get("format_version") != new["format_version"]:
        raise ConfigError(f"{where}: its outputs are in prediction format version {old.get('format_version')}, "
                          f"without the columns this ehrseq writes (format version {new['format_version']}); "
                          f"score into a new folder or pass {option('overwrite', True)}")
    if old["model"].get("id") != new["model"]["id"]:
        raise ConfigError(f"{where}: it holds predictions of model {old['model'].get('id')} "
                          f"(version {old['model'].get('version')}), not of model {new['model']['id']}")
    if old["model"].get("version") != new["model"]["version"]:
        raise ConfigError(f"{where}: it was written with model_version {old['model'].get('version')!r}, "
                          f"not {new['model']['version']!r}")
    changed = [f"{key}={old['settings'].get(key)!r} (now {value!r})"
               for key, value in new["settings"].items() if old["settings"].get(key) != value]
    if changed:
        raise ConfigError(f"{where}: it was written with other settings: {'; '.join(changed)}")
    current = {entry["name"]: entry for entry in new["inputs"]}
    for entry in old["inputs"]:
        if entry["output"] not in old["shards"]:
            continue
        now = current.get(entry["name"])
        if now is None:
            raise ConfigError(f"{where}: input shard {entry['name']} was scored into it but is no longer in the "
                              "input; score into a new directory")
        if {k: v for k, v in now.items() if k != "output"} != {k: v for k, v in entry.items() if k != "output"}:
            raise ConfigError(f"{where}: input shard {entry['name']} changed since its predictions were written "
                              f"(then {_describe(entry)}, now {_describe(now)}); score into a new directory")


def _describe(entry: Mapping[str, Any]) -> str:
    parts = [f"{key} {entry[key]}" for key in ("bytes", "rows", "fingerprint") if entry.get(key) is not None]
    return ", ".join(parts)


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums over shard records (dropped rows and patients by reason included)."""
    counts = ("rows_in", "rows_out", "rows_extrapolated", "patients_in", "patients_scored", "visits_used",
              "patients_without_prediction", "bytes")
    out: dict[str, Any] = dict.fromkeys(counts, 0)
    out["visits_dropped"], out["patients_dropped"] = {}, {}
    out["shards"] = 0
    for record in records:
        out["shards"] += 1
        for key in counts:
            out[key] += record[key]
        for key in ("visits_dropped", "patients_dropped"):
            for reason, n in record[key].items():
                out[key][reason] = out[key].get(reason, 0) + n
    return out
