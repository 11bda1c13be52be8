"""Export selected trials of a search as YAML configs, and replay such a config as a new run.

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
``tracking_uri``, ``metrics`` (the run's final metrics), ``model_uri``
(``runs:/<id>/model/student.safetensors``, or ``student.packed.safetensors`` after a prune or
quantize stage) and, for provenance, ``selector``, ``search_id``,
``parent_run_id`` and ``trial_id``.

:func:`replay` re-runs such a config with :func:`trainables.pipeline.run_trial` as a new,
top-level MLflow run in the source's experiment (tags ``featherweight.role=replay``,
``source_run_id``, ``source_search_id``; deliberately *not* a child of the search, so a
replay never counts as one of its trials), with the data folder, teacher and logit cache the
source search recorded in its parent run's params. A CPU trial is deterministic, so the
replay's metrics should equal the source's (timings and energy excepted).

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
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from analysis.pareto import pareto_ranks
from analysis.runs import _final_metrics, _load, _metric_columns, _objectives, _open_store, _require_metrics
from search.mlflow_store import ROLE_TAG
from trainables.config import PARAMS, ConfigError, parse_param, resolve_config

__all__ = ["Selector", "parse_selector", "export_configs", "replay"]

log = logging.getLogger(__name__)

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_OP_WORDS = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt"}
_CONSTRAINED = re.compile(r"^\s*(?P<metric>[A-Za-z_]\w*)\s*@\s*(?P<other>[A-Za-z_]\w*)\s*(?P<op><=|>=|<|>)"
                          r"\s*(?P<value>\S+)\s*$")
_PERCENT_METRICS = ("accuracy", "f1", "accuracy_mismatched", "accuracy_mean")


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


def _minimal_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
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
    """:func:`resolve_config` of a (possibly already resolved) config: see :func:`_minimal_config`."""
    return resolve_config(_minimal_config(config, where), where)


def _config_from_params(params: Mapping[str, str], where: str) -> dict[str, Any]:
    """The typed, resolved trial config of a run's params (MLflow stores strings).

    Raises:
        ConfigError: an unknown key or a value that does not parse as its declared type.
    """
    typed = {key: parse_param(key, raw, where) for key, raw in params.items()}
    return _resolve(typed, where)


def _model_uri(client: Any, run_id: str, config: Mapping[str, Any]) -> str:
    """``runs:/<id>/model/<student file>``: the ``.safetensors`` file logged under ``model/``, or
    (nothing logged) the name the pipeline gives the last stage's student."""
    files = [a.path for a in client.list_artifacts(run_id, "model") if a.path.endswith(".safetensors")]
    if files:
        return f"runs:/{run_id}/{sorted(files)[0]}"
    from trainables import artifact, packed

    last = config["stages"].split(",")[-1]
    return f"runs:/{run_id}/model/{artifact.ARTIFACT_NAME if last == 'distill' else packed.ARTIFACT_NAME}"


