"""Input shards of a scoring run: listing, reading by patient chunks, and the one-shard-per-patient rule.

A visit source is a Polars (or pandas) DataFrame, a LazyFrame, a Parquet or CSV file, a glob pattern, a
directory of such files (searched recursively; files and folders whose name starts with ``.`` or ``_``
are skipped, as Spark and Hive do), or a list of files — the sources of :func:`ehrseq.data.read_table`,
read by the same rules (CSV null markers included). Each file is one **shard**; an in-memory table is
one shard. Shards are read lazily (:func:`ehrseq.data.reader.scan_file`), only the columns the model
uses, one chunk of patients at a time.

**Every patient's visits must be in one shard** (shards partitioned by patient, as MEDS shards and
Spark's ``repartition("patient_id")`` output are). This is what lets each shard be scored on its own,
by one process or by a worker of a distributed engine. :func:`check_partitioned` verifies it before
anything is scored, holding 12 bytes per patient (a 64-bit hash of the id and a shard number); a
patient found in several shards raises a :class:`~ehrseq.DataError` naming the patients and the
shards. :func:`partition_by_patient` rewrites any source into shards partitioned by a hash of the
patient id.

**Chunks.** A shard with more than ``patients_per_chunk`` patients is read in chunks of consecutive
patient ids (``patient_id`` between the chunk's first and last id): a shard sorted by patient (or
with row-group statistics on it) reads only the row groups of the chunk; an unsorted shard is scanned
once per chunk. Either way only one chunk of visits is in memory at a time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ehrseq.data.reader import from_pandas, is_pandas, scan_file, table_files
from ehrseq.errors import ConfigError, DataError

#: Output name of an in-memory table (the only shard of its run).
FRAME_OUTPUT = "part-00000.parquet"
_HASH_SEED = 0


@dataclass(frozen=True, eq=False)
class Shard:
    """One input shard: a Parquet or CSV file (``path``) or an in-memory table (``frame``).

    ``name`` is the shard's path relative to the source root (its output has the same relative path
    under the output directory, as a Parquet file); for an in-memory table it is :data:`FRAME_OUTPUT`.
    ``null_values`` are the strings read as missing in a text file (default
    :data:`ehrseq.data.reader.NULL_VALUES`).
    """

    name: str
    path: Path | None = None
    frame: pl.DataFrame | pl.LazyFrame | None = None
    null_values: tuple[str, ...] | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], name: str | None = None,
                  null_values: tuple[str, ...] | None = None) -> Shard:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"input shard {path} does not exist or is not a file")
        return cls(name or _output_name(path.name), path=path, null_values=null_values)

    @property
    def label(self) -> str:
        """How messages name the shard."""
        return str(self.path) if self.path is not None else "<in-memory table>"

    def scan(self) -> pl.LazyFrame:
        if self.path is not None:
            return scan_file(self.path, self.null_values)
        assert self.frame is not None
        return self.frame.lazy()

    def collect(self, query: pl.LazyFrame) -> pl.DataFrame:
        """Run ``query`` on this shard; unreadable files raise a :class:`DataError` naming the shard."""
        try:
            return query.collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read input shard {self.label}: {message}", table="visits") from exc

    def schema(self) -> pl.Schema:
        try:
            return self.scan().collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot read input shard {self.label}: {message}", table="visits") from exc

    def describe(self) -> dict[str, Any]:
        """JSON description recorded in the manifest: name, path, bytes and rows (from the Parquet
        metadata), or rows and a content fingerprint for an in-memory table."""
        if self.path is not None:
            rows = self.collect(self.scan().select(pl.len())).item()
            return {"name": self.name, "path": str(self.path.resolve()), "bytes": self.path.stat().st_size,
                    "rows": int(rows)}
        hashed = pl.struct(pl.all()).hash(seed=_HASH_SEED)
        low, high, rows = self.collect(self.scan().select(
            (hashed % (1 << 32)).sum().alias("low"), (hashed // (1 << 32)).sum().alias("high"),
            pl.len().alias("rows"))).row(0)
        return {"name": self.name, "path": None, "rows": int(rows), "fingerprint": f"{low or 0:x}-{high or 0:x}"}


def _output_name(relative: str) -> str:
    """The output file of an input shard: the same relative path, as Parquet (``a/b.csv`` -> ``a/b.parquet``)."""
    path = Path(relative)
    return path.as_posix() if path.suffix.lower() in (".parquet", ".pq") else path.with_suffix(".parquet").as_posix()


def list_shards(source: Any, null_values: tuple[str, ...] | None = None) -> list[Shard]:
    """The shards of a visit source (see the module docstring), in a stable order."""
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        return [Shard(FRAME_OUTPUT, frame=source)]
    if is_pandas(source):
        return [Shard(FRAME_OUTPUT, frame=from_pandas(source, null_values))]
    if not isinstance(source, (str, os.PathLike, list, tuple)):
        raise ConfigError("visits must be a DataFrame, a LazyFrame, a Parquet or CSV file, a glob pattern, a directory "
                          f"of such files or a list of files, got {type(source).__name__}")
    files, root = table_files(source, "visits")
    shards = [Shard(_output_name(p.relative_to(root).as_posix()), path=p, null_values=null_values) for p in files]
    names = [shard.name for shard in shards]
    if len(set(names)) != len(names):
        clash = next(n for n in names if names.count(n) > 1)
        raise ConfigError(f"two input shards would write the same output {clash} (e.g. a.csv and a.parquet); "
                          "rename one of them")
    return shards


# ---------------------------------------------------------------------------------------------- patients
def _id_key(dtype: pl.DataType, label: str) -> pl.Expr:
    """``patient_id`` as Int64 or String (how the cohort reads it), so that ids compare across shards."""
    if dtype.is_integer():
        return pl.col("patient_id").cast(pl.Int64)
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.col("patient_id").cast(pl.String)
    raise DataError(f"input shard {label}: patient_id has dtype {dtype}, not an integer or a string",
                    table="visits", column="patient_id", rule="column_dtype")


def id_key(shard: Shard) -> pl.Expr:
    """The comparable patient-id expression of a shard (checks that the column exists)."""
    schema = shard.schema()
    if "patient_id" not in schema:
        raise DataError(f"input shard {shard.label} has no patient_id column", table="visits",
                        column="patient_id", rule="required_columns")
    return _id_key(schema["patient_id"], shard.label)


def unique_ids(shard: Shard) -> pl.Series:
    """The sorted distinct patient ids of a shard (only that column is read)."""
    key = id_key(shard)
    ids = shard.collect(shard.scan().select(key.unique().sort(nulls_last=True))).to_series()
    if ids.null_count():
        raise DataError(f"input shard {shard.label} has rows without a patient id", table="visits",
                        column="patient_id", rule="not_null")
    return ids


def check_partitioned(shards: Sequence[Shard]) -> list[int]:
    """Verify that no patient has visits in two shards; return the number of patients of each shard.

    Raises :class:`DataError` naming up to five such patients and their shards.
    """
    counts: list[int] = []
    hashes: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for number, shard in enumerate(shards):
        ids = unique_ids(shard)
        counts.append(ids.len())
        if len(shards) > 1:
            hashes.append(ids.hash(seed=_HASH_SEED).to_numpy())
            owners.append(np.full(ids.len(), number, dtype=np.int32))
    if len(shards) < 2:
        return counts
    keys = np.concatenate(hashes)
    owner = np.concatenate(owners)
    del hashes, owners
    order = np.argsort(keys, kind="stable")
    keys, owner = keys[order], owner[order]
    repeated = keys[1:] == keys[:-1]
    if not repeated.any():
        return counts
    candidates = np.unique(keys[1:][repeated])
    involved = np.unique(np.concatenate([owner[1:][repeated], owner[:-1][repeated]]))
    found = []
    for number in involved:
        ids = unique_ids(shards[number])
        hit = ids.filter(ids.hash(seed=_HASH_SEED).is_in(pl.Series(candidates).implode()))
        found.append(pl.DataFrame({"patient_id": hit, "shard": [shards[number].label] * hit.len()}))
    split = (pl.concat(found).group_by("patient_id").agg(pl.col("shard").sort())
             .filter(pl.col("shard").list.len() > 1).sort("patient_id"))
    if split.height:  # otherwise only hash collisions between different ids
        examples = "; ".join(f"{pid} in {', '.join(names)}" for pid, names in split.head(3).iter_rows())
        raise DataError(
            f"the visits of {split.height} patient(s) are split across input shards ({examples}); every patient's "
            "visits must be in one shard: repartition the input by patient (ehrseq.scoring.partition_by_patient) "
            "or score it as one table",
            table="visits", column="patient_id", rule="one_shard_per_patient",
            patient_ids=split.get_column("patient_id").head(5).to_list(), n_offending=split.height,
        )
    return counts


def read_chunks(shard: Shard, ids: pl.Series, patients_per_chunk: int, columns: Sequence[str] | None = None,
                ) -> Iterator[pl.DataFrame]:
    """The shard's visits, ``patients_per_chunk`` patients at a time (``ids`` sorted, from :func:`unique_ids`).

    ``columns`` restricts the columns read (those absent from the shard are left for validation to report).
    """
    query = shard.scan()
    if columns is not None:
        present = shard.schema()
        query = query.select([c for c in columns if c in present])
    n = ids.len()
    if n <= patients_per_chunk:
        yield shard.collect(query)
        return
    key = id_key(shard)
    for start in range(0, n, patients_per_chunk):
        low, high = ids[start], ids[min(n, start + patients_per_chunk) - 1]
        yield shard.collect(query.filter(key.is_between(pl.lit(low), pl.lit(high))))


# ---------------------------------------------------------------------------------------------- repartition
def partition_by_patient(source: Any, out_dir: str | os.PathLike[str], n_shards: int) -> list[Path]:
    """Rewrite a visit source as ``n_shards`` Parquet files partitioned by a hash of ``patient_id``.

    Every patient's visits end up in exactly one file ``part-NNNNN.parquet`` of ``out_dir`` (files of
    empty partitions are not written). Memory is bounded by the largest input shard: each input shard
    is split once into per-partition pieces in a staging folder, and each partition's pieces are then
    streamed into its file. Returns the files written.
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise ConfigError(f"n_shards must be a positive int, got {n_shards!r}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty")
    staging = out / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for number, shard in enumerate(list_shards(source)):
            key = id_key(shard)
            frame = shard.collect(shard.scan().with_columns((key.hash(seed=_HASH_SEED) % n_shards).alias("_part")))
            if frame.get_column("patient_id").null_count():
                raise DataError(f"input shard {shard.label} has rows without a patient id", table="visits",
                                column="patient_id", rule="not_null")
            for (part,), piece in frame.partition_by("_part", as_dict=True).items():
                folder = staging / f"{part:05d}"
                folder.mkdir(exist_ok=True)
                piece.drop("_part").write_parquet(folder / f"{number:05d}.parquet")
            del frame
        written = []
        for folder in sorted(staging.iterdir()):
            target = out / f"part-{folder.name}.parquet"
            partial = staging / f"{folder.name}.parquet"
            pl.scan_parquet(sorted(folder.glob("*.parquet"))).sink_parquet(partial)
            os.replace(partial, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
