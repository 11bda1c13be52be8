"""Read a search back from MLflow: its parent run and one DataFrame row per trial run.

A search (``run_search.py search``) writes one MLflow experiment per ``--experiment`` name,
one *parent* run per search (tag ``featherweight.role=search``, tag ``search_id``, params
``objectives``, ``data_dir``, ``teacher``...) and one *child* run per trial (tag
``mlflow.parentRunId``, tag ``featherweight.role=trial``, params = the resolved trial config,
final metrics as in DESIGN.md). Replays (``featherweight.role=replay``) are never children
of a search, so they never count as its trials.

Columns of :func:`load_trials` (one row per trial run):

- ``run_id``, ``run_name``, ``status`` (``FINISHED``, ``FAILED``...), ``start_time`` and
  ``end_time`` (UTC ``Timestamp``), ``trial_order``: 0-based position of the run among *all*
  the search's trial runs sorted by start time (failed ones included, so gaps show failures).
- metrics under their DESIGN.md names, plain (``accuracy`` in percent, ``size_bytes`` in bytes,
  ``train_time_s`` in seconds...); float, NaN where a run did not log one.
- params prefixed ``param.`` (``param.student``, ``param.lr``), converted to the type declared
  in :data:`trainables.config.PARAMS` (int, float, str, bool); unknown params stay strings.
- tags prefixed ``tag.`` (``tag.trial_id``, ``tag.search_id``, ``tag.energy_method``,
  ``tag.pareto_rank``...), strings; MLflow's own ``mlflow.*`` tags are left out.

Final versus per-epoch metrics: a trial logs per-epoch values of ``accuracy``, ``size_bytes``...
at ``step=epoch`` (1, 2, ...) and the final values (the saved student's) of the same names one
step after the last epoch, so MLflow's "latest value" of each metric is the final one.

The frame's ``attrs`` hold ``tracking_uri``, ``experiment_id``, ``experiment_name``,
``parent_run_id`` and ``search_id`` of what was loaded.

Example:
    >>> df = load_trials("sqlite:///mlflow.db", "featherweight")             # doctest: +SKIP
    >>> df[["trial_order", "param.student", "accuracy", "size_bytes"]].head()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.store import ROLE_TAG, check_tracking_uri, child_runs, find_search, resolve_tracking_uri
from trainables.config import parse_param
from trainables.errors import ConfigError

__all__ = ["PARAM_PREFIX", "TAG_PREFIX", "RUN_STATUSES", "load_trials", "find_parent_run"]

PARAM_PREFIX = "param."
"""Prefix of the param columns of :func:`load_trials`."""
TAG_PREFIX = "tag."
"""Prefix of the tag columns of :func:`load_trials`."""
RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
"""MLflow run statuses accepted by ``statuses``."""

_BASE_COLUMNS = ["run_id", "run_name", "status", "start_time", "end_time", "trial_order"]


def _open_store(tracking_uri: str | None) -> tuple[Any, str]:
    """An ``MlflowClient`` on an *existing* store and the absolute URI.

    ``None`` means ``sqlite:///mlflow.db`` in the current folder (as ``run_search.py search``).

    Raises:
        ConfigError: file store, missing sqlite file (MLflow would silently create an empty
            one), or an unreachable/unhealthy tracking server.
    """
    from mlflow.tracking import MlflowClient

    uri, _ = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise ConfigError(f"no MLflow store at {db}; pass --tracking-uri with the store the search wrote "
                              f"(e.g. sqlite:///mlflow.db in the folder it ran in)")
    check_tracking_uri(uri)
    return MlflowClient(uri), uri


def find_parent_run(tracking_uri: str | None, experiment: str, search_id: str | None = None) -> Any:
    """The parent MLflow run of a search.

    Args:
        tracking_uri: the store (``sqlite:///...``, ``http://host:port``); ``None``:
            ``sqlite:///mlflow.db`` in the current folder.
        experiment: experiment name, or its id.
        search_id: the parent's ``search_id`` tag (or the parent's run id); ``None``: the
            search that started last.

    Returns:
        The ``mlflow.entities.Run`` of the parent (``.info.run_id``, ``.data.params``, ``.data.tags``).

    Raises:
        ConfigError: missing store, unreachable server, unknown or deleted experiment, an
            experiment without searches, or an unknown ``search_id``.
    """
    client, uri = _open_store(tracking_uri)
    return find_search(client, experiment, search_id, where=uri)[1]


def _final_metrics(run: Any) -> dict[str, float]:
    """The run's final metric values: MLflow's latest (highest-step) value of each metric."""
    return {k: float(v) for k, v in run.data.metrics.items()}


def _typed_param(key: str, value: str) -> Any:
    """An MLflow param string as its declared type (:func:`trainables.config.parse_param`), or the
    string itself when ``key`` is not a trial-config key or the value does not parse."""
    try:
        return parse_param(key, value)
    except ConfigError:
        return value


def _check_statuses(statuses: Collection[str] | None) -> set[str] | None:
    """Upper-cased statuses, or ``None`` for all.

    Raises:
        ConfigError: a status MLflow does not have, or an empty collection.
    """
    if statuses is None:
        return None
    if isinstance(statuses, str):
        statuses = [statuses]
    wanted = {str(s).upper() for s in statuses}
    bad = sorted(wanted - set(RUN_STATUSES))
    if bad or not wanted:
        raise ConfigError(f"run status {bad[0] if bad else '(none)'!r} is not one of {', '.join(RUN_STATUSES)}")
    return wanted


def _trial_row(client: Any, run: Any, order: int) -> dict[str, Any]:
    """One :func:`load_trials` row of a trial run."""
    info = run.info
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "status": info.status,
        "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
        "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT,
        "trial_order": order,
    }
    row.update(_final_metrics(run))
    row.update({PARAM_PREFIX + k: _typed_param(k, v) for k, v in run.data.params.items()})
    row.update({TAG_PREFIX + k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
    return row


def _load(client: Any, uri: str, experiment: str, search_id: str | None,
          statuses: Collection[str] | None) -> tuple[pd.DataFrame, Any, Any]:
    """:func:`load_trials` on an open client; also returns the experiment and the parent run."""
    wanted = _check_statuses(statuses)
    exp, parent = find_search(client, experiment, search_id, where=uri)
    runs = [r for r in child_runs(client, exp.experiment_id, parent.info.run_id)
            if r.data.tags.get(ROLE_TAG, "trial") == "trial"]
    runs.sort(key=lambda r: (r.info.start_time or 0, r.data.tags.get("trial_id", ""), r.info.run_id))
    rows = [_trial_row(client, run, order) for order, run in enumerate(runs)
            if wanted is None or run.info.status in wanted]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=_BASE_COLUMNS)
    rest = [c for c in df.columns if c not in _BASE_COLUMNS]
    metrics = sorted(c for c in rest if not c.startswith((PARAM_PREFIX, TAG_PREFIX)))
    params = sorted(c for c in rest if c.startswith(PARAM_PREFIX))
    tags = sorted(c for c in rest if c.startswith(TAG_PREFIX))
    df = df[_BASE_COLUMNS + metrics + params + tags].reset_index(drop=True)
    df["trial_order"] = df["trial_order"].astype("int64")
    for c in metrics:
        df[c] = df[c].astype(float)
    df.attrs.update(tracking_uri=uri, experiment_id=exp.experiment_id, experiment_name=exp.name,
                    parent_run_id=parent.info.run_id, search_id=parent.data.tags.get("search_id", ""))
    return df, exp, parent


def load_trials(tracking_uri: str | None, experiment: str, search_id: str | None = None,
                statuses: Collection[str] | None = ("FINISHED",)) -> pd.DataFrame:
    """One row per trial run of a search, ordered by start time (columns: see the module doc).

    Args:
        tracking_uri: the store; ``None``: ``sqlite:///mlflow.db`` in the current folder.
        experiment: experiment name, or its id.
        search_id: which search (parent ``search_id`` tag or parent run id); ``None``: the
            search that started last.
        statuses: keep trial runs with these MLflow statuses; ``None``: all.

    Returns:
        The DataFrame (index ``0..n-1`` in ``trial_order``); empty, with the base columns,
        when no trial run matches. ``df.attrs`` names the store, experiment and parent run.

    Raises:
        ConfigError: missing store, unreachable server, unknown experiment, no search in it,
            unknown ``search_id``, or an unknown status.
    """
    client, uri = _open_store(tracking_uri)
    return _load(client, uri, experiment, search_id, statuses)[0]


def _column(df: pd.DataFrame, name: str) -> str:
    """The column of ``df`` that ``name`` means: itself, else ``param.<name>``, else ``tag.<name>``.

    Raises:
        ConfigError: none of the three is a column.
    """
    for candidate in (name, PARAM_PREFIX + name, TAG_PREFIX + name):
        if candidate in df.columns:
            return candidate
    raise ConfigError(f"no column {name!r} (nor {PARAM_PREFIX}{name}, {TAG_PREFIX}{name}) in the trials table")


def _objectives(spec: str | Mapping[str, str] | Sequence[str] | None, parent: Any) -> dict[str, str]:
    """``{metric: "max"|"min"}`` from ``spec`` or, when ``None``, the parent's ``objectives`` param.

    ``spec`` may be ``"accuracy:max,size_bytes:min"``, ``"accuracy,size_bytes"`` (directions
    from :data:`spaces.OBJECTIVE_METRICS`), a mapping, or a list of metric names.

    Raises:
        ConfigError: unknown metric or direction, or no objectives anywhere.
    """
    from spaces import OBJECTIVE_METRICS, parse_objectives

    if spec is None:
        stored = parent.data.params.get("objectives")
        if not stored:
            raise ConfigError(f"search run {parent.info.run_id} has no 'objectives' param; pass --objectives, "
                              f"e.g. accuracy:max,size_bytes:min")
        return parse_objectives(stored, f"objectives of search run {parent.info.run_id}")
    if isinstance(spec, (str, Mapping)):
        return parse_objectives(spec, "objectives")
    names = list(spec)
    unknown = [n for n in names if n not in OBJECTIVE_METRICS]
    if unknown or not names:
        raise ConfigError(f"unknown objective {unknown[0] if unknown else '(none)'!r}; allowed: "
                          f"{', '.join(OBJECTIVE_METRICS)}")
    return {n: OBJECTIVE_METRICS[n] for n in names}


def _metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a :func:`load_trials` frame (neither base, ``param.`` nor ``tag.``)."""
    return [c for c in df.columns if c not in _BASE_COLUMNS and c != "pareto_rank"
            and not c.startswith((PARAM_PREFIX, TAG_PREFIX))]


def _require_metrics(df: pd.DataFrame, metrics: Sequence[str], why: str) -> None:
    """Raise ConfigError naming the first of ``metrics`` no loaded trial logged."""
    known = sorted(_metric_columns(df))
    for m in metrics:
        if m not in df.columns or not df[m].notna().any():
            raise ConfigError(f"{why} {m!r} was not logged by any loaded trial; logged metrics: "
                              f"{', '.join(known) or 'none'}")