def export_configs(
    tracking_uri: str | None,
    experiment: str,
    out_dir: str | os.PathLike,
    select: str,
    search_id: str | None = None,
    objectives: str | Mapping[str, str] | Sequence[str] | None = None,
) -> list[Path]:
    """Write one YAML per finished trial chosen by ``select`` (see the module doc).

    Args:
        tracking_uri: the store; ``None``: ``sqlite:///mlflow.db`` in the current folder.
        experiment: experiment name or id.
        out_dir: folder for the YAML files (created).
        select: ``pareto``, ``knee``, ``best:METRIC`` or ``METRIC@OTHER<=VALUE``.
        search_id: which search; ``None``: the latest.
        objectives: objectives of ``pareto``/``knee``; ``None``: the search's own.

    Returns:
        The written paths, in trial order.

    Raises:
        ConfigError: a bad selector (checked before the store is opened), store/experiment/
            search not found, no finished trial, a metric no trial logged, no trial meeting
            the constraint, or a run whose params are not a valid trial config.
    """
    sel = parse_selector(select)
    client, uri = _open_store(tracking_uri)
    df, exp, parent = _load(client, uri, experiment, search_id, ("FINISHED",))
    objs = _objectives(objectives, parent) if sel.kind in ("pareto", "knee") else None
    search = df.attrs["search_id"] or parent.info.run_id
    if df.empty:
        raise ConfigError(f"search {search} in experiment {exp.name!r} has no finished trial to export")
    chosen = _select(df, sel, objs, select).sort_values("trial_order")
    if chosen.empty:
        raise ConfigError(f"--select {select!r}: no finished trial has a value for every objective")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_cols = _metric_columns(df)
    paths = []
    for _, row in chosen.iterrows():
        run_id = row["run_id"]
        config = _config_from_params(client.get_run(run_id).data.params, f"run {run_id}")
        doc = {
            "config": config,
            "source_run_id": run_id,
            "experiment": exp.name,
            "tracking_uri": uri,
            "metrics": {c: float(row[c]) for c in metric_cols if pd.notna(row[c])},
            "model_uri": _model_uri(client, run_id, config),
            "selector": select.strip(),
            "search_id": search,
            "parent_run_id": parent.info.run_id,
            "trial_id": str(row.get("tag.trial_id", "")) if pd.notna(row.get("tag.trial_id")) else "",
        }
        path = out / f"{sel.slug()}-trial{int(row['trial_order']):03d}-{run_id[:8]}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        paths.append(path)
    return paths


def _read_export(path: Path) -> dict[str, Any]:
    """The mapping in an exported YAML, checked for ``config`` and ``source_run_id``.

    Raises:
        ConfigError: missing file, bad YAML, or a missing key.
    """
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc.get("source_run_id"):
        raise ConfigError(f"{path}: not an exported trial (needs a 'config' mapping and 'source_run_id'); "
                          f"make one with `run_search.py export`")
    return doc


def _param_or(params: Mapping[str, str], key: str, given: str | None) -> str | None:
    """``given`` if set, else the parent param ``key`` (``hub``/empty -> ``None``)."""
    if given is not None:
        return given
    value = params.get(key, "")
    return None if value in ("", "hub") else value


def _compare(new: Mapping[str, Any], old: Mapping[str, float]) -> dict[str, float]:
    """``new - old`` for every numeric metric both have (percent metrics: percentage points)."""
    return {k: float(new[k]) - float(old[k]) for k in sorted(new)
            if k in old and isinstance(new[k], (int, float)) and not isinstance(new[k], bool)}


def _print_comparison(source: str, run_id: str, new: Mapping[str, Any], old: Mapping[str, float],
                      diff: Mapping[str, float]) -> None:
    """Print a table of original, replayed and difference per metric."""
    print(f"replay {run_id} of {source}:")
    print(f"  {'metric':<28}{'original':>16}{'replay':>16}{'difference':>16}")
    for k, d in diff.items():
        unit = " pp" if k in _PERCENT_METRICS else ""
        print(f"  {k:<28}{old[k]:>16.6g}{float(new[k]):>16.6g}{d:>+16.6g}{unit}")


