"""PNG plots of a search: accuracy/size skyline, pairwise objectives, hypervolume, EMP curves.

Every ``plot_*`` function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``
state, no GUI; rendered by the Agg canvas, so it is safe in threads and on headless
machines), writes one PNG file to ``path`` (creating its folder) and returns that path. The
figure's title (and any warning note) is also stored in the PNG's ``Title``/``Description``
text chunks, which the HTML report and tests can read back.

Axis labels carry the units of the DESIGN.md metrics (``accuracy (%)``, ``size_bytes
(bytes)``, ...).

Example:
    >>> import tempfile, pandas as pd
    >>> df = pd.DataFrame({"size_bytes": [1e3, 1e4, 1e5, 5e4], "accuracy": [80.0, 85.0, 90.0, 84.0]})
    >>> out = plot_skyline(df, path=tempfile.mkdtemp() + "/skyline.png")
    >>> out.name, out.stat().st_size > 0
    ('skyline.png', True)
"""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from analysis.pareto import _objective_columns, pareto_ranks
from trainables.errors import ConfigError

__all__ = ["NOT_RANDOM_NOTE", "plot_skyline", "plot_pairwise", "plot_hypervolume_history", "plot_expected_max"]

NOT_RANDOM_NOTE = (
    "Note: these trials were not drawn by random search; expected-max estimators assume "
    "i.i.d. draws, so the curves are only indicative."
)
"""The note :func:`plot_expected_max` puts on the figure when ``warn_not_random`` is set."""

_UNITS = {
    "accuracy": "%",
    "f1": "%",
    "accuracy_mismatched": "%",
    "accuracy_mean": "%",
    "size_bytes": "bytes",
    "gzip_bytes": "bytes",
    "fp32_bytes": "bytes",
    "compression_ratio": "x",
    "num_params": "count",
    "nonzero_params": "count",
    "train_time_s": "s",
    "latency_ms": "ms",
    "throughput": "examples/s",
    "energy_j": "J",
    "energy_inference_j_per_1k": "J per 1k examples",
    "co2e_kg": "kg CO2e",
}
_DPI = 120
_FRONT_COLOR = "tab:red"


def _label(column: str) -> str:
    """Axis label for a metric column: ``"accuracy (%)"``; the bare name for unknown columns."""
    unit = _UNITS.get(column)
    return f"{column} ({unit})" if unit else column


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure drawn by the Agg canvas, with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, title: str, description: str = "") -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created), with Title/Description text chunks."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": title}
    if description:
        metadata["Description"] = description
    fig.savefig(out, format="png", dpi=_DPI, metadata=metadata)
    return out


def _ranks_for(df: pd.DataFrame, ranks: Sequence[int] | np.ndarray | None, objectives: Mapping[str, str]) -> np.ndarray:
    """``ranks`` as an int array aligned with ``df``'s rows, or Pareto ranks of ``objectives``.

    Raises:
        ConfigError: ``ranks`` does not have one entry per row of ``df``.
    """
    if ranks is None:
        cols = list(objectives)
        return pareto_ranks(df[cols].to_numpy(dtype=float), [objectives[c] for c in cols])
    arr = np.asarray(ranks).reshape(-1)
    if arr.shape[0] != len(df):
        raise ConfigError(f"ranks has {arr.shape[0]} entries but the trials table has {len(df)} rows")
    return arr.astype(np.int64)


