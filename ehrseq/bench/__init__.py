"""Benchmarks: ``python -m ehrseq.bench <name>``."""