def replay(
    config_yaml: str | os.PathLike,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data_dir: str | None = None,
    teacher: str | None = None,
    workdir: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Re-run an exported trial config as a new MLflow run and compare it with the original.

    Args:
        config_yaml: a file written by :func:`export_configs`.
        tracking_uri: the store; ``None``: the YAML's ``tracking_uri``.
        experiment: experiment name or id of the new run; ``None``: the source run's.
        data_dir: GLUE folder; ``None``: the source search's ``data_dir`` param (``hub``:
            the Hugging Face hub).
        teacher: teacher folder or hub name; ``None``: the source search's ``teacher`` param.
        workdir: the trial folder (kept); ``None``: a temporary folder, removed afterwards
            (the student is logged to the run either way).
        cache_dir: teacher-logit cache; ``None``: the source search's ``cache_dir`` param,
            else the user cache.
        threads: torch threads; ``None``: the source search's ``cpus_per_trial`` (as its
            trials used), else 1. Determinism holds for the same thread count.
        device: ``cpu`` or ``cuda`` for training; ``None``: ``cuda`` when the source search
            gave trials GPUs (``gpus_per_trial`` > 0) and CUDA is available, else ``cpu``.
            Only CPU trials are bit-for-bit repeatable.

    Returns:
        ``{"run_id", "source_run_id", "experiment_id", "metrics" (the replay's final metrics),
        "original" (the source's final metrics), "diff" (replay - original per shared numeric
        metric; percent metrics in percentage points), "accuracy_diff_pp" (or ``None``),
        "data_matches" (the train/dev data hashes equal the source's), "device"}``. The
        comparison is also printed.

    Raises:
        ConfigError: bad YAML or config, store/source run/experiment not found, no data folder
            or teacher known, or data/teacher that cannot be loaded.
    """
    from mlflow.exceptions import MlflowException

    from search.mlflow_store import find_experiment
    from search.tuner import build_trial_data
    from spaces import Space
    from trainables.augment import prepare_for_space
    from trainables.pipeline import RunSettings, run_trial
    from trainables.tracking import MlflowTracker

    path = Path(config_yaml)
    doc = _read_export(path)
    config = _minimal_config(doc["config"], str(path))  # run_trial resolves it to the exported config
    task = resolve_config(config, str(path))["task"]
    source_id = str(doc["source_run_id"])
    uri_arg = tracking_uri or doc.get("tracking_uri")
    if not uri_arg:
        raise ConfigError(f"{path}: no tracking_uri in the file; pass --tracking-uri")
    client, uri = _open_store(uri_arg)
    try:
        source = client.get_run(source_id)
    except MlflowException:
        raise ConfigError(f"source run {source_id} of {path} is not in {uri}; pass --tracking-uri of its store") from None
    parent_id = source.data.tags.get("mlflow.parentRunId")
    parent_params: Mapping[str, str] = client.get_run(parent_id).data.params if parent_id else {}
    data_dir = _param_or(parent_params, "data_dir", data_dir)
    teacher = _param_or(parent_params, "teacher", teacher)
    cache_dir = _param_or(parent_params, "cache_dir", cache_dir)
    if not teacher:
        raise ConfigError(f"source run {source_id} records no teacher (its search's 'teacher' param); pass --teacher")
    if threads is None:
        try:
            threads = max(1, int(float(parent_params.get("cpus_per_trial", "1"))))
        except ValueError:
            threads = 1
    if device is None:
        import torch

        try:
            gpus = float(parent_params.get("gpus_per_trial", "0"))
        except ValueError:
            gpus = 0.0
        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got {device!r}")
    exp_id = find_experiment(client, experiment, uri).experiment_id if experiment else source.info.experiment_id

    data = build_trial_data(task, data_dir, teacher, cache_dir)
    # the augmented transfer set the trial trained on (cached by the search: same key, same rows)
    data = prepare_for_space(data, Space(fixed=dict(config)), teacher, cache_dir)
    src_tags = source.data.tags
    data_matches = (src_tags.get("data_hash") in (None, data.train.data_hash)
                    and src_tags.get("dev_data_hash") in (None, data.dev.data_hash))
    if not data_matches:
        log.warning("replay data differs from the source trial's (data_hash/dev_data_hash); metrics will differ")
    settings = RunSettings(threads=threads, device=device, tags={
        ROLE_TAG: "replay", "source_run_id": source_id,
        "source_search_id": src_tags.get("search_id", ""), "source_trial_id": src_tags.get("trial_id", ""),
        "source_experiment_id": source.info.experiment_id})
    tracker = MlflowTracker(uri, exp_id, parent_run_id=None)
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="featherweight-replay-")
    try:
        final = run_trial(config, data, workdir or tmp, tracker, settings, run_name=f"replay-{source_id[:8]}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    original = _final_metrics(source)
    diff = _compare(final, original)
    _print_comparison(source_id, tracker.run_id or "", final, original, diff)
    metric = next((m for m in _PERCENT_METRICS if m in diff), None)
    return {"run_id": tracker.run_id, "source_run_id": source_id, "experiment_id": exp_id,
            "metrics": {k: v for k, v in final.items()}, "original": original, "diff": diff,
            "accuracy_diff_pp": diff.get("accuracy", diff.get(metric) if metric else None),
            "data_matches": data_matches, "device": device}
