"""Export selected trials of a search as YAML configs (replayed by :mod:`search.replay`).

Selectors (:func:`parse_selector`) pick finished trials of one search:

- ``pareto``: every trial on the first Pareto front of the search's objectives (the parent
  run's ``objectives`` param, or ``objectives=``).
- ``best:METRIC``: the best trial by ``METRIC``; the direction comes from
  :data:`spaces.OBJECTIVE_METRICS` (``accuracy`` max, ``size_bytes`` min...).
- ``METRIC@CONSTRAINT``: the best trial by ``METRIC`` among those satisfying ``CONSTRAINT``,
  ``OTHER<=VALUE`` (also ``<``, ``>=``, ``>``) in ``OTHER``'s units, e.g.
  ``accuracy@size_bytes<=200000`` (the most accurate student of at most 200 kB).
- ``knee``: the front trial closest (Euclidean) to the utopia point once every objective is
  min-max normalised over the front to ``[0, 1]`` with 0 the best value (the utopia point is
  then the origin; an objective that is constant on the front counts 0).

Ties go to the earlier trial (``trial_order``).

Each exported YAML (``<selector>-trial<order>-<run id prefix>.yaml``) holds ``config`` (the
full resolved trial config, typed, from the run's params via
:func:`trainables.config.resolve_config`), ``source_run_id``, ``experiment``,
``tracking_uri``, ``metrics`` (the run's final metrics, without MLflow's ``system/...``), ``model_uri`` (the trial's MLflow
model, ``models:/<model id>``, which ``mlflow.pyfunc.load_model`` loads; ``null`` for runs
that logged none), ``student_uri`` (the student file, ``runs:/<id>/model/student.safetensors``,
or ``student.packed.safetensors`` after a prune or quantize stage) and, for provenance,
``selector``, ``selected_on`` (the objectives or the metric the selection used: the search's
``val_accuracy``, never the dev ``accuracy``, unless asked), ``search_id``, ``parent_run_id``
and ``trial_id``. With ``register=NAME`` the selected models also become versions of the registered model ``NAME``
(:mod:`analysis.registry`), and each YAML gets ``registered_model``: ``name``, ``version``,
``uri`` (``models:/NAME/VERSION``) and ``aliases``.

:func:`search.replay.replay` re-runs such a file as a new MLflow run.

Example:
    >>> parse_selector("accuracy@size_bytes<=200000")
    Selector(kind='constrained', metric='accuracy', direction='max', constraint=('size_bytes', '<=', 200000.0))
    >>> parse_selector("best:size_bytes").direction
    'min'
"""

from __future__ import annotations

import logging
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.pareto import pareto_ranks
from analysis.registry import ALIAS_SELECTORS, alias_of, check_model_name, logged_model_id, register_students
from analysis.runs import _load, _metric_columns, _objectives, _open_store, _require_metrics
from trainables.config import PARAMS, parse_param, resolve_config
from trainables.errors import ConfigError
from trainables.untrusted import check_output_folder, mask_credentials

__all__ = ["PERCENT_METRICS", "Selector", "export_configs", "minimal_config", "parse_selector"]

log = logging.getLogger(__name__)

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_OP_WORDS = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt"}
_CONSTRAINED = re.compile(r"^\s*(?P<metric>[A-Za-z_]\w*)\s*@\s*(?P<other>[A-Za-z_]\w*)\s*(?P<op><=|>=|<|>)"
                          r"\s*(?P<value>\S+)\s*$")
PERCENT_METRICS = ("accuracy", "f1", "accuracy_mismatched", "accuracy_mean")


