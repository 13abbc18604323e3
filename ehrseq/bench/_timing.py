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
    return Timing(statistics.median(runs), min(runs), max(runs), repeats)


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
