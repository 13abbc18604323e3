"""One reader for every table ehrseq accepts, whatever the entry point (Python API, ``ehrseq`` commands).

A table source is

* a Polars ``DataFrame`` or ``LazyFrame``, or a pandas ``DataFrame`` (a named index becomes a column);
* a file: Parquet (``.parquet``, ``.pq``), CSV (``.csv``) or tab-separated (``.tsv``, ``.tab``);
* a folder (its table files, searched recursively; names starting with ``.`` or ``_`` are skipped, as
  Spark and Hive do), a glob pattern (``'visits/*.csv'``; the table files it matches, skipping the same
  names), or a list of files: their rows, stacked.

**Text files carry no types.** CSV columns are typed from their values (every row is read to decide;
ISO dates and datetimes become dates), and the strings of :data:`NULL_VALUES` — ``NA`` (R's
default), ``N/A``, ``n/a``, ``NaN``, ``NULL``, the empty field, ... — are missing values, so that a lab
written with R's ``NA`` stays a number. ``null_values=`` replaces that list. A pandas ``object`` column
holding numbers and null markers becomes a number column, and one mixing numbers with other text a text
column, as the same values in a CSV file would.

What the columns then mean (numeric or categorical features) is decided by the table contracts
(``data_specs/visits.json``, ``inference``), the same way for every source; explicit ``numeric=`` /
``categorical=`` declarations win over it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ehrseq.errors import ConfigError, DataError

#: Strings read as missing values in text files (and in text columns holding numbers), unless
#: ``null_values=`` says otherwise. Case matters: ``"None"`` or ``"na"`` may be real levels.
NULL_VALUES: tuple[str, ...] = ("", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "#N/A", ".")
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
TABLE_SUFFIXES = (*PARQUET_SUFFIXES, *TEXT_SUFFIXES)


def null_values(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """The null markers in force: ``values``, or :data:`NULL_VALUES` when ``None``."""
    if values is None:
        return NULL_VALUES
    markers = (values,) if isinstance(values, str) else tuple(values)
    if not all(isinstance(v, str) for v in markers):
        raise ConfigError(f"null_values must be strings, got {list(markers)!r}")
    return markers


def is_pandas(table: Any) -> bool:
    return type(table).__module__.startswith("pandas") and hasattr(table, "columns")


# ---------------------------------------------------------------------------------------------- files
def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def table_files(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], name: str,
                suffixes: Sequence[str] = TABLE_SUFFIXES) -> tuple[list[Path], Path]:
    """The files of a path source (a file, a folder, a glob or a list of files), resolved and in a stable
    order, and their common root (file names relative to it are stable across machines)."""
    if isinstance(source, (list, tuple)):
        if not source:
            raise ConfigError(f"the list of {name} files is empty")
        paths = [Path(p) for p in source]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ConfigError(f"{name} files do not exist: {', '.join(missing[:5])}")
        files = [p.resolve() for p in paths]
        if len(set(files)) != len(files):
            raise ConfigError(f"the list of {name} files names a file twice")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            root = path.resolve()
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                           and not _hidden(p.relative_to(root)))
            if not files:
                raise ConfigError(f"no {' / '.join(suffixes)} file under the {name} folder {path}")
            return files, root
        if path.is_file():
            files = [path.resolve()]
        elif glob.has_magic(str(source)):
            # as in a folder: table files only, names starting with "." or "_" skipped (Spark's _SUCCESS)
            files = sorted({Path(p).resolve() for p in glob.glob(str(source), recursive=True)
                            if Path(p).is_file() and Path(p).suffix.lower() in suffixes and not _hidden(Path(Path(p).name))})
            if not files:
                raise ConfigError(f"no {' / '.join(suffixes)} file matches {source}")
        else:
            raise ConfigError(f"{name} table {source} does not exist")
    else:
        raise ConfigError(f"the {name} table must be a DataFrame, a LazyFrame, a file, a folder, a glob pattern or a "
                          f"list of files, got {type(source).__name__}")
    unknown = [str(p) for p in files if p.suffix.lower() not in suffixes]
    if unknown:
        raise ConfigError(f"{name} table {unknown[0]}: expected a {', '.join(suffixes)} file")
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    return files, root


def scan_file(path: Path, null: Sequence[str] | str | None = None) -> pl.LazyFrame:
    """A lazy scan of one table file (see the module docstring for how text files are typed)."""
    separator = TEXT_SUFFIXES.get(path.suffix.lower())
    if separator is None:
        return pl.scan_parquet(path)
    return pl.scan_csv(path, separator=separator, null_values=list(null_values(null)), try_parse_dates=True,
                       infer_schema_length=None)


def _read_file(path: Path, name: str, null: Sequence[str] | str | None) -> pl.DataFrame:
    try:
        frame = scan_file(path, null).collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read the {name} table {path}: {detail}", table=name) from exc
    if path.suffix.lower() in TEXT_SUFFIXES:  # an empty text column has no type: let other files give it one
        empty = [c for c, d in frame.schema.items() if d == pl.String and frame[c].null_count() == frame.height]
        frame = frame.with_columns(pl.col(c).cast(pl.Null) for c in empty) if empty else frame
    return frame


# ---------------------------------------------------------------------------------------------- pandas
def from_pandas(table: Any, null: Sequence[str] | str | None = None) -> pl.DataFrame:
    """A Polars frame from a pandas DataFrame; a named index becomes a column. ``object`` columns that
    Arrow cannot convert are read value by value (see :func:`_object_column`)."""
    if any(n is not None for n in table.index.names):
        table = table.reset_index()
    try:
        return pl.from_pandas(table)
    except Exception:  # pyarrow's ArrowInvalid / ArrowTypeError: found and explained column by column below
        pass
    columns = []
    for column in table.columns:
        try:
            columns.append(pl.from_pandas(table[[column]]).to_series())
        except Exception:
            columns.append(_object_column(table[column], str(column), null))
    return pl.DataFrame(columns)


def _object_column(series: Any, column: str, null: Sequence[str] | str | None) -> pl.Series:
    """A pandas ``object`` column Arrow cannot convert (numbers mixed with text): numbers and null markers
    only give Float64; otherwise every value as text (null markers and NaN missing), which the inference
    rules then read like the same column of a CSV file."""
    markers = set(null_values(null))
    values = [None if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and v.strip() in markers)
              else v for v in series.tolist()]
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return pl.Series(column, [None if v is None else float(v) for v in values], dtype=pl.Float64)
    return pl.Series(column, [None if v is None else str(v) for v in values], dtype=pl.String)


# ---------------------------------------------------------------------------------------------- tables
def read_table(source: Any, name: str = "table", *, null_values: Sequence[str] | str | None = None) -> pl.DataFrame:
    """A Polars DataFrame from any table source (see the module docstring); files are read whole, and the
    rows of several files stacked (columns matched by name; a column missing from a file is null there).

    Raises :class:`ConfigError` for a source that does not exist and :class:`DataError` for one that
    cannot be read (naming the file).
    """
    if isinstance(source, pl.DataFrame):
        return source
    if isinstance(source, pl.LazyFrame):
        try:
            return source.collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"cannot compute the {name} table: {str(exc).strip().splitlines()[0]}", table=name) from exc
    if is_pandas(source):
        return from_pandas(source, null_values)
    files, _ = table_files(source, name)
    frames = [_read_file(path, name, null_values) for path in files]
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"the {name} files do not share column types: {str(exc).strip().splitlines()[0]}",
                        table=name) from exc
