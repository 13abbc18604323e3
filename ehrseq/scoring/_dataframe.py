"""Scoring a Dask data frame of visits: shuffled by patient, each partition scored by :func:`score_frame`.

::

    import dask.dataframe as dd
    visits = dd.read_parquet("visits/")                      # any partitioning
    predictions = ehrseq.scoring.score_partitions("pbc-model", visits, horizons=[365, 730])
    predictions.to_parquet("predictions/")                   # or .compute(), on any Dask scheduler

The result is a lazy Dask data frame (pandas partitions) in the prediction contract of
``data_specs/predictions.json``, with the rows :func:`score_frame` gives for the whole table: after
``visits.shuffle("patient_id")`` every partition holds all the visits of its patients, and each is
predicted on its own, ``visits.map_partitions(score_frame, ...)``. Rows are sorted within a partition,
not across partitions. Use it when the visits already are a Dask data frame; for Parquet files,
:func:`ehrseq.score` adds the manifest, atomic outputs and resume.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import polars as pl

from ehrseq.data.reader import from_pandas
from ehrseq.errors import ConfigError, DataError
from ehrseq.extras import require
from ehrseq.scoring._predict import DEFAULT_BATCH_SIZE, output_schema
from ehrseq.scoring._shard import ScoreOptions, _prepare, score_frame

if TYPE_CHECKING:
    import pandas as pd


def _check_codes(part: pd.DataFrame, codes: str | None) -> None:
    """Refuse codes lists that arrive as their text (``"['E11' 'I10']"``): Dask's ``convert-string``
    turns a pandas ``object`` column of lists into strings, which would be read as one unknown code."""
    if codes is None or codes not in part.columns:
        return
    values = part[codes].dropna()
    if values.empty or not isinstance(values.iloc[0], str):  # lists (object or Arrow), as they should be
        return
    listed = values[values.astype(str).str.match(r"^\[.*\]$")]
    if len(listed):
        raise DataError(
            f"the codes column {codes!r} holds lists written as text (e.g. {listed.iloc[0]!r}): Dask converts pandas "
            "object columns to strings. Build the Dask frame from Parquet (dask.dataframe.read_parquet), with Arrow "
            "list types (polars' to_pandas(use_pyarrow_extension_array=True)), or under "
            "dask.config.set({'dataframe.convert-string': False})", table="visits", column=codes, rule="codes_lists",
            patient_ids=part.loc[listed.index, "patient_id"].unique().tolist(), n_offending=len(listed))


def _score_partition(part: pd.DataFrame, model: Any, horizons: Any, meta: pd.DataFrame, codes: str | None,
                     keywords: dict[str, Any]) -> pd.DataFrame:
    """The predictions of one partition of whole patients, as pandas (``meta`` for an empty partition)."""
    if part.empty:
        return meta
    _check_codes(part, codes)
    return score_frame(model, part, horizons, **keywords).to_pandas()


def score_partitions(
    model: str | os.PathLike[str] | Any,
    visits: Any,
    horizons: float | list[float],
    *,
    at: str = "last",
    landmark: Any = None,
    cause: int | None = None,
    event: str | None = None,
    outcomes: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model_version: str | None = None,
    shuffle: bool = True,
) -> Any:
    """Lazy predictions (a ``dask.dataframe.DataFrame``) for a Dask data frame of visits.

    ``model`` is best the path of a saved model: each worker process loads it once. ``shuffle=False``
    skips the shuffle when every partition already holds all the visits of its patients. Other
    parameters as in :func:`ehrseq.score`. The model and the options are checked here, before any
    partition is computed.
    """
    require("dask", what="score_partitions")
    import dask.dataframe as dd

    if not isinstance(visits, dd.DataFrame):
        raise ConfigError(f"visits must be a dask.dataframe.DataFrame, got {type(visits).__name__}; score a Polars "
                          "or pandas table with score_frame or ehrseq.score")
    options = ScoreOptions(horizons, at, landmark, cause, event, outcomes, batch_size, model_version=model_version)
    estimator, _, request, _, outcome_table = _prepare(model, options)
    columns = from_pandas(visits._meta, estimator.cohort_settings.null_values).schema
    if "patient_id" not in columns or "time" not in columns:
        raise ConfigError(f"visits must have the columns patient_id and time, got {list(columns)}")
    schema = output_schema(columns["patient_id"], columns["time"], request, request.causes(estimator) is not None)
    meta = pl.DataFrame(schema=schema).to_pandas()
    keywords = {**options.keywords(), "outcomes": outcome_table}
    del keywords["horizons"], keywords["patients_per_chunk"]
    source = visits.shuffle("patient_id") if shuffle else visits
    return source.map_partitions(_score_partition, model if not isinstance(model, os.PathLike) else str(model),
                                 list(request.horizons), meta, estimator.features_.codes_column, keywords, meta=meta)
