"""Mini-batch loading: a seeded length-bucketing batch sampler and `make_loader`.

Bucketing keeps padding small: each epoch the patients are shuffled, cut into chunks of
``batch_size · bucket_factor`` patients, sorted by history length within a chunk and cut into
batches, and the batches are shuffled. Every patient appears exactly once per epoch. Without
shuffling, patients are sorted by length (stable) before batching.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ehrseq.data.sequence import SequenceData
from ehrseq.errors import ConfigError


class LengthBucketSampler(Sampler[list[int]]):
    """Batch sampler over patients with seeded shuffling and optional bucketing by length.

    Parameters
    ----------
    lengths:
        History length of every patient, ``[P]``.
    batch_size, drop_last:
        As in :class:`torch.utils.data.DataLoader`.
    shuffle, seed:
        Epoch e uses the random stream ``(seed, e)``; :meth:`set_epoch` chooses e (it advances by
        one after each pass otherwise).
    bucket_by_length, bucket_factor:
        Sort patients by length within chunks of ``batch_size · bucket_factor`` before batching.
    sampler:
        An index sampler giving this process's patients each epoch (e.g.
        :class:`torch.utils.data.distributed.DistributedSampler`); batches are built from its
        indices, and ``set_epoch`` is forwarded to it.
    """

    def __init__(
        self,
        lengths: torch.Tensor | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        bucket_by_length: bool = True,
        bucket_factor: int = 50,
        drop_last: bool = False,
        sampler: Iterable[int] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(bucket_factor, int) or bucket_factor < 1:
            raise ConfigError(f"bucket_factor must be a positive int, got {bucket_factor!r}")
        self.lengths = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.bucket_by_length = bucket_by_length
        self.bucket_factor = bucket_factor
        self.drop_last = drop_last
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def _indices(self) -> np.ndarray:
        if self.sampler is not None:
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        return np.arange(len(self.lengths), dtype=np.int64)

    def _n_indices(self) -> int:
        return len(self.sampler) if isinstance(self.sampler, Sized) else len(self.lengths)

    def __len__(self) -> int:
        n = self._n_indices()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        indices = self._indices()
        if self.shuffle and self.sampler is None:
            indices = rng.permutation(indices)
        if self.bucket_by_length:
            chunk = self.batch_size * self.bucket_factor
            chunk_id = np.arange(len(indices)) // chunk if self.shuffle else np.zeros(len(indices), dtype=np.int64)
            indices = indices[np.lexsort((self.lengths[indices], chunk_id))]
        n_batches = len(self)
        starts = np.arange(n_batches) * self.batch_size
        order = rng.permutation(n_batches) if self.shuffle else np.arange(n_batches)
        for b in order:
            yield indices[starts[b]: starts[b] + self.batch_size].tolist()


def make_loader(
    data: SequenceData,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    bucket_by_length: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    sampler: Iterable[int] | None = None,
    bucket_factor: int = 50,
    **loader_options: Any,
) -> DataLoader:
    """A :class:`torch.utils.data.DataLoader` of :class:`ehrseq.data.SequenceBatch` over ``data``.

    Batches come from a :class:`LengthBucketSampler` (seeded; every patient exactly once per epoch;
    bucketed by length within pools of ``bucket_factor`` batches unless ``bucket_by_length=False``);
    each batch is padded to its own longest history in a single vectorized gather. ``sampler`` restricts each epoch to the indices it yields
    (e.g. a ``DistributedSampler`` for this rank); call ``loader.batch_sampler.set_epoch(e)`` to
    choose the epoch explicitly. Extra keyword arguments go to the DataLoader.
    """
    batch_sampler = LengthBucketSampler(
        data.lengths, batch_size, shuffle=shuffle, seed=seed, bucket_by_length=bucket_by_length,
        bucket_factor=bucket_factor, drop_last=drop_last, sampler=sampler,
    )
    return DataLoader(
        data, batch_sampler=batch_sampler, collate_fn=SequenceData.collate, num_workers=num_workers,
        pin_memory=pin_memory, **loader_options,
    )
