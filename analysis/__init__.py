"""Analysis of a search: Pareto ranks, hypervolume, expected max performance and plots.

Public API (everything else is private):

- :mod:`analysis.pareto`: :func:`pareto_ranks`, :func:`pareto_front`, :func:`hypervolume`,
  :func:`hypervolume_history`, :func:`default_reference`.
- :mod:`analysis.expected_max`: :func:`expected_max` (Dodge et al. 2019),
  :func:`expected_max_unbiased` (Tang et al. 2020), :func:`budget_axis`.
- :mod:`analysis.plots`: :func:`plot_skyline`, :func:`plot_pairwise`,
  :func:`plot_hypervolume_history`, :func:`plot_expected_max`.

Example:
    >>> from analysis import pareto_ranks
    >>> pareto_ranks([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]], ["max", "max"]).tolist()
    [0, 0, 1]
"""

from analysis.expected_max import CURVE_COLUMNS, budget_axis, expected_max, expected_max_unbiased
from analysis.pareto import (
    DIRECTIONS,
    default_reference,
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_ranks,
)
from analysis.plots import (
    NOT_RANDOM_NOTE,
    plot_expected_max,
    plot_hypervolume_history,
    plot_pairwise,
    plot_skyline,
)

__all__ = [
    "CURVE_COLUMNS",
    "DIRECTIONS",
    "NOT_RANDOM_NOTE",
    "budget_axis",
    "default_reference",
    "expected_max",
    "expected_max_unbiased",
    "hypervolume",
    "hypervolume_history",
    "pareto_front",
    "pareto_ranks",
    "plot_expected_max",
    "plot_hypervolume_history",
    "plot_pairwise",
    "plot_skyline",
]