def _skyline_figure(
    df: pd.DataFrame,
    x: str,
    y: str,
    ranks: Sequence[int] | np.ndarray | None,
    log_x: bool,
    directions: Sequence[str],
    title: str | None,
) -> Figure:
    """Build the skyline figure of :func:`plot_skyline` (see there for arguments and errors)."""
    if len(directions) != 2:
        raise ConfigError(f"directions must give two words (for x and y), got {list(directions)!r}")
    objectives = {x: directions[0], y: directions[1]}
    if x == y:
        raise ConfigError(f"x and y must be different columns, both are {x!r}")
    _objective_columns(df, objectives)
    xs, ys = df[x].to_numpy(dtype=float), df[y].to_numpy(dtype=float)
    rank = _ranks_for(df, ranks, objectives)
    shown = np.isfinite(xs) & np.isfinite(ys)
    if log_x and (xs[shown] <= 0).any():
        raise ConfigError(f"column {x!r} has values <= 0; use log_x=False to plot it")
    front2d = pareto_ranks(np.column_stack([xs, ys]), list(directions)) == 0
    order = np.argsort(xs[front2d], kind="mergesort")
    fx, fy = xs[front2d][order], ys[front2d][order]

    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    rest = shown & (rank != 0)
    on_front = shown & (rank == 0)
    ax.scatter(xs[rest], ys[rest], s=14, color="0.6", alpha=0.7, label=f"trials ({int(shown.sum())})")
    ax.scatter(xs[on_front], ys[on_front], s=26, color=_FRONT_COLOR, zorder=3, label="Pareto front (rank 0)")
    # the attainment staircase: flat towards worse x when x is minimised, towards better x otherwise
    ax.step(fx, fy, where="post" if directions[0] == "min" else "pre", color=_FRONT_COLOR, lw=1.5, zorder=2)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones overlap
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.set_title(title or f"{y} vs {x}: all trials and the Pareto front")
    ax.grid(True, which="major", alpha=0.3)
    hidden = int((~shown).sum())
    ax.legend(loc="best", title=f"{hidden} trial(s) without values not shown" if hidden else None)
    return fig


def plot_skyline(
    df: pd.DataFrame,
    x: str = "size_bytes",
    y: str = "accuracy",
    ranks: Sequence[int] | np.ndarray | None = None,
    log_x: bool = True,
    *,
    path: str | os.PathLike,
    directions: Sequence[str] = ("min", "max"),
    title: str | None = None,
) -> Path:
    """Scatter every trial in the ``(x, y)`` plane and draw the Pareto front as a step line.

    The "skyline" plot of the Featherweight thesis (Figs 7.2-7.4): accuracy against model size
    on a log scale. Points with ``ranks == 0`` are highlighted; the step line is the
    two-objective front of ``(x, y)`` (the staircase bounding the region the trials dominate).
    Rows with a missing ``x`` or ``y`` are not drawn (their count is in the legend).

    Args:
        df: one row per trial with numeric columns ``x`` and ``y``.
        x, y: column names (units taken from the DESIGN.md metric table).
        ranks: Pareto ranks aligned with ``df``'s rows, e.g. from :func:`pareto_ranks` over more
            objectives; ``None``: the ranks of ``(x, y)`` under ``directions``.
        log_x: log-scale X axis (needs ``x > 0``).
        path: PNG file to write.
        directions: ``("min"|"max", "min"|"max")`` for ``x`` and ``y``.
        title: figure title; default names the columns.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: missing or non-numeric column, bad directions, ``ranks`` of the wrong
            length, or ``x <= 0`` with ``log_x``.
    """
    fig = _skyline_figure(df, x, y, ranks, log_x, directions, title)
    return _save(fig, path, fig.axes[0].get_title())


