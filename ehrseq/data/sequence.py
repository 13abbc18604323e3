"""Tensorization: a cohort and a fitted feature pipeline -> `SequenceData`, a flat CSR-like store.

Visit rows are stored flat (``[N, ...]``, patients contiguous, time-ordered within) with patient
offsets ``[P + 1]``; codes are a second CSR level (``code_values [nnz]``, ``code_offsets [N + 1]``).
A batch of patients is padded to its longest history with one gather/scatter per field — no
Python loop over patients or visits.

Padded positions hold: 0 for inputs, ``mask`` False, ``bin`` −1, ``remaining`` 1 and ``upper`` 2
(finite and ordered, so that no per-visit likelihood term is NaN or infinite before masking).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from ehrseq.data._parallel import thread_map
from ehrseq.data._ragged import ragged_rows
from ehrseq.data.batch import PAD_INDEX, SequenceBatch
from ehrseq.errors import ConfigError

if TYPE_CHECKING:
    from ehrseq.data.cohort import Cohort
    from ehrseq.data.features import FeaturePipeline
    from ehrseq.data.grid import TimeGrid

#: Values at padded positions of the target fields.
PAD_REMAINING = 1.0
PAD_UPPER = 2.0
PAD_BIN = -1


def _filled(shape: tuple[int, ...], fill: float, dtype: np.dtype) -> np.ndarray:
    """An array of ``fill``; zeros come from calloc'd pages, so untouched padding costs nothing."""
    return np.zeros(shape, dtype=dtype) if fill == 0 else np.full(shape, fill, dtype=dtype)


def _scatter_rows(out: np.ndarray, dst: np.ndarray, array: np.ndarray, src: np.ndarray | None,
                  block: int = 8192) -> None:
    """``out[dst] = array[src]`` (``array`` itself when ``src`` is None): by the native row gather where it is
    built (one pass, whatever the layout of ``array``), else by NumPy, a column-major ``array`` in blocks of rows,
    so that the reads of its F columns and the writes of the block's output rows stay in cache.
    """
    from ehrseq.models.distributions import _native

    if _native.gather_rows(out, dst, array, src):
        return
    if array.ndim == 1 or array.flags.c_contiguous:
        out[dst] = array if src is None else array[src]
        return
    for start in range(0, len(dst), block):
        rows = slice(start, start + block)
        out[dst[rows]] = array[rows] if src is None else array[src[rows]]


def _tensor(array: np.ndarray, dtype: np.dtype | type) -> torch.Tensor:
    """A tensor of ``dtype`` sharing memory with ``array`` when possible (any layout; one copy at most)."""
    converted = array.astype(dtype, copy=False)
    if not converted.flags.writeable:
        converted = converted.copy(order="K")
    return torch.from_numpy(converted)


