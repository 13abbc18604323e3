"""Run independent array jobs on a few threads.

NumPy ufuncs, fancy indexing and Polars release the GIL on large arrays, so independent jobs (one
per feature column or per padded field) run in parallel on threads. The degree of parallelism is
``torch.get_num_threads()``: the one knob users already set for CPU work (a process that scores on
one core per worker sets it to 1, and then everything runs inline). Small inputs run inline too:
below :data:`MIN_PARALLEL_ELEMENTS` elements the thread hand-off costs more than it saves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

#: The environment variable that sizes Polars' own thread pool, read when Polars is imported: a scoring process
#: (a Dask worker, a benchmark's spawned process) sets it before it starts, to its torch threads.
POLARS_THREADS = "POLARS_MAX_THREADS"

#: Work (in array elements) below which jobs run inline.
MIN_PARALLEL_ELEMENTS = 1 << 20


def thread_map(fn: Callable[[T], R], items: Iterable[T], elements: int) -> list[R]:
    """``[fn(item) for item in items]``, on up to ``torch.get_num_threads()`` threads when the jobs
    touch ``elements`` array elements in total (at least :data:`MIN_PARALLEL_ELEMENTS`); results in
    input order, the first exception re-raised."""
    jobs = list(items)
    workers = min(torch.get_num_threads(), len(jobs))
    if workers < 2 or elements < MIN_PARALLEL_ELEMENTS:
        return [fn(item) for item in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs))