def _pairwise_figure(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    ranks: Sequence[int] | np.ndarray | None,
    log: Collection[str] | None,
    title: str | None,
) -> Figure:
    """Build the grid of :func:`plot_pairwise` (see there for arguments and errors)."""
    cols = _objective_columns(df, objectives)
    if len(cols) < 2:
        raise ConfigError(f"a pairwise plot needs at least two objectives, got {cols}")
    log_cols = {c for c in cols if c.endswith("_bytes")} if log is None else set(log)
    unknown = log_cols - set(cols)
    if unknown:
        raise ConfigError(f"log-scale column {sorted(unknown)[0]!r} is not one of the objectives {cols}")
    rank = _ranks_for(df, ranks, objectives)
    data = {c: df[c].to_numpy(dtype=float) for c in cols}
    for c in log_cols:
        if (data[c][np.isfinite(data[c])] <= 0).any():
            raise ConfigError(f"column {c!r} has values <= 0 and cannot be log-scaled; leave it out of log")
    k = len(cols) - 1
    fig = _new_figure(3.4 * k + 1.0, 3.2 * k)
    axes = fig.subplots(k, k, squeeze=False)
    max_rank = max(int(rank.max()), 1) if (rank >= 0).any() else 1
    mappable = None
    for row, col in itertools.product(range(k), range(k)):
        ax = axes[row][col]
        if col > row:
            ax.set_axis_off()
            continue
        cx, cy = cols[col], cols[row + 1]
        xs, ys = data[cx], data[cy]
        shown = np.isfinite(xs) & np.isfinite(ys) & (rank >= 0)
        mappable = ax.scatter(
            xs[shown], ys[shown], c=rank[shown], cmap="viridis", vmin=0, vmax=max_rank, s=12, alpha=0.8
        )
        front = shown & (rank == 0)
        ax.scatter(xs[front], ys[front], s=30, facecolors="none", edgecolors=_FRONT_COLOR, lw=1.2, zorder=3)
        if cx in log_cols:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if cy in log_cols:
            ax.set_yscale("log")
        ax.set_xlabel(_label(cx))  # panels do not share axes: label each one
        ax.set_ylabel(_label(cy))
        ax.grid(True, alpha=0.3)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, label="Pareto rank (red ring: rank 0)", shrink=0.8)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    arrows = ", ".join(f"{c} {objectives[c]}" for c in cols)
    fig.suptitle(title or f"Pairwise objectives ({arrows})")
    return fig


def plot_pairwise(
    df: pd.DataFrame,
    objectives: Mapping[str, str],
    ranks: Sequence[int] | np.ndarray | None = None,
    *,
    path: str | os.PathLike,
    log: Collection[str] | None = None,
    title: str | None = None,
) -> Path:
    """Pairwise scatter grid of ``m >= 2`` objectives (made for 3), colored by Pareto rank.

    Lower-triangle grid of ``(m-1) x (m-1)`` panels, one per pair of objectives; rank-0
    trials are ringed in red. Rows with a missing objective or rank ``-1`` are not drawn.

    Args:
        df: one row per trial with a numeric column per objective.
        objectives: ``{column: "max" | "min"}``.
        ranks: Pareto ranks aligned with ``df``'s rows; ``None``: :func:`pareto_ranks` over
            ``objectives``.
        path: PNG file to write.
        log: objectives drawn on a log axis; ``None``: those whose name ends in ``_bytes``.
        title: figure title; default lists the objectives and directions.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: fewer than two objectives, missing/non-numeric column, bad direction,
            ``ranks`` of the wrong length, or a log column that is not an objective or has
            values <= 0.
    """
    fig = _pairwise_figure(df, objectives, ranks, log, title)
    return _save(fig, path, fig.get_suptitle())