@dataclass(frozen=True)
class Selector:
    """A parsed ``--select`` value.

    Attributes:
        kind: ``"pareto"``, ``"knee"``, ``"best"`` or ``"constrained"``.
        metric: the metric ranked by ``best``/``constrained`` (``None`` otherwise).
        direction: ``"max"`` or ``"min"`` for ``metric``.
        constraint: ``(metric, operator, value)`` for ``constrained``.
    """

    kind: str
    metric: str | None = None
    direction: str | None = None
    constraint: tuple[str, str, float] | None = None

    def slug(self) -> str:
        """File-name form: ``pareto``, ``best-accuracy``, ``accuracy-at-size_bytes-le-200000``."""
        if self.kind in ("pareto", "knee"):
            return self.kind
        if self.kind == "best":
            return f"best-{self.metric}"
        other, op, value = self.constraint  # type: ignore[misc]
        return f"{self.metric}-at-{other}-{_OP_WORDS[op]}-{value:g}"


def _direction(metric: str, select: str) -> str:
    """Direction of ``metric`` from :data:`spaces.OBJECTIVE_METRICS`.

    Raises:
        ConfigError: the metric has no known direction.
    """
    from spaces import OBJECTIVE_METRICS

    if metric not in OBJECTIVE_METRICS:
        raise ConfigError(f"--select {select!r}: metric {metric!r} has no known direction; allowed: "
                          f"{', '.join(OBJECTIVE_METRICS)}")
    return OBJECTIVE_METRICS[metric]


def parse_selector(select: str) -> Selector:
    """Parse ``pareto``, ``knee``, ``best:METRIC`` or ``METRIC@OTHER<=VALUE`` (see the module doc).

    Raises:
        ConfigError: any other form, an unknown metric, or a constraint value that is not a number.
    """
    if not isinstance(select, str):
        raise ConfigError(f"--select must be a string, got {select!r}")
    text = select.strip()
    if text in ("pareto", "knee"):
        return Selector(text)
    if text.startswith("best:"):
        metric = text[len("best:"):].strip()
        return Selector("best", metric, _direction(metric, select))
    match = _CONSTRAINED.match(text)
    if match:
        metric, other = match["metric"], match["other"]
        try:
            value = float(match["value"])
        except ValueError:
            raise ConfigError(f"--select {select!r}: constraint value {match['value']!r} is not a number") from None
        if not np.isfinite(value):
            raise ConfigError(f"--select {select!r}: constraint value must be finite")
        return Selector("constrained", metric, _direction(metric, select), (other, match["op"], value))
    raise ConfigError(f"--select {select!r} is not one of: pareto, knee, best:METRIC, METRIC@OTHER<=VALUE "
                      f"(operators <=, <, >=, >), e.g. accuracy@size_bytes<=200000")


def _best(df: pd.DataFrame, metric: str, direction: str) -> pd.DataFrame:
    """The single best row of ``df`` by ``metric`` (NaN ignored; ties: lowest ``trial_order``)."""
    values = df[metric].to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return df.iloc[:0]
    score = np.where(ok, values if direction == "max" else -values, -np.inf)
    best = np.flatnonzero(score == score[ok].max())
    return df.iloc[[best[np.argmin(df["trial_order"].to_numpy()[best])]]]


