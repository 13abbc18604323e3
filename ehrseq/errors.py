"""Exceptions raised by ehrseq.

Every error a user can trigger with bad input is an :class:`EhrseqError`; input tables that break a
rule of ``data_specs/`` raise :class:`DataError`, which names the table, column, rule and up to five
offending patient ids so the user can find the rows.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

MAX_REPORTED_IDS = 5
_NO_VALUE = object()
#: The interface the user called: ``"python"`` (the API) or ``"cli"`` (the ``ehrseq`` command).
_INTERFACE: ContextVar[str] = ContextVar("ehrseq_interface", default="python")


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


class DataWarning(UserWarning):
    """Input tables that pass every rule but look like a common mistake (e.g. R's event coding)."""


def warn(message: str) -> None:
    """Issue a :class:`DataWarning` (the command line prints it as ``ehrseq: warning: ...``)."""
    warnings.warn(message, DataWarning, stacklevel=3)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Within this block, :func:`option` spells options as command-line flags."""
    token = _INTERFACE.set("cli")
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def option(name: str, value: Any = _NO_VALUE, *, flag: str | None = None, python: str | None = None) -> str:
    """How the user sets option ``name`` (to ``value``) in the interface they called.

    From Python: ``unmatched='drop'``, ``resume=True``. On the command line: ``--unmatched drop``,
    ``--resume``, ``--no-progress`` for ``progress=False``; ``flag`` is what the command line takes
    instead when it spells the option differently (e.g. ``--train-visits FILE`` for ``train_outcomes``),
    ``python`` what Python takes when the value is not a literal (``train_outcomes=(visits, outcomes)``).
    """
    if _INTERFACE.get() == "cli":
        if flag is not None:
            return flag
        text = "--" + name.replace("_", "-")
        if value is _NO_VALUE or value is True:
            return text
        if value is False:
            return "--no-" + text.removeprefix("--")
        if isinstance(value, (list, tuple)):
            return f"{text} {' '.join(str(v) for v in value)}"
        return f"{text} {value}"
    if python is not None:
        return python
    if value is _NO_VALUE:
        return f"{name}="
    return f"{name}={value!r}"
