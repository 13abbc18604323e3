"""The Dask cluster of a scoring run, and what its workers do.

:func:`connect` gives a ``distributed.Client``: of a ``LocalCluster`` of ``num_workers`` worker processes
started for the run (one task at a time each) and closed after it, of an existing cluster reached at a
scheduler address (``"tcp://host:8786"``), or the caller's own client (left open).

:class:`LoadModel` is a worker plugin: every worker — those present when the run starts and those that
join or are restarted later — loads the saved model once, verifying its checksums
(:meth:`ehrseq.DynamicSurvival.load`), and keeps it in the process cache of
:func:`ehrseq.scoring._model.resolve_model`. :func:`score_on_worker`, the task of one shard, finds it
there and checks that it is the model the driver planned with (its id), so a worker that reads another
directory at the same path cannot write predictions of another model.

This module imports ``distributed``; it is only imported when a run uses Dask (the ``dask`` extra).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import torch
from distributed import Client, LocalCluster, WorkerPlugin

from ehrseq.data._parallel import POLARS_THREADS
from ehrseq.errors import ConfigError, option
from ehrseq.scoring._heap import keep_large_allocations_on_the_heap
from ehrseq.scoring._model import resolve_model
from ehrseq.scoring._shard import score_shard
from ehrseq.scoring._sources import Shard

#: The variable Dask's nannies set for their workers (see ehrseq.scoring._heap)
TRIM = "MALLOC_TRIM_THRESHOLD_"
#: How long to wait for an existing scheduler to answer, and for it to have a worker.
CONNECT_TIMEOUT = "20s"
WORKERS_TIMEOUT = 60.0
#: Periodic work of a local cluster's processes made less frequent (Dask's defaults in brackets): the event-loop
#: health check of the scheduler, every nanny and every worker (20 ms), their system monitors (500 ms) and the
#: nannies' memory checks (100 ms). An idle cluster of 2 workers used 0.8–0.9 CPU-s per 10 s with the defaults and
#: 0.13 with these — on the cores that score. A worker over its memory limit is still paused or restarted, within
#: a second.
QUIET_LOCAL_CLUSTER = {"distributed.admin.tick.interval": "500ms",
                       "distributed.admin.system-monitor.interval": "5s",
                       "distributed.worker.memory.monitor-interval": "1s"}


def check_engine(num_workers: int, scheduler: Any) -> None:
    """Refuse a scheduler that is neither an address nor a ``distributed.Client``, or both engines at once
    (checked without importing Dask)."""
    if scheduler is None:
        return
    if num_workers:
        raise ConfigError(f"{option('num_workers', num_workers, flag=f'--workers {num_workers}')} starts a local "
                          f"cluster and {option('scheduler', flag='--scheduler')} uses an existing one; pass one "
                          "of them")
    if isinstance(scheduler, str):
        if not scheduler.strip():
            raise ConfigError(f"{option('scheduler', flag='--scheduler')} must be a scheduler address such as "
                              "'tcp://host:8786'")
        return
    if type(scheduler).__name__ != "Client" or not type(scheduler).__module__.startswith("distributed"):
        raise ConfigError(f"scheduler must be a Dask scheduler address ('tcp://host:8786') or a distributed.Client, "
                          f"got {type(scheduler).__name__}")


@contextlib.contextmanager
def connect(num_workers: int, scheduler: str | Client | None, scratch: Path, threads: int | None = None
            ) -> Iterator[Client]:
    """A client of the run's cluster (see the module docstring); ``scratch`` holds a local cluster's files.

    The workers of a local cluster read Parquet and encode features on ``threads`` Polars threads
    (``POLARS_MAX_THREADS``, set before they start; ``None``: Polars' default, one per core), as they run torch on
    ``threads`` threads: with Polars' default pool every worker competes for all the cores (1,000,000 patients on
    2 workers and 2 cores: 55.5–55.7 CPU-s with it, 50.7–54.9 with one Polars thread per worker)."""
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler is None:
        environ = {name: value for name, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                   if name != TRIM}  # see ehrseq.scoring._heap
        if threads is not None:
            environ[POLARS_THREADS] = str(threads)
        with dask.config.set({"temporary-directory": str(scratch),  # scheduler and workers alike
                              "distributed.nanny.pre-spawn-environ": environ,
                              # the workers' sampling profiler (every 10 ms) cost a third of their CPU time
                              "distributed.worker.profile.enabled": False,
                              **QUIET_LOCAL_CLUSTER}):
            cluster = LocalCluster(n_workers=num_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   local_directory=str(scratch), silence_logs=logging.ERROR)
        with cluster, Client(cluster, set_as_default=False) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start one with `dask scheduler` "
                          f"and its workers with `dask worker {scheduler}`, or correct "
                          f"{option('scheduler', flag='--scheduler')}") from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except TimeoutError as exc:
            raise ConfigError(f"the Dask scheduler at {scheduler!r} has no worker (waited {WORKERS_TIMEOUT:.0f} s); "
                              f"start some with `dask worker {scheduler}`") from exc
        yield client


class LoadModel(WorkerPlugin):
    """Load the saved model at ``path`` once in every worker process, with ``threads`` torch threads
    (``None``: the worker's own setting)."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        self.path = path
        self.threads = threads
        self.name = f"ehrseq-model-{path}"

    def setup(self, worker: Any) -> None:
        keep_large_allocations_on_the_heap()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        resolve_model(self.path)


def loaded_model_id(path: str) -> str:
    """The id of the model at ``path`` in this process (loaded and verified once, then cached)."""
    return resolve_model(path)[1].id


def score_on_worker(model_path: str, model_id: str, shard: Shard, out_dir: str, options: dict[str, Any],
                    ) -> dict[str, Any]:
    """The task of one shard: :func:`ehrseq.scoring.score_shard` with the worker's cached model, after
    checking that it is the planned model."""
    found = loaded_model_id(model_path)
    if found != model_id:
        raise ConfigError(f"the model directory {model_path} on worker host {socket.gethostname()} (process "
                          f"{os.getpid()}) holds model {found}, not the model being scored ({model_id}); every "
                          "worker must read the same saved model")
    return score_shard(model_path, shard, out_dir, **options)