class SequenceData(Dataset):
    """Per-patient dataset of encoded visit histories; ``data[i]`` is a one-patient batch.

    Visit-level (N visit rows): ``numeric [N, F]``, ``numeric_missing [N, F]``, ``categorical [N, C]``,
    ``time [N]`` (days since origin), ``gap [N]``, and for labelled data ``remaining [N]``,
    ``upper [N]``, ``bin [N]``. Codes: ``code_values [nnz]``, ``code_offsets [N + 1]``.
    Patient-level (P patients): ``offsets [P + 1]``, ``event [P]``, ``weight [P]``, optional
    ``entry [P]`` and ``event_times`` / ``event_flags`` / ``event_at_risk [P, E]``.

    ``max_visits`` truncates every history to its most recent visits when batching (event_visit is
    then the last kept visit; times and gaps are unchanged).
    """

    def __init__(
        self,
        *,
        offsets: torch.Tensor,
        numeric: torch.Tensor,
        numeric_missing: torch.Tensor,
        categorical: torch.Tensor,
        code_values: torch.Tensor,
        code_offsets: torch.Tensor,
        time: torch.Tensor,
        gap: torch.Tensor,
        remaining: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
        bin: torch.Tensor | None = None,  # noqa: A002 - the SequenceBatch field name
        event: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        entry: torch.Tensor | None = None,
        event_times: torch.Tensor | None = None,
        event_flags: torch.Tensor | None = None,
        event_at_risk: torch.Tensor | None = None,
        patient_ids: pl.Series | None = None,
        max_visits: int | None = None,
    ) -> None:
        if max_visits is not None and (not isinstance(max_visits, int) or max_visits < 1):
            raise ConfigError(f"max_visits must be a positive int or None, got {max_visits!r}")
        self.offsets = offsets
        self.numeric, self.numeric_missing, self.categorical = numeric, numeric_missing, categorical
        self.code_values, self.code_offsets = code_values, code_offsets
        self.time, self.gap = time, gap
        self.remaining, self.upper, self.bin = remaining, upper, bin
        self.event, self.weight, self.entry = event, weight, entry
        self.event_times, self.event_flags, self.event_at_risk = event_times, event_flags, event_at_risk
        self.patient_ids = patient_ids
        self.max_visits = max_visits

    # ------------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> SequenceBatch:
        return self.batch([index])

    def __getitems__(self, indices: Sequence[int]) -> SequenceBatch:
        """Batched fetch used by ``torch.utils.data.DataLoader``: the whole batch in one gather."""
        return self.batch(indices)

    @staticmethod
    def collate(batch: SequenceBatch) -> SequenceBatch:
        """``collate_fn`` for a DataLoader over this dataset (batches are built by ``__getitems__``)."""
        return batch

    @property
    def has_targets(self) -> bool:
        return self.remaining is not None

    @property
    def lengths(self) -> torch.Tensor:
        """Visits per patient as batched (after ``max_visits``), ``[P]`` int64."""
        lengths = self.offsets[1:] - self.offsets[:-1]
        return lengths if self.max_visits is None else lengths.clamp(max=self.max_visits)

    # ------------------------------------------------------------------ batching
    def batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray,
              max_visits: int | None = None) -> SequenceBatch:
        """Pad the patients at ``indices`` (in that order) to their longest history.

        ``max_visits`` overrides the dataset's truncation for this batch. Every field is built with
        one scatter into a zero-initialised array (row r of patient b goes to position b·M + m); the
        fields of a large batch are padded on parallel threads (see :mod:`ehrseq.data._parallel`).
        """
        idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"patient indices must be in [0, {len(self)}), got {idx.min()}..{idx.max()}")
        limit = self.max_visits if max_visits is None else max_visits
        offsets = self.offsets.numpy()
        end = offsets[idx + 1]
        n = end - offsets[idx]
        if limit is not None:
            n = np.minimum(n, limit)
        b = len(idx)
        m = int(n.max()) if b else 0
        whole = b == len(self) and int(n.sum()) == len(self.time) and np.array_equal(idx, np.arange(b))
        src = None if whole else ragged_rows(end - n, n)
        dst = ragged_rows(np.arange(b, dtype=np.int64) * m, n)

        def pad(values: torch.Tensor, fill: float = 0) -> torch.Tensor:
            array = values.numpy()
            out = _filled((b * m, *array.shape[1:]), fill, array.dtype)
            _scatter_rows(out, dst, array, src)
            return torch.from_numpy(out).view(b, m, *array.shape[1:])

        fields: dict[str, tuple[Any, float]] = {
            "numeric": (self.numeric, 0), "numeric_missing": (self.numeric_missing, 0),
            "categorical": (self.categorical, PAD_INDEX), "time": (self.time, 0), "gap": (self.gap, 0),
        }
        if self.remaining is not None:
            fields.update(remaining=(self.remaining, PAD_REMAINING), upper=(self.upper, PAD_UPPER),
                          bin=(self.bin, PAD_BIN))
        jobs: list[Callable[[], torch.Tensor]] = [lambda: self._pad_codes(src, dst, b, m)]
        jobs += [functools.partial(pad, values, fill) for values, fill in fields.values()]
        codes, *padded = thread_map(lambda job: job(), jobs, elements=len(dst) * self.numeric.shape[1])
        batch = SequenceBatch(
            **dict(zip(fields, padded)),
            codes=codes,
            mask=torch.from_numpy(np.arange(m) < n[:, None]),
            patient_index=torch.from_numpy(idx),
        )
        if self.remaining is None:
            return batch
        select = torch.from_numpy(idx)
        per_patient = {name: None if value is None else value.index_select(0, select)
                       for name, value in (("event", self.event), ("weight", self.weight), ("entry", self.entry),
                                           ("event_times", self.event_times), ("event_flags", self.event_flags),
                                           ("event_at_risk", self.event_at_risk))}
        return batch.replace(event_visit=torch.from_numpy(n - 1), **per_patient)

    def _pad_codes(self, src: np.ndarray | None, dst: np.ndarray, b: int, m: int) -> torch.Tensor:
        """``[B, M, K]`` codes of the visit rows ``src`` (all rows when ``None``) placed at ``dst``."""
        code_offsets, code_values = self.code_offsets.numpy(), self.code_values.numpy()
        if src is None:
            code_start, code_len = code_offsets[:-1], np.diff(code_offsets)
        else:
            code_start = code_offsets[src]
            code_len = code_offsets[src + 1] - code_start
        k = int(code_len.max()) if len(code_len) else 0
        out = _filled((b * m * k,), PAD_INDEX, np.int64)
        if k:
            values = code_values if src is None else code_values[ragged_rows(code_start, code_len)]
            out[ragged_rows(dst * k, code_len)] = values
        return torch.from_numpy(out).view(b, m, k)

    def to_padded(self) -> SequenceBatch:
        """The whole cohort as one padded batch (patients in cohort order)."""
        return self.batch(torch.arange(len(self)))

    def __repr__(self) -> str:
        return (f"SequenceData({len(self):,} patients, {len(self.time):,} visits, F={self.numeric.shape[1]}, "
                f"C={self.categorical.shape[1]}, codes={len(self.code_values):,}, "
                f"{'labelled' if self.has_targets else 'unlabelled'})")


