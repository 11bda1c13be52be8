"""The driver's side of MLflow: tracking URIs, experiments, the search's parent run, and clean-up.

Trials log to their own child runs (:class:`trainables.tracking.MlflowTracker`); the driver
creates the experiment with an explicit artifact location (otherwise artifacts would land in
Ray's temporary trial folders), opens one parent run per search, and at the end marks any
child run still ``RUNNING`` (a killed worker) as ``FAILED`` so that none is left running.

A trial may run more than once (a retry after its worker died, a resumed search): each attempt
is its own child run tagged with the trial's ``trial_id``. :func:`close_earlier_attempts` runs
at the start of every attempt: it marks runs of earlier attempts still ``RUNNING`` as ``FAILED``
and, when one already ``FINISHED``, hands its metrics back so that the trial is not run again.
So a search ends with exactly one ``FINISHED`` run per finished trial.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.store import (  # the store's read side, shared with analysis
    OPTIONS_TAG,
    ROLE_TAG,
    check_tracking_uri,
    child_runs,
    find_experiment,
    find_search,
    resolve_tracking_uri,
    search_runs_of,
)
from trainables.errors import ConfigError

__all__ = ["DRIVER_GONE", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "OPTIONS_TAG", "ROLE_TAG", "check_tracking_uri",
           "child_runs", "close_earlier_attempts", "close_search", "find_experiment", "find_search",
           "get_or_create_experiment", "reopen_run", "resolve_tracking_uri", "search_options_of", "search_runs_of",
           "source_tags", "start_parent_run", "trial_runs"]

DRIVER_GONE = "trial ended without finishing its run (worker died or search stopped)"
#: The experiment tag whose value picks the MLflow UI's view of an experiment, and the value of
#: its model-training ("Machine learning") view: the runs table with models and datasets.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def get_or_create_experiment(client: Any, name: str, artifact_root: str | None) -> str:
    """Experiment id of ``name``, creating it with artifact location ``<artifact_root>/<name>``.

    The experiment is tagged ``mlflow.experimentKind=custom_model_development`` (also an existing
    one without that tag), so that the MLflow UI opens it in its model-training view.

    Raises:
        ConfigError: the experiment is deleted.
    """
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {name!r} is deleted; restore it or choose another --experiment")
        if EXPERIMENT_KIND_TAG not in exp.tags:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def _git(*args: str) -> str:
    """Output of ``git <args>`` in the project folder, or ``""`` (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def source_tags(entry_point: str = "run_search.py") -> dict[str, str]:
    """MLflow's standard source tags for runs of this code: ``mlflow.source.name`` (the entry
    point, a path in the project), ``mlflow.source.type`` (``LOCAL``) and, from a git checkout,
    ``mlflow.source.git.commit``, ``mlflow.source.git.branch`` and ``mlflow.source.git.repoURL``
    (when the checkout has an ``origin``)."""
    tags = {"mlflow.source.name": str(PROJECT_ROOT / entry_point), "mlflow.source.type": "LOCAL"}
    for key, args in (("commit", ("rev-parse", "HEAD")), ("branch", ("rev-parse", "--abbrev-ref", "HEAD")),
                      ("repoURL", ("config", "--get", "remote.origin.url"))):
        value = _git(*args)
        if key == "repoURL" and "://" in value and "@" in value.split("://", 1)[1].split("/", 1)[0]:
            scheme, rest = value.split("://", 1)  # no credentials in a tag
            value = f"{scheme}://{rest.split('@', 1)[1]}"
        if value and value != "HEAD":
            tags[f"mlflow.source.git.{key}"] = value
    return tags


def start_parent_run(client: Any, experiment_id: str, run_name: str, params: Mapping[str, Any],
                     tags: Mapping[str, str]) -> str:
    """Create the search's parent run (tag ``featherweight.role=search``) and return its id."""
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, ROLE_TAG: "search"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


def close_search(client: Any, experiment_id: str, parent_run_id: str, status: str,
                 errors: Mapping[str, str] | None = None) -> int:
    """Mark children still ``RUNNING`` as ``FAILED`` (tag ``error``), then end the parent run with ``status``.

    Args:
        errors: trial id -> error Tune reported for it (used as the ``error`` tag of its runs).

    Returns:
        How many child runs had to be marked.
    """
    errors = errors or {}
    marked = 0
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            error = errors.get(run.data.tags.get("trial_id", ""), DRIVER_GONE)
            client.set_tag(run.info.run_id, "error", error[:5000])
            client.set_terminated(run.info.run_id, status="FAILED")
            marked += 1
        elif run.info.status == "FAILED" and "error" not in run.data.tags and run.data.tags.get("trial_id") in errors:
            client.set_tag(run.info.run_id, "error", errors[run.data.tags["trial_id"]][:5000])
    client.set_terminated(parent_run_id, status=status)
    return marked


def trial_runs(client: Any, experiment_id: str, parent_run_id: str, trial_id: str) -> list[Any]:
    """Runs of every attempt of one trial of a search, oldest first."""
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                              f"tags.trial_id = '{trial_id}'", max_results=1000, order_by=["attributes.start_time ASC"])
    return list(runs)


def close_earlier_attempts(client: Any, trial_id: str, *, experiment_id: str,
                           parent_run_id: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Called by a trial before it starts: settle the runs of its earlier attempts.

    Earlier runs still ``RUNNING`` (their worker or the driver died) are marked ``FAILED`` with
    an ``error`` tag. When an earlier run ``FINISHED`` (the trial completed but Tune had not
    recorded it before the driver stopped), its final metrics are returned and the trial must
    report them instead of training again.

    Returns:
        ``(metrics of the FINISHED run with mlflow_run_id and energy_method, or None,
        tags for the new attempt's run: attempt, retry_of)``.
    """
    from trainables.tracking import _retry

    runs = _retry(lambda: trial_runs(client, experiment_id, parent_run_id, trial_id))
    for run in runs:
        if run.info.status == "RUNNING":
            _retry(lambda: client.set_tag(run.info.run_id, "error", f"{DRIVER_GONE}; the trial was restarted"))
            _retry(lambda: client.set_terminated(run.info.run_id, status="FAILED"))
    for run in runs:
        if run.info.status == "FINISHED":
            done = dict(run.data.metrics)
            done.update(mlflow_run_id=run.info.run_id, energy_method=run.data.tags.get("energy_method", ""))
            return done, {}
    if not runs:
        return None, {"attempt": "1"}
    return None, {"attempt": str(len(runs) + 1), "retry_of": runs[-1].info.run_id}


def search_options_of(run: Any) -> dict[str, Any]:
    """The SearchOptions a search ran with, as recorded on its parent run.

    Raises:
        ConfigError: the run does not record them (a search from an older version), or the tag
            is not a JSON object.
    """
    raw = run.data.tags.get(OPTIONS_TAG)
    if raw is None:
        raise ConfigError(f"search run {run.info.run_id} does not record its options (tag {OPTIONS_TAG}); it cannot "
                          f"be resumed")
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise ConfigError(f"search run {run.info.run_id}: its tag {OPTIONS_TAG} is not a JSON object; it cannot be "
                          f"resumed")
    return record


def reopen_run(client: Any, run_id: str, note: str) -> None:
    """Set a terminated (or abandoned) parent run back to ``RUNNING`` and count the resume."""
    run = client.get_run(run_id)
    count = int(run.data.tags.get("resume_count", "0")) + 1
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resume_count", str(count))
    client.set_tag(run_id, f"resume_{count}", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {note}"[:5000])
