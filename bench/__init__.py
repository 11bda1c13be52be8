"""Benchmark scripts (run as ``python bench/<name>.py``); shared helpers in :mod:`bench._common`."""
