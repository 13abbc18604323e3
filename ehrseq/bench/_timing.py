"""Timing and table helpers shared by the benchmark modules of :mod:`ehrseq.bench`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated calls: median, fastest and slowest run, number of runs."""

    median: float
    best: float
    worst: float
    repeats: int

    @property
    def median_ms(self) -> float:
        return 1e3 * self.median

    @classmethod
    def of(cls, runs: Sequence[float]) -> Timing:
        """The timing of these runs (seconds)."""
        return cls(statistics.median(runs), min(runs), max(runs), len(runs))


def measure(fn: Callable[[], object], *, repeats: int, warmup: int = 3) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls (CUDA is synchronised around each call)."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        runs.append(time.perf_counter() - start)
    return Timing.of(runs)


def measure_alternating(
    fn: Callable[[], object], reference: Callable[[], object], *, repeats: int, warmup: int = 3
) -> tuple[Timing, Timing]:
    """Time ``fn()`` and ``reference()`` alternately, ``repeats`` runs of each after ``warmup`` untimed pairs.

    Each run of ``fn`` is followed by one of ``reference``, so both see the same phases of a machine
    whose speed changes during a benchmark: the ratio of their medians is the stable figure.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
        reference()
    sync()
    fn_runs: list[float] = []
    reference_runs: list[float] = []
    for _ in range(repeats):
        for call, runs in ((fn, fn_runs), (reference, reference_runs)):
            start = time.perf_counter()
            call()
            sync()
            runs.append(time.perf_counter() - start)
    return Timing.of(fn_runs), Timing.of(reference_runs)


def environment_line() -> str:
    """One line naming the torch version, device and CPU threads the figures were measured with."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU thread(s)"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])
