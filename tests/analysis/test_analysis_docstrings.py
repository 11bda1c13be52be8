"""The docstring examples of the analysis modules run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name", ["analysis", "analysis.pareto", "analysis.expected_max", "analysis.plots", "analysis.export"]
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_expected_max_module_is_not_shadowed_by_its_function():
    import analysis
    import analysis.expected_max as module

    assert module.__name__ == "analysis.expected_max"
    assert analysis.expected_max is module
    assert callable(module.expected_max) and analysis.expected_max_curve is module.expected_max
    assert "expected_max" not in analysis.__all__
