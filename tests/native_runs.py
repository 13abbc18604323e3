"""Runs of a computation for the native-kernel tests: at several thread counts, and with and without the kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

from ehrseq.models.distributions import _native

Result = TypeVar("Result")


def at_thread_counts(run: Callable[[], Result], counts: tuple[int, ...] = (1, 3)) -> list[Result]:
    """``run()`` once per thread count in ``counts``, the caller's count restored afterwards."""
    threads = torch.get_num_threads()
    results = []
    for count in counts:
        torch.set_num_threads(count)
        try:
            results.append(run())
        finally:
            torch.set_num_threads(threads)
    return results


def natively_and_without(run: Callable[[], Result]) -> tuple[Result, Result]:
    """``run()`` with the native kernels, then with their PyTorch implementations (``_native.disabled()``)."""
    natively = run()
    with _native.disabled():
        return natively, run()
