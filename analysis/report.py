"""``analyze``: rank a search's trials, draw its plots and write one self-contained HTML report.

:func:`analyze` reads the finished trials of one search (:func:`analysis.runs.load_trials`),
ranks them by non-dominated sorting over the objectives (:func:`analysis.pareto.pareto_ranks`)
and writes the rank back to every trial run as the tag ``pareto_rank`` (``-1``: an objective
value is missing), and the objectives ranked by (``accuracy:max,size_bytes:min``) to the parent
run as the tag ``pareto_objectives`` (a later analysis with other objectives overwrites both).
It then writes to ``out_dir``:

===========================  ============================================================
``trials.csv``               every loaded trial with its ``pareto_rank``
``pareto_front.csv``         the rank-0 trials, sorted by the first objective
``skyline.png``              accuracy (%) vs size_bytes (bytes, log axis), front as steps
``pairwise.png``             pairwise objective grid (only with 3 or more objectives)
``hypervolume.png``          hypervolume after each trial, trials in start order
``emp_dodge_trials.png``     expected max (Dodge et al. 2019) vs number of trials
``emp_dodge_time.png``       the same vs cumulative ``train_time_s`` (seconds)
``emp_tang_trials.png``      expected max (Tang et al. 2020, bootstrap CI) vs trials
``emp_tang_time.png``        the same vs cumulative ``train_time_s``
``report.html``              all of it: tables, and the images embedded as base64
===========================  ============================================================

EMP plots draw one curve per group (``group_by``, default the student architecture) and
carry :data:`analysis.plots.NOT_RANDOM_NOTE` unless the parent run's ``random_search`` tag is
``true``. Plots whose inputs are missing (no ``size_bytes``, no ``train_time_s``...) are left
out and the report says why. Every file is also logged as an artifact of the search's parent
run under ``analysis/``.

Example:
    >>> html = analyze("sqlite:///mlflow.db", "featherweight", "reports/featherweight")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.expected_max import budget_axis, expected_max, expected_max_unbiased
from analysis.pareto import default_reference, hv_scale, hypervolume_history, pareto_ranks
from analysis.plots import NOT_RANDOM_NOTE, plot_expected_max, plot_hypervolume_history, plot_pairwise, plot_skyline
from analysis.runs import PARAM_PREFIX, TAG_PREFIX, _column, _load, _objectives, _open_store, _require_metrics
from trainables.errors import ConfigError
from trainables.untrusted import check_output_folder, mask_credentials, short

__all__ = ["REPORT_NAME", "ARTIFACT_DIR", "DODGE", "TANG", "analyze"]

REPORT_NAME = "report.html"
"""File name of the HTML report in ``out_dir``."""
ARTIFACT_DIR = "analysis"
"""Artifact folder of the parent run that receives every file."""
DODGE = "Dodge et al. 2019 (with replacement), mean +- std"
"""Legend title of the with-replacement expected-max curves."""
TANG = "Tang et al. 2020 (without replacement), 95% bootstrap CI"
"""Legend title of the unbiased expected-max curves."""

_SHOWN_METRICS = ("accuracy", "f1", "accuracy_mean", "size_bytes", "gzip_bytes", "num_params", "train_time_s",
                  "latency_ms", "energy_j", "co2e_kg")


def _group_labels(df: pd.DataFrame, group_by: Sequence[str] | None) -> pd.Series:
    """One label per row: the ``group_by`` values joined by ``/`` (``"all trials"`` without groups)."""
    if not group_by:
        return pd.Series("all trials", index=df.index)
    cols = [_column(df, g) for g in group_by]
    return df[cols].astype(str).agg("/".join, axis=1)


def _emp_metric(objectives: Mapping[str, str], df: pd.DataFrame, emp_metric: str | None) -> str:
    """The metric the EMP curves estimate: ``emp_metric``, else the first maximised objective,
    else ``accuracy``.

    Raises:
        ConfigError: the metric was not logged by any trial.
    """
    metric = emp_metric or next((m for m, d in objectives.items() if d == "max"), "accuracy")
    _require_metrics(df, [metric], "expected-max metric")
    return metric


def _emp_plots(df: pd.DataFrame, groups: pd.Series, metric: str, warn: bool, out: Path,
               notes: list[str]) -> list[tuple[Path, str]]:
    """The four EMP PNGs (2 estimators x {trials, cumulative train time}) with captions;
    appends skip reasons to ``notes``."""
    from analysis.plots import _label

    curves: dict[str, dict[str, pd.DataFrame]] = {"dodge": {}, "tang": {}}
    costs: dict[str, pd.Series] = {}
    for label in sorted(groups.unique()):
        rows = df[groups == label]
        scores = rows[metric].to_numpy(dtype=float)
        if not np.isfinite(scores).any():
            notes.append(f"group {label!r} has no {metric} value and has no expected-max curve")
            continue
        curves["dodge"][label] = expected_max(scores)
        curves["tang"][label] = expected_max_unbiased(scores)
        if "train_time_s" in rows.columns:
            costs[label] = rows["train_time_s"]
    if not curves["dodge"]:
        notes.append(f"no trial has a {metric} value: no expected-max plots")
        return []
    paths = []
    y_label = f"expected max {_label(metric)}"
    for key, name in (("dodge", DODGE), ("tang", TANG)):
        title = f"Expected best {metric} of n trials ({name.split(' (')[0]})"
        paths.append((plot_expected_max(curves[key], name, "trials", path=out / f"emp_{key}_trials.png",
                                        warn_not_random=warn, y_label=y_label, title=title),
                      f"expected max {metric} vs number of trials: {name}"))
        timed = {}
        for label, curve in curves[key].items():
            cost = costs.get(label)
            if cost is not None and np.isfinite(cost.to_numpy(dtype=float)).any() and (cost > 0).any():
                timed[label] = budget_axis(curve, cost.to_numpy(dtype=float), column="train_time_s")
        if timed:
            paths.append((plot_expected_max(timed, name, "cumulative training time (s)", x="train_time_s",
                                            path=out / f"emp_{key}_time.png", warn_not_random=warn,
                                            y_label=y_label, title=title),
                          f"expected max {metric} vs cumulative train_time_s (trials x mean time per trial): {name}"))
        elif key == "dodge":
            notes.append("no trial logged train_time_s: no expected-max plot against training time")
    return paths


def _fmt(value: Any) -> str:
    """A table cell: integers without decimals, other numbers with 4 significant digits."""
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "" if math.isnan(value) else str(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.4g}"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):,}"
    return str(value)


def _table(df: pd.DataFrame) -> str:
    """An escaped HTML table of ``df`` (cells formatted by :func:`_fmt`)."""
    shown = df.copy()
    shown.columns = [c.removeprefix(PARAM_PREFIX).removeprefix(TAG_PREFIX) for c in shown.columns]
    return shown.map(_fmt).to_html(index=False, escape=True, border=0, classes="t")


def _img(path: Path, caption: str) -> str:
    """A ``<figure>`` with ``path`` embedded as a base64 PNG data URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return f'<figure><img alt="{cap}" src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table.t{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
