"""Exceptions raised by ehrseq.

Every error a user can trigger with bad input is an :class:`EhrseqError`; input tables that break a
rule of ``data_specs/`` raise :class:`DataError`, which names the table, column, rule and up to five
offending patient ids so the user can find the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_REPORTED_IDS = 5


class EhrseqError(Exception):
    """Base class of all errors raised deliberately by ehrseq."""


class DataError(EhrseqError, ValueError):
    """An input table breaks a rule of its contract in ``data_specs/``.

    Attributes
    ----------
    table, column, rule:
        Where the violation is (``column`` may be ``None`` for table-level rules).
    patient_ids:
        Up to :data:`MAX_REPORTED_IDS` offending patient ids (in order of appearance).
    n_offending:
        Total number of offending rows (or patients, for patient-level rules).
    """

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        rule: str | None = None,
        patient_ids: Iterable[Any] = (),
        n_offending: int | None = None,
    ) -> None:
        self.table = table
        self.column = column
        self.rule = rule
        self.patient_ids = list(patient_ids)[:MAX_REPORTED_IDS]
        self.n_offending = n_offending
        where = ".".join(part for part in (table, column) if part)
        prefix = f"[{where}] " if where else ""
        rule_part = f"rule '{rule}': " if rule else ""
        ids_part = ""
        if self.patient_ids:
            shown = ", ".join(repr(p) if isinstance(p, str) else str(p) for p in self.patient_ids)
            more = ""
            if n_offending is not None and n_offending > len(self.patient_ids):
                more = f" (first {len(self.patient_ids)} of {n_offending})"
            ids_part = f"; patient ids: {shown}{more}"
        super().__init__(f"{prefix}{rule_part}{message}{ids_part}")


class ConfigError(EhrseqError, ValueError):
    """A configuration (model, loss, trainer, grid) is inconsistent or names something unknown."""


class CheckpointError(EhrseqError):
    """A saved model directory is incomplete, tampered with, or written by an incompatible version."""


class ShapeError(EhrseqError, ValueError):
    """Tensors passed to a loss, head or metric have inconsistent shapes or dtypes."""