def tensorize(cohort: Cohort, features: FeaturePipeline, grid: TimeGrid | None = None, *,
              max_visits: int | None = None) -> SequenceData:
    """Encode ``cohort`` with a fitted ``features`` pipeline into a :class:`SequenceData`.

    With a ``grid`` every visit gets its horizon bin κ(R_m) (``bin``; −1 without a grid).
    """
    if not features.is_fitted:
        raise ConfigError("the feature pipeline is not fitted: call features.fit(train_cohort) first")
    encoded = features.transform(cohort)
    visits, patients = cohort.visits, cohort.patients
    fields: dict[str, torch.Tensor | None] = {
        "offsets": torch.from_numpy(cohort.offsets),
        "numeric": _tensor(encoded.numeric, np.float32),
        "numeric_missing": _tensor(encoded.numeric_missing, np.bool_),
        "categorical": _tensor(encoded.categorical, np.int64),
        "code_values": _tensor(encoded.code_values, np.int64),
        "code_offsets": _tensor(encoded.code_offsets, np.int64),
        "time": _tensor(visits.get_column("elapsed").to_numpy(), np.float32),
        "gap": _tensor(visits.get_column("gap").to_numpy(), np.float32),
    }
    if cohort.is_labelled:
        remaining = visits.get_column("remaining").to_numpy()
        bins = grid.bin(remaining) if grid is not None else np.full(len(remaining), PAD_BIN, dtype=np.int64)
        fields.update(
            remaining=_tensor(remaining, np.float32),
            upper=_tensor(visits.get_column("upper").to_numpy(), np.float32),
            bin=_tensor(bins, np.int64),
            event=_tensor(patients.get_column("event").to_numpy(), np.int64),
            weight=_tensor(patients.get_column("weight").to_numpy(), np.float32),
        )
        if "entry_time" in patients.columns:
            fields["entry"] = _tensor(patients.get_column("entry_time").to_numpy(), np.float32)
        if cohort.has_multi_events:
            fields["event_times"] = _tensor(patients.get_column("event_times").to_numpy(), np.float32)
            fields["event_flags"] = _tensor(patients.get_column("event_flags").to_numpy(), np.bool_)
            fields["event_at_risk"] = _tensor(patients.get_column("event_at_risk").to_numpy(), np.bool_)
    return SequenceData(**fields, patient_ids=cohort.patient_ids, max_visits=max_visits)  # type: ignore[arg-type]
