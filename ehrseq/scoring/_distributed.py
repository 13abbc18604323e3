"""A planned scoring run executed on a Dask cluster: one task per pending shard, recorded as it completes.

The driver keeps what :func:`ehrseq.scoring.plan` set up — the manifest, the output directory, resume —
and the workers only score shards (:func:`ehrseq.scoring._engine.score_on_worker`) and return their
records. At most twice as many shards as the cluster has worker threads are submitted at a time, so
that a failure stops the run after the shards already under way: those complete and are recorded,
the first error is raised, and the completed outputs and the manifest stay valid.

A worker that dies during a shard (killed, out of memory, its machine lost) is not an error: Dask
runs the shard again on another worker (up to ``distributed.scheduler.allowed-failures`` times). The
output is the same, since a shard's output depends only on the shard, and it is written to a
temporary file renamed into place when complete; the temporary files of dead workers are removed at
the end of the run.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask.config
from distributed import Client, Future, as_completed

from ehrseq.scoring._engine import score_on_worker
from ehrseq.scoring._run import ScorePlan
from ehrseq.scoring._sources import Shard


def _absolute(shard: Shard) -> Shard:
    """The shard with an absolute path (workers may run in another directory)."""
    return shard if shard.path is None else replace(shard, path=shard.path.resolve())


def _identity(value: Any) -> Any:
    return value


def _shared(client: Client, value: Any, key: str) -> Future:
    """``value`` (the options, with the outcome table) as the result of one task that every shard's task reads:
    sent to the cluster once, and recomputed by the scheduler from the task itself if every worker holding it
    dies — data scattered to the workers would be lost with them, and the run with it (a cluster of one worker
    whose process is killed). Its size is expected, so Dask's large-graph warning is not raised for it."""
    with dask.config.set({"distributed.admin.large-graph-warning-threshold": "1TiB"}):
        return client.submit(_identity, value, key=key, pure=False)


def _window(client: Client) -> int:
    """Shards kept submitted at a time: two per worker thread of the cluster as it is now."""
    return max(2, 2 * sum(client.nthreads().values()))


def run_plan(client: Client, prepared: ScorePlan, model_path: str, model_id: str, bar: Any) -> None:
    """Score ``prepared.pending`` on the cluster of ``client``, recording each shard as it completes and
    advancing ``bar`` by its patients; raise the first error after the shards under way have completed."""
    out_dir = str(prepared.out_dir.resolve())
    run = uuid.uuid4().hex[:8]
    options = _shared(client, prepared.options, f"ehrseq-options-{run}")
    waiting = iter(prepared.pending)
    running = as_completed(loop=client.loop)
    error: BaseException | None = None

    def submit() -> None:
        while running.count() < _window(client):
            shard = next(waiting, None)
            if shard is None:
                return
            running.add(client.submit(score_on_worker, model_path, model_id, _absolute(shard), out_dir, options,
                                      key=f"ehrseq-score-{run}-{shard.name}", pure=False))

    try:
        submit()
        for future in running:
            try:
                entry = future.result()
            except Exception as exc:  # keep the first error; let the shards under way finish
                error = error or exc
                continue
            finally:
                future.release()
            prepared.record(entry)
            bar.update(entry["patients_in"])
            if error is None:
                submit()
    finally:
        options.release()
        remove_stale_partials(prepared.out_dir)
    if error is not None:
        raise error


def remove_stale_partials(out_dir: Path) -> None:
    """Remove the temporary output files left by workers that died while writing them."""
    for stale in out_dir.rglob(".*.tmp"):
        if stale.is_file():
            os.unlink(stale)
