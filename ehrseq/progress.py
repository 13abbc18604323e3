"""Progress bars: one per long-running call, shown on a terminal and quiet in logs unless asked for.

``progress`` options across ehrseq take ``"auto"`` (the default: a bar when standard error is a
terminal, none when it is redirected to a file or a pipe, so logs hold no carriage-return lines),
``True`` (always) or ``False`` (never). The command line spells them ``--progress`` / ``--no-progress``.
"""

from __future__ import annotations

from typing import Any, Literal

from tqdm import tqdm

from ehrseq.errors import ConfigError

Progress = bool | Literal["auto"]


def check_progress(progress: Any) -> Progress:
    """``progress`` if it is ``True``, ``False`` or ``"auto"``; a :class:`ConfigError` otherwise."""
    if progress is True or progress is False or progress == "auto":
        return progress
    raise ConfigError(f"progress must be True, False or 'auto', got {progress!r}")


def progress_bar(progress: Progress, *, total: float | None = None, desc: str, unit: str, leave: bool = True) -> tqdm:
    """A tqdm bar (use it as a context manager, or close it) following ``progress`` (see the module docstring)."""
    disable = None if check_progress(progress) == "auto" else not progress  # tqdm: None = off unless a terminal
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=leave, dynamic_ncols=True)
