"""Benchmark scripts (run as ``python -m bench.<name>``); shared helpers in :mod:`bench._common`."""
