"""Analysis of a search: Pareto ranks, hypervolume, expected max performance, plots, reports.

Public API (everything else is private):

- :mod:`analysis.pareto`: :func:`pareto_ranks`, :func:`pareto_front`, :func:`hypervolume`,
  :func:`hypervolume_history`, :func:`default_reference`.
- :mod:`analysis.expected_max`: ``expected_max`` (Dodge et al. 2019; re-exported here as
  :func:`expected_max_curve` so that the package attribute ``analysis.expected_max`` stays
  the module), :func:`expected_max_unbiased` (Tang et al. 2020), :func:`budget_axis`.
- :mod:`analysis.plots`: :func:`plot_skyline`, :func:`plot_pairwise`,
  :func:`plot_hypervolume_history`, :func:`plot_expected_max`.
- :mod:`analysis.runs`: :func:`load_trials` (MLflow -> one DataFrame row per trial),
  :func:`find_parent_run`.
- :mod:`analysis.report`: :func:`analyze` (ranks -> ``pareto_rank`` tags, plots, HTML report).
- :mod:`analysis.export`: :func:`export_configs` (selectors ``pareto``, ``knee``,
  ``best:METRIC``, ``METRIC@OTHER<=VALUE``), :func:`parse_selector` (``search.replay`` re-runs an export).
- :mod:`analysis.store`: the read side of the MLflow store (experiments, a search's runs).
- :mod:`analysis.cli`: :func:`add_commands` (``run_search.py analyze|export``).

MLflow, torch and the trainables are imported only when a function needs them.

Example:
    >>> from analysis import pareto_ranks
    >>> pareto_ranks([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]], ["max", "max"]).tolist()
    [0, 0, 1]
    >>> import analysis.expected_max as m
    >>> m.expected_max is expected_max_curve
    True
"""

from analysis.expected_max import CURVE_COLUMNS, budget_axis, expected_max_unbiased
from analysis.expected_max import expected_max as expected_max_curve
from analysis.export import Selector, export_configs, parse_selector
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
from analysis.report import analyze
from analysis.runs import PARAM_PREFIX, RUN_STATUSES, TAG_PREFIX, find_parent_run, load_trials

__all__ = [
    "CURVE_COLUMNS",
    "DIRECTIONS",
    "NOT_RANDOM_NOTE",
    "PARAM_PREFIX",
    "RUN_STATUSES",
    "Selector",
    "TAG_PREFIX",
    "analyze",
    "budget_axis",
    "default_reference",
    "expected_max_curve",
    "expected_max_unbiased",
    "export_configs",
    "find_parent_run",
    "hypervolume",
    "hypervolume_history",
    "load_trials",
    "parse_selector",
    "pareto_front",
    "pareto_ranks",
    "plot_expected_max",
    "plot_hypervolume_history",
    "plot_pairwise",
    "plot_skyline",
]
