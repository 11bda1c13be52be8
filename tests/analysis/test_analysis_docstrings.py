"""The docstring examples of the analysis modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["analysis", "analysis.pareto", "analysis.expected_max", "analysis.plots"])
def test_docstring_examples(name):
    # importlib: the attribute analysis.expected_max is the re-exported function, not the module
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
