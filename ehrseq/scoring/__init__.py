"""Batch scoring: visit tables in, Parquet prediction shards out, with bounded memory, atomic outputs and resume.

::

    import ehrseq
    summary = ehrseq.score("pbc-model", "visits/", "predictions/", horizons=[365, 730, 1825])
    print(summary)                       # patients, rows in/out, dropped rows by reason, model id
    predictions = summary.scan().collect()

**Input.** ``visits`` is a DataFrame (Polars or pandas) or LazyFrame, a Parquet file, a glob pattern, a
directory of Parquet files (searched recursively, skipping names that start with ``.`` or ``_``), or a
list of Parquet files. Each file is one *shard*; every patient's visits must be in one shard. This is
checked before anything is scored (a :class:`~ehrseq.DataError` names the patients and their shards);
:func:`partition_by_patient` rewrites a source that breaks the rule. Shards are read lazily, only the
columns the model uses, ``patients_per_chunk`` patients at a time, and validated with the model's own
table settings. ``outcomes=`` (optional) drops visits at or after each patient's outcome, as in
:meth:`~ehrseq.DynamicSurvival.predict_risk`.

**Output.** One Parquet file per input shard, at the shard's relative path under ``out_dir`` (an
in-memory table gives ``part-00000.parquet``), in the prediction contract of
``data_specs/predictions.json``: ``patient_id, visit_time, horizon, risk, survival, median_remaining,
model_id, model_version`` (+ ``cause`` for competing risks, + ``landmark`` after ``patient_id`` for
landmark predictions), one row per (patient, selected visit, horizon[, cause]), sorted in that order.
The values are those of ``predict_risk`` / ``predict_survival`` / ``predict_median`` on the same data
(see :mod:`ehrseq.scoring._predict`). ``model_id`` is a stable hash of the saved model files
(:func:`model_id`); ``model_version`` a label (default: the ehrseq version that saved the model). Read
the outputs with ``pl.scan_parquet("predictions/**/*.parquet")`` or ``summary.scan()``.

**Memory.** Peak memory depends on ``patients_per_chunk``, ``batch_size`` and the model, not on the
cohort: shards are streamed chunk by chunk and each chunk's predictions are written (as one row group)
before the next is read. The partition check holds 12 bytes per patient (8 MB per million patients).

**Atomic outputs, manifest and resume.** Each output file is written to a hidden temporary file and
renamed into place when complete; ``_manifest.json`` (rewritten atomically after every shard) records
the model id and version, the settings, the input shards (path, bytes, rows), and for every completed
output its row counts (visit rows in, prediction rows out, visits and patients dropped, by reason, as
in the cohort report), size and SHA-256. An interrupted run is completed with ``resume=True``: outputs
whose checksum matches are kept, the others are scored again, and no patient is lost or duplicated; a
different model, other settings, or a changed input shard is refused. A malformed shard raises a
:class:`~ehrseq.DataError` naming the shard and the patients, and leaves the completed outputs and the
manifest valid.

**Dask.** With the ``dask`` extra (``pip install 'ehrseq[dask]'``), ``num_workers=N`` scores the shards
on a Dask ``distributed.LocalCluster`` of N worker processes started for the run, and
``scheduler="tcp://host:8786"`` (or a ``distributed.Client``) on an existing cluster — the same plan
either way (:mod:`ehrseq.scoring._distributed`). The driver plans, keeps the manifest and records each
shard as it completes; every shard is one task; every worker loads the saved model once, verifying its
checksums, and keeps it. A worker that dies mid-shard has its shard run again elsewhere, with the same
output. On an existing cluster the model must be a saved directory, and the model, the input files and
``out_dir`` must be paths every worker can read (a shared file system)::

    summary = ehrseq.score("pbc-model", "visits/", "predictions/", horizons=[365, 730], num_workers=4)
    summary = ehrseq.score("/shared/pbc-model", "/shared/visits/", "/shared/predictions/", horizons=[365, 730],
                           scheduler="tcp://scheduler-host:8786")

:func:`plan` and :func:`score_shard` are the two halves for any other executor: the driver calls
``plan``, workers call ``score_shard`` with the *path* of the saved model (loaded once per process),
and the driver passes each record to ``run.record``::

    run = ehrseq.scoring.plan("pbc-model", "visits/", "predictions/", horizons=[365, 730])
    work = functools.partial(ehrseq.scoring.score_shard, "pbc-model", out_dir="predictions/", **run.options)
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        for record in pool.map(work, run.pending):
            run.record(record)

Visits that already are a Dask data frame are scored by :func:`score_partitions`: shuffled by patient,
each partition predicted by :func:`score_frame`, the prediction rows returned as a Dask data frame.
"""

from ehrseq.scoring._dataframe import score_partitions
from ehrseq.scoring._model import ModelIdentity, model_id
from ehrseq.scoring._predict import DEFAULT_BATCH_SIZE
from ehrseq.scoring._run import ScorePlan, ScoreSummary, plan, score
from ehrseq.scoring._shard import DEFAULT_PATIENTS_PER_CHUNK, score_frame, score_shard
from ehrseq.scoring._sources import Shard, list_shards, partition_by_patient

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PATIENTS_PER_CHUNK",
    "ModelIdentity",
    "ScorePlan",
    "ScoreSummary",
    "Shard",
    "list_shards",
    "model_id",
    "partition_by_patient",
    "plan",
    "score",
    "score_frame",
    "score_partitions",
    "score_shard",
]
