"""Data-parallel training batches: every rank takes its rows of the batch one process would train on.

Under ``torchrun`` each of the W ranks iterates the same single-process loader (same seed, so the same
batches in the same order, and the same sampled prediction times), and :class:`RankSlices` keeps rank
r's share of each batch: its rows ``tensor_split(range(B), W)[r]``, contiguous and as equal as B
allows. The trainer weighs each rank's loss by its share of the batch's patient weight (see
:class:`ehrseq.train.Trainer`), so the gradient averaged over the ranks is the gradient of the
batch's loss in one process: a distributed run takes the same optimiser steps as one process, up to
floating-point rounding. A rank left without a row (a last batch of fewer than W patients) gets one
row of weight 0, which adds nothing.

Each rank collates the whole batch and keeps its rows; the model's forward and backward passes — the
cost of training — are what the ranks share.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ehrseq.data.batch import SequenceBatch
from ehrseq.errors import ConfigError


def rank_rows(batch_size: int, rank: int, world: int) -> torch.Tensor:
    """The rows of a batch of ``batch_size`` patients that rank ``rank`` of ``world`` trains on."""
    return torch.tensor_split(torch.arange(batch_size), world)[rank]


def take_rows(batch: SequenceBatch, rows: torch.Tensor) -> SequenceBatch:
    """The patients ``rows`` of ``batch`` (every tensor is indexed along its first, patient, axis)."""
    rows = rows.to(batch.device)
    return batch.replace(**{name: tensor[rows] for name, tensor in batch.tensors().items()})


def rank_batch(batch: SequenceBatch, rank: int, world: int) -> SequenceBatch:
    """Rank ``rank``'s share of ``batch`` (a weight-0 patient when the share is empty)."""
    rows = rank_rows(batch.batch_size, rank, world)
    if rows.numel():
        return take_rows(batch, rows)
    empty = take_rows(batch, torch.zeros(1, dtype=torch.long))
    weight = torch.zeros(1, dtype=torch.float32, device=batch.device)
    return empty.replace(weight=weight)


class RankSlices:
    """A training loader that yields rank ``rank``'s share of each batch of ``loader`` (see the module
    docstring). ``len`` and the wrapped loader's attributes (``sampler``, ``batch_sampler``: the trainer
    calls their ``set_epoch``) are the wrapped loader's."""

    def __init__(self, loader: Iterable[SequenceBatch], rank: int, world: int) -> None:
        if not 0 <= rank < world:
            raise ConfigError(f"rank must be in 0..{world - 1}, got {rank}")
        self.loader = loader
        self.rank = rank
        self.world = world

    def __iter__(self) -> Iterator[SequenceBatch]:
        for batch in self.loader:
            yield rank_batch(batch, self.rank, self.world)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["loader"], name)