def _hypervolume_figure(
    hv: Sequence[float] | np.ndarray, x: Sequence[float] | np.ndarray | None, x_label: str, title: str | None
) -> Figure:
    """Build the figure of :func:`plot_hypervolume_history` (see there for arguments and errors)."""
    try:
        h = np.array(hv, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError("hypervolume history must be numbers, one per trial") from None
    if h.size == 0:
        raise ConfigError("hypervolume history is empty; run some trials first")
    if x is None:
        xs = np.arange(1, h.size + 1, dtype=float)
    else:
        xs = np.array(x, dtype=float).reshape(-1)
        if xs.shape != h.shape:
            raise ConfigError(f"x has {xs.size} values but the hypervolume history has {h.size}")
    fig = _new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.step(xs, h, where="post", color="tab:blue", lw=1.5)
    ax.scatter(xs[-1:], h[-1:], color="tab:blue", s=16, zorder=3)
    ax.set_xlabel(x_label)
    ax.set_ylabel("hypervolume")
    ax.set_title(title or f"Hypervolume of the trials so far (final {h[-1]:.4g})")
    ax.grid(True, alpha=0.3)
    return fig


def plot_hypervolume_history(
    hv: Sequence[float] | np.ndarray,
    *,
    path: str | os.PathLike,
    x: Sequence[float] | np.ndarray | None = None,
    x_label: str = "trials",
    title: str | None = None,
) -> Path:
    """Step plot of a hypervolume history (from :func:`hypervolume_history`).

    Args:
        hv: hypervolume after each trial, shape ``(n,)`` (units: product of the objectives').
        path: PNG file to write.
        x: X values, shape ``(n,)``, e.g. cumulative ``train_time_s``; ``None``: ``1..n``.
        x_label: X axis label (say the unit, e.g. ``"cumulative training time (s)"``).
        title: figure title; default states the final hypervolume.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: empty or non-numeric ``hv``, or ``x`` of another length.
    """
    fig = _hypervolume_figure(hv, x, x_label, title)
    return _save(fig, path, fig.axes[0].get_title())


def _expected_max_figure(
    curves: Mapping[str, pd.DataFrame],
    estimator_name: str,
    x_label: str,
    warn_not_random: bool,
    x: str,
    y_label: str,
    title: str | None,
) -> Figure:
    """Build the figure of :func:`plot_expected_max` (see there for arguments and errors)."""
    if not curves:
        raise ConfigError("plot_expected_max needs at least one curve")
    needed = (x, "mean", "lower", "upper")
    for group, curve in curves.items():
        missing = [c for c in needed if c not in curve.columns]
        if missing:
            raise ConfigError(f"curve {group!r} lacks column {missing[0]!r} (need {list(needed)}; see budget_axis for x)")
    fig = _new_figure(6.4, 4.4)
    ax = fig.add_subplot()
    for group, curve in curves.items():
        xs = curve[x].to_numpy(dtype=float)
        (line,) = ax.plot(xs, curve["mean"].to_numpy(dtype=float), lw=1.8, label=str(group))
        ax.fill_between(
            xs, curve["lower"].to_numpy(dtype=float), curve["upper"].to_numpy(dtype=float),
            color=line.get_color(), alpha=0.2, lw=0,
        )
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title or f"Expected max {y_label}: {estimator_name}")
    ax.legend(title=estimator_name, loc="lower right")
    ax.grid(True, alpha=0.3)
    if warn_not_random:
        # below the X axis label, outside the data; constrained layout makes room for it
        ax.annotate(
            textwrap.fill(NOT_RANDOM_NOTE, 90), xy=(0.5, 0.0), xycoords="axes fraction", xytext=(0, -36),
            textcoords="offset points", ha="center", va="top", fontsize=8, color="darkred",
            bbox={"boxstyle": "round", "facecolor": "lightyellow", "edgecolor": "darkred"},
        )
    return fig


def plot_expected_max(
    curves: Mapping[str, pd.DataFrame],
    estimator_name: str,
    x_label: str,
    *,
    path: str | os.PathLike,
    warn_not_random: bool = False,
    x: str = "n",
    y_label: str = "accuracy (%)",
    title: str | None = None,
) -> Path:
    """Expected-max-performance curves, one line plus band per group, on one plot.

    Args:
        curves: ``{group name: curve}``, curves from :func:`expected_max` or
            :func:`expected_max_unbiased` (optionally with :func:`budget_axis`); the band is
            ``lower``..``upper``.
        estimator_name: shown in the title and as the legend title, e.g.
            ``"Dodge et al. 2019 (with replacement), mean +- std"``.
        x_label: X axis label with its unit, e.g. ``"trials"`` or ``"training time (s)"``.
        path: PNG file to write.
        warn_not_random: put :data:`NOT_RANDOM_NOTE` on the figure (and in the PNG's
            Description): the estimators assume i.i.d. random-search trials.
        x: curve column for the X axis: ``"n"`` or a :func:`budget_axis` column.
        y_label: what the curves estimate, with its unit.
        title: figure title; default names the estimator.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: no curves, or a curve without ``x``, ``mean``, ``lower`` or ``upper``.
    """
    fig = _expected_max_figure(curves, estimator_name, x_label, warn_not_random, x, y_label, title)
    return _save(fig, path, fig.axes[0].get_title(), NOT_RANDOM_NOTE if warn_not_random else "")
