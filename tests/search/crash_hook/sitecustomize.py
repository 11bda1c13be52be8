"""Failure injection for the cluster tests, loaded by every Python process of the test's Ray nodes
(this folder is on their ``PYTHONPATH``); production code has no hook.

While the file named by ``FEATHERWEIGHT_TEST_CRASH_ONCE`` exists, the first trial to report an
epoch (``trainables.trial.trainable.report_epoch``) deletes it and dies (``os._exit``), or raises
when the file holds ``raise``. The wrapper is installed when that module is first imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

_TARGET = "trainables.trial.trainable"


def _crash_once() -> None:
    marker = os.environ.get("FEATHERWEIGHT_TEST_CRASH_ONCE")
    if not marker:
        return
    try:
        mode = Path(marker).read_text().strip()
        os.unlink(marker)  # only one trial wins the unlink
    except OSError:
        return
    if mode == "raise":
        raise RuntimeError("FEATHERWEIGHT_TEST_CRASH_ONCE: injected trial failure")
    os._exit(3)


def _patch(module) -> None:
    report_epoch = module.report_epoch

    def crashing_report_epoch(metrics, checkpoint_dir):
        report_epoch(metrics, checkpoint_dir)
        _crash_once()

    module.report_epoch = crashing_report_epoch


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get("FEATHERWEIGHT_TEST_CRASH_ONCE"):
    sys.meta_path.insert(0, _PatchOnImport())