def _knee(front: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The front row closest to the utopia point after min-max normalisation over the front."""
    vals = front[list(objectives)].to_numpy(dtype=float)
    lo, hi = vals.min(axis=0), vals.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    best = np.array([hi[i] if d == "max" else lo[i] for i, d in enumerate(objectives.values())])
    dist = np.sqrt((((vals - best) / span) ** 2).sum(axis=1))
    order = np.lexsort((front["trial_order"].to_numpy(), dist))
    return front.iloc[[order[0]]]


def _select(df: pd.DataFrame, sel: Selector, objectives: Mapping[str, str] | None, select: str) -> pd.DataFrame:
    """Rows of ``df`` chosen by ``sel``, in trial order.

    Raises:
        ConfigError: a metric no trial logged, or no trial satisfying the constraint.
    """
    if sel.kind in ("pareto", "knee"):
        assert objectives is not None
        _require_metrics(df, list(objectives), "objective")
        ranks = pareto_ranks(df[list(objectives)].to_numpy(dtype=float), list(objectives.values()))
        front = df[ranks == 0]
        return front if sel.kind == "pareto" else _knee(front, objectives)
    _require_metrics(df, [sel.metric], f"--select {select!r}: metric")  # type: ignore[list-item]
    rows = df
    if sel.constraint is not None:
        other, op, value = sel.constraint
        _require_metrics(df, [other], f"--select {select!r}: constraint metric")
        keep = _OPS[op](df[other].to_numpy(dtype=float), value)  # NaN compares False: excluded
        rows = df[keep]
        if rows.empty:
            lo, hi = df[other].min(), df[other].max()
            raise ConfigError(f"--select {select!r}: no finished trial has {other} {op} {value:g} "
                              f"(observed {other} from {lo:g} to {hi:g})")
    chosen = _best(rows, sel.metric, sel.direction)  # type: ignore[arg-type]
    if chosen.empty:
        raise ConfigError(f"--select {select!r}: no trial has a {sel.metric} value")
    return chosen


def minimal_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``config`` without the student-dependent keys whose value :func:`resolve_config` would
    derive anyway (keys declared with default ``None``, e.g. ``classifier_dim``).

    Dropping them lets a replay of an edited config (say, another ``student``) get that
    student's defaults instead of the source's; the minimal form resolves to the same config.

    Raises:
        ConfigError: an invalid config.
    """
    derived = [k for k, spec in PARAMS.items() if spec.default is None]
    base = {k: v for k, v in config.items() if k not in derived}
    implied = resolve_config(base, where)
    return {**base, **{k: config[k] for k in derived if k in config and config[k] != implied[k]}}


def _resolve(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """:func:`resolve_config` of a (possibly already resolved) config: see :func:`minimal_config`."""
    return resolve_config(minimal_config(config, where), where)


def _config_from_params(params: Mapping[str, str], where: str) -> dict[str, Any]:
    """The typed, resolved trial config of a run's params (MLflow stores strings).

    Raises:
        ConfigError: an unknown key or a value that does not parse as its declared type.
    """
    typed = {key: parse_param(key, raw, where) for key, raw in params.items()}
    return _resolve(typed, where)


def _student_uri(client: Any, run_id: str, config: Mapping[str, Any]) -> str:
    """``runs:/<id>/model/<student file>``: the ``.safetensors`` file logged under ``model/``, or
    (nothing logged) the name the pipeline gives the last stage's student."""
    files = [a.path for a in client.list_artifacts(run_id, "model") if a.path.endswith(".safetensors")]
    if files:
        return f"runs:/{run_id}/{sorted(files)[0]}"
    from trainables import formats

    last = config["stages"].split(",")[-1]
    return f"runs:/{run_id}/model/{formats.ARTIFACT_NAME if last == 'distill' else formats.PACKED_NAME}"


def _alias_targets(df: pd.DataFrame, sel: Selector, objectives: Any, parent: Any, select: str) -> dict[str, str]:
    """alias -> run id: the search's ``knee``, ``best-accuracy`` and ``smallest`` trials (where their
    metrics were logged) and, for ``best``/``constrained`` selections, the selector's own alias."""
    targets = {}
    for alias, selector in ALIAS_SELECTORS.items():
        try:
            s = parse_selector(selector)
            objs = _objectives(objectives, parent) if s.kind == "knee" else None
            rows = _select(df, s, objs, selector)
        except ConfigError:  # a metric the search did not log, or no objectives recorded
            continue
        if not rows.empty:
            targets[alias] = rows["run_id"].iloc[0]
    if sel.kind in ("best", "constrained") and select.strip() not in ALIAS_SELECTORS.values():
        targets[alias_of(sel.slug())] = _select(df, sel, None, select)["run_id"].iloc[0]
    return targets


def export_configs(
    tracking_uri: str | None,
    experiment: str,
    out_dir: str | os.PathLike,
    select: str,
    search_id: str | None = None,
    objectives: str | Mapping[str, str] | Sequence[str] | None = None,
    register: str | None = None,
) -> list[Path]:
    """Write one YAML per finished trial chosen by ``select`` (see the module doc).

    Args:
        tracking_uri: the store; ``None``: ``sqlite:///mlflow.db`` in the current folder.
        experiment: experiment name or id.
        out_dir: folder for the YAML files (created).
        select: ``pareto``, ``knee``, ``best:METRIC`` or ``METRIC@OTHER<=VALUE``.
        search_id: which search; ``None``: the latest.
        objectives: objectives of ``pareto``/``knee``; ``None``: the search's own.
        register: also register the selected trials' MLflow models as versions of this registered
            model, with the aliases of :mod:`analysis.registry`.

    Returns:
        The written paths, in trial order.

    Raises:
        ConfigError: a bad selector or ``out_dir`` (checked before the store is opened), store/experiment/
            search not found, no finished trial, a metric no trial logged, no trial meeting
            the constraint, a run whose params are not a valid trial config, or (``register``) a
            malformed model name or a selected run without a logged model.
    """
    sel = parse_selector(select)
    name = check_model_name(register) if register is not None else None
    out = check_output_folder(out_dir, "--out")  # before the store is opened
    client, uri = _open_store(tracking_uri)
    df, exp, parent = _load(client, uri, experiment, search_id, ("FINISHED",))
    objs = _objectives(objectives, parent) if sel.kind in ("pareto", "knee") else None
    search = df.attrs["search_id"] or parent.info.run_id
    if df.empty:
        raise ConfigError(f"search {search} in experiment {exp.name!r} has no finished trial to export")
    chosen = _select(df, sel, objs, select).sort_values("trial_order")
    if chosen.empty:
        raise ConfigError(f"--select {select!r}: no finished trial has a value for every objective")
    runs = {rid: client.get_run(rid) for rid in chosen["run_id"]}
    model_ids = {rid: logged_model_id(run) for rid, run in runs.items()}
    registered: dict[str, dict[str, Any]] = {}
    if name is not None:
        entries = [{"run_id": rid, "model_id": model_ids[rid],
                    "tags": {"source_run_id": rid, "search_id": search, "selector": select.strip(),
                             "trial_id": runs[rid].data.tags.get("trial_id", "")}} for rid in runs]
        registered = register_students(client, name, entries, _alias_targets(df, sel, objectives, parent, select),
                                       description=f"featherweight students of experiment {exp.name!r}")
    out.mkdir(parents=True, exist_ok=True)
    # the trial's results; MLflow's system metrics (system/...) describe the machine, not the student
    metric_cols = [c for c in _metric_columns(df) if not c.startswith("system/")]
    paths = []
    for _, row in chosen.iterrows():
        run_id = row["run_id"]
        config = _config_from_params(runs[run_id].data.params, f"run {run_id}")
        doc = {
            "config": config,
            "source_run_id": run_id,
            "experiment": exp.name,
            "tracking_uri": mask_credentials(uri),  # an exported file may be shared: no password in it
            "metrics": {c: float(row[c]) for c in metric_cols if pd.notna(row[c])},
            "model_uri": f"models:/{model_ids[run_id]}" if model_ids[run_id] else None,
            "student_uri": _student_uri(client, run_id, config),
            "selector": select.strip(),
            "selected_on": (",".join(f"{k}:{v}" for k, v in objs.items()) if objs else sel.metric or ""),
            "search_id": search,
            "parent_run_id": parent.info.run_id,
            "trial_id": str(row.get("tag.trial_id", "")) if pd.notna(row.get("tag.trial_id")) else "",
        }
        if run_id in registered:
            doc["registered_model"] = registered[run_id]
        path = out / f"{sel.slug()}-trial{int(row['trial_order']):03d}-{run_id[:8]}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths
