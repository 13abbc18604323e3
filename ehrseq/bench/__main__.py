"""Benchmark runner: ``python -m ehrseq.bench <name> [options]`` runs ``ehrseq.bench.<name>.main(options)``.

Without a name (or with ``--list``) it lists the benchmarks: the public modules of this package that
define ``main(argv: list[str] | None = None) -> None``, with the first line of their docstring. A new
benchmark is one module of :mod:`ehrseq.bench`; nothing else needs registering. A name may be given
with ``-`` for ``_`` (``losses-quality`` runs ``ehrseq.bench.losses_quality``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

import ehrseq.bench
from ehrseq.errors import EhrseqError


def _benchmark_module(name: str) -> ModuleType | None:
    """The module ``ehrseq.bench.<name>`` if it is a benchmark (public, defines a callable ``main``)."""
    if name.startswith("_"):
        return None
    module = importlib.import_module(f"ehrseq.bench.{name}")
    return module if callable(getattr(module, "main", None)) else None


def available_benchmarks() -> dict[str, str]:
    """Benchmark names mapped to their one-line description (import failures are reported, not raised)."""
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(ehrseq.bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = _benchmark_module(info.name)
        except Exception as exc:  # a broken benchmark must not hide the others
            found[info.name] = f"(cannot be imported: {type(exc).__name__}: {exc})"
            continue
        if module is not None:
            doc = (module.__doc__ or "").strip()
            found[info.name] = doc.splitlines()[0] if doc else ""
    return found


def _listing() -> str:
    benchmarks = available_benchmarks()
    width = max((len(name) for name in benchmarks), default=0)
    lines = ["usage: python -m ehrseq.bench <name> [options]   (options: python -m ehrseq.bench <name> --help)", ""]
    lines += ["benchmarks:"] + [f"  {name.ljust(width)}  {summary}" for name, summary in benchmarks.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a benchmark; return the process exit code (2 for an unknown benchmark)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(_listing())
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]
    try:
        module = _benchmark_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != f"ehrseq.bench.{name}":
            raise
        module = None
    if module is None:
        print(f"unknown benchmark {name!r}\n\n{_listing()}", file=sys.stderr)
        return 2
    try:
        module.main(rest)
    except EhrseqError as exc:  # a configuration the benchmark refuses (e.g. a missing extra): one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