table.t th,table.t td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.t th{background:#f3f3f3}figure{display:inline-block;margin:0 1em 1em 0}
img{max-width:100%}.note{background:#fff8dc;border:1px solid #b22;padding:0.5em 1em;color:#700}
code{background:#f3f3f3;padding:0 3px}"""


def _html(title: str, info: list[tuple[str, str]], front: pd.DataFrame, summary: pd.DataFrame,
          figures: list[tuple[Path, str]], notes: list[str], warn: bool) -> str:
    """The report page: search info, the front and group tables, notes and embedded figures."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in info)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<table class='t'>{rows}</table>",
             f"<h2>Pareto front ({len(front)} trials)</h2>", _table(front),
             "<h2>Groups</h2>", _table(summary)]
    if warn:
        parts.append(f"<p class='note'>{html.escape(NOT_RANDOM_NOTE)}</p>")
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Plots</h2>")
    parts += [_img(p, c) for p, c in figures]
    parts.append("</body></html>")
    return "\n".join(parts)


def _tag_ranks(client: Any, df: pd.DataFrame, ranks: np.ndarray) -> None:
    """Write the ``pareto_rank`` tag on every trial run."""
    from mlflow.entities import RunTag

    for run_id, rank in zip(df["run_id"], ranks):
        client.log_batch(run_id, tags=[RunTag("pareto_rank", str(int(rank)))], synchronous=True)


def _reference(reference: Sequence[float] | None, values: np.ndarray, directions: list[str]) -> np.ndarray:
    """The hypervolume reference point: ``reference`` or :func:`default_reference`.

    Raises:
        ConfigError: wrong length or non-numeric reference.
    """
    if reference is None:
        return default_reference(values, directions)
    try:
        ref = np.array(reference, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"hypervolume reference must be numbers, got {reference!r}") from None
    if ref.size != len(directions):
        raise ConfigError(f"hypervolume reference has {ref.size} values, need one per objective ({len(directions)})")
    return ref


def _finite_reference(reference: Sequence[float]) -> None:
    """Raises ConfigError unless ``reference`` is a non-empty sequence of finite numbers."""
    try:
        values = np.array(reference, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if not values.size or not np.isfinite(values).all():
        raise ConfigError(f"hypervolume reference must be finite numbers, got {short(reference)}")


def _hv_inputs(parent: Any, objs: Mapping[str, str], values: np.ndarray, reference: Sequence[float] | None
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """``(values, reference, note)`` of the hypervolume: the search's own fixed reference point
    (parent param ``hypervolume_reference``, on :func:`analysis.pareto.hv_scale`, sizes on log10
    bytes) when the search recorded one for these objectives and no ``reference`` is given, so
    that ``analyze`` reports what the search logged; otherwise the raw values with ``reference``
    or :func:`analysis.pareto.default_reference`.

    Raises:
        ConfigError: a malformed ``reference``.
    """
    recorded = parent.data.params.get("hypervolume_reference")
    same_objectives = parent.data.params.get("objectives") == ",".join(f"{k}:{v}" for k, v in objs.items())
    if reference is None and recorded and same_objectives:
        try:
            ref = np.array([float(v) for v in recorded.split(",")], dtype=float)
        except ValueError:
            ref = None
        if ref is not None and ref.size == len(objs):
            return hv_scale(values, objs), ref, "the search's fixed reference; sizes on log10 bytes"
    ref = _reference(reference, values, list(objs.values()))
    return values, ref, "given reference" if reference is not None else "padded nadir of these trials"


def analyze(
    tracking_uri: str | None,
    experiment: str,
    out_dir: str | os.PathLike,
    objectives: str | Mapping[str, str] | Sequence[str] | None = None,
    reference: Sequence[float] | None = None,
    search_id: str | None = None,
    group_by: Sequence[str] | None = ("student",),
    emp_metric: str | None = None,
) -> Path:
    """Rank, plot and report one search (see the module doc for every file written).

    Args:
        tracking_uri: the store; ``None``: ``sqlite:///mlflow.db`` in the current folder.
        experiment: experiment name or id.
        out_dir: folder for the report and its files (created).
        objectives: ``"accuracy:max,size_bytes:min"``, a ``{metric: direction}`` mapping or a
            list of metric names (directions from :data:`spaces.OBJECTIVE_METRICS`);
            ``None``: the parent run's ``objectives`` param (what the search optimised).
        reference: hypervolume reference point, one value per objective in its units;
            ``None``: :func:`analysis.pareto.default_reference` over the loaded trials.
        search_id: which search; ``None``: the latest in the experiment.
        group_by: columns (``student``, ``param.embedding``, ``tag.energy_method``...; bare
            names are looked up as metric, then ``param.``, then ``tag.``) whose values split
            the EMP curves; empty or ``None``: one curve for all trials.
        emp_metric: the metric of the EMP curves; ``None``: the first maximised objective
            (``accuracy`` if none is maximised).

    Returns:
        Path of ``out_dir/report.html``.

    Raises:
        ConfigError: ``out_dir`` not a folder that can be created, a reference that is not
            finite numbers (both checked before the store is opened); store, experiment or
            search not found; bad objectives, reference length or group column; an objective
            no trial logged; or no finished trial.
    """
    out = check_output_folder(out_dir, "--out")  # nothing is read or written before the inputs are checked
    if reference is not None:
        _finite_reference(reference)
    client, uri = _open_store(tracking_uri)
    df, exp, parent = _load(client, uri, experiment, search_id, ("FINISHED",))
    objs = _objectives(objectives, parent)
    search = df.attrs["search_id"] or parent.info.run_id
    if df.empty:
        raise ConfigError(f"search {search} in experiment {exp.name!r} has no finished trial; nothing to analyze")
    _require_metrics(df, list(objs), "objective")
    groups = _group_labels(df, group_by)
    metric = _emp_metric(objs, df, emp_metric)
    directions = list(objs.values())
    values = df[list(objs)].to_numpy(dtype=float)
    hv_values, ref, ref_note = _hv_inputs(parent, objs, values, reference)
    ranks = pareto_ranks(values, directions)
    df["pareto_rank"] = ranks
    _tag_ranks(client, df, ranks)
    client.set_tag(parent.info.run_id, "pareto_objectives", ",".join(f"{k}:{v}" for k, v in objs.items()))
    warn = parent.data.tags.get("random_search", "").lower() != "true"

    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    files: list[Path] = []
    figures: list[tuple[Path, str]] = []

    metrics = [m for m in _SHOWN_METRICS if m in df.columns and m not in objs]
    group_cols = [_column(df, g) for g in group_by or ()]
    cols = list(dict.fromkeys(["trial_order", "tag.trial_id", *group_cols, *objs, *metrics, "run_id"]))
    front = df[df["pareto_rank"] == 0].sort_values(list(objs)[0], kind="mergesort")
    df.to_csv(out / "trials.csv", index=False)
    front[[c for c in df.columns if c in cols or c.startswith(PARAM_PREFIX)]].to_csv(out / "pareto_front.csv",
                                                                                     index=False)
    files += [out / "trials.csv", out / "pareto_front.csv"]

    if {"accuracy", "size_bytes"} <= set(df.columns) and df[["accuracy", "size_bytes"]].notna().all(axis=1).any():
        figures.append((plot_skyline(df, ranks=ranks, path=out / "skyline.png"),
                        "accuracy vs size_bytes (log); red: Pareto front of the search objectives"))
    else:
        notes.append("accuracy or size_bytes was not logged: no skyline plot")
    if len(objs) >= 3:
        figures.append((plot_pairwise(df, objs, ranks, path=out / "pairwise.png"), "pairwise objectives"))
    hv = hypervolume_history(hv_values, directions, ref)
    figures.append((plot_hypervolume_history(hv, x=df["trial_order"].to_numpy() + 1,
                                             x_label="trials started (failed ones included)",
                                             path=out / "hypervolume.png"),
                    f"hypervolume, reference {', '.join(f'{k}={v:.6g}' for k, v in zip(objs, ref))} ({ref_note})"))
    figures += _emp_plots(df, groups, metric, warn, out, notes)
    files += [p for p, _ in figures]

    summary = (df.assign(group=groups).groupby("group", sort=True)
               .agg(trials=("run_id", "size"), on_front=("pareto_rank", lambda r: int((r == 0).sum())),
                    best=(metric, "max"), median=(metric, "median"))
               .reset_index().rename(columns={"best": f"best {metric}", "median": f"median {metric}"}))
    tags = parent.data.tags
    info = [("experiment", f"{exp.name} (id {exp.experiment_id})"), ("tracking URI", mask_credentials(uri)),
            ("search id", search), ("parent run", parent.info.run_id),
            ("sampler", f"{tags.get('sampler', '?')} (random_search={tags.get('random_search', '?')})"),
            ("objectives", ", ".join(f"{k} ({v})" for k, v in objs.items())),
            ("finished trials", str(len(df))), ("on the Pareto front", str(int((ranks == 0).sum()))),
            ("final hypervolume", f"{hv[-1]:.6g}"),
            ("hypervolume reference", ", ".join(f"{k}={v:.6g}" for k, v in zip(objs, ref))),
            ("written", time.strftime("%Y-%m-%d %H:%M:%S"))]
    page = _html(f"featherweight search {search}", info, front[[c for c in cols if c in front.columns]],
                 summary, figures, notes, warn)
    report = out / REPORT_NAME
    report.write_text(page, encoding="utf-8")
    files.append(report)
    for f in files:
        client.log_artifact(parent.info.run_id, str(f), ARTIFACT_DIR)
    return report
