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
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from trainables.config import ConfigError

ROLE_TAG = "featherweight.role"  # "search" on parent runs, "trial" on child runs
_SAFE_ID = re.compile(r"^[\w.:\-]+$")  # search ids and run ids
OPTIONS_TAG = "featherweight.search_options"  # JSON of the SearchOptions, on parent runs (what resume reads)
DRIVER_GONE = "trial ended without finishing its run (worker died or search stopped)"


def resolve_tracking_uri(uri: str | None, cwd: str | Path | None = None) -> tuple[str, str | None]:
    """Absolute tracking URI and the artifact root to give new experiments.

    ``None`` -> ``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlartifacts``; a
    relative sqlite path is made absolute (trials run in other folders); a sqlite store keeps
    artifacts in ``mlartifacts`` beside the database; servers (``http(s)://``) choose their own
    artifact store (``None``).

    Raises:
        ConfigError: the ``./mlruns`` file store (refused by MLflow 3) or a sqlite folder that does not exist.
    """
    cwd = Path(cwd or Path.cwd())
    if uri is None:
        uri = "sqlite:///mlflow.db"
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "sqlite":
        raw = uri[len("sqlite:///"):]
        db = Path(raw) if raw.startswith("/") else cwd / raw
        if not db.parent.is_dir():
            raise ConfigError(f"tracking store folder {str(db.parent)!r} does not exist; create it or pass "
                              f"--tracking-uri sqlite:///mlflow.db")
        return f"sqlite:///{db.resolve()}", (db.parent.resolve() / "mlartifacts").as_uri()
    if parsed.scheme in ("", "file"):
        raise ConfigError(f"tracking URI {uri!r} is a file store, which MLflow 3 refuses; use "
                          f"sqlite:///mlflow.db or a server (http://host:port)")
    return uri, None


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a tracking server does not answer its ``/health`` endpoint.

    Raises:
        ConfigError: unreachable or unhealthy ``http(s)`` server.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
            if resp.status != 200:
                raise ConfigError(f"tracking server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"tracking server {uri} is unreachable ({reason}); start one with "
                          f"`python run_search.py server` or pass --tracking-uri sqlite:///mlflow.db") from None


def get_or_create_experiment(client: Any, name: str, artifact_root: str | None) -> str:
    """Experiment id of ``name``, creating it with artifact location ``<artifact_root>/<name>``."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {name!r} is deleted; restore it or choose another --experiment")
        return exp.experiment_id
    location = f"{artifact_root.rstrip('/')}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def start_parent_run(client: Any, experiment_id: str, run_name: str, params: Mapping[str, Any],
                     tags: Mapping[str, str]) -> str:
    """Create the search's parent run (tag ``featherweight.role=search``) and return its id."""
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, ROLE_TAG: "search"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


def child_runs(client: Any, experiment_id: str, parent_run_id: str) -> list[Any]:
    """All runs whose ``mlflow.parentRunId`` is ``parent_run_id``."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


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


def search_runs_of(client: Any, experiment_id: str, extra_filter: str = "", max_results: int = 1000) -> list[Any]:
    """Parent runs of the searches in an experiment, newest first (``extra_filter``: an MLflow
    search filter ANDed to the role tag)."""
    filt = f"tags.`{ROLE_TAG}` = 'search'" + (f" and {extra_filter}" if extra_filter else "")
    return list(client.search_runs([experiment_id], filt, max_results=max_results,
                                   order_by=["attributes.start_time DESC"]))


def find_experiment(client: Any, experiment: str, where: str = "this tracking store") -> Any:
    """The active MLflow experiment named (or with id) ``experiment``.

    Args:
        where: the store, for messages (its URI).

    Raises:
        ConfigError: an empty name, no such experiment (lists the ones there), or a deleted one.
    """
    from mlflow.exceptions import MlflowException

    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"experiment must be a non-empty name or id, got {experiment!r}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        try:
            exp = client.get_experiment(experiment)
        except MlflowException:
            exp = None
    if exp is None:
        names = [e.name for e in client.search_experiments(max_results=20)]
        raise ConfigError(f"no MLflow experiment {experiment!r} in {where}; pass --experiment with the name the "
                          f"search used (experiments there: {', '.join(names) or 'none'})")
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(f"MLflow experiment {experiment!r} is deleted; restore it or choose another --experiment")
    return exp


def find_search(client: Any, experiment: str, search_id: str | None = None, *, resumable: bool = False,
                where: str = "this tracking store") -> tuple[Any, Any]:
    """``(experiment, parent run)`` of a search: ``search_id`` (its ``search_id`` tag or the
    parent's run id), else the newest search (with ``resumable``, the newest that records its
    options, which ``resume`` needs).

    Raises:
        ConfigError: no such experiment, a malformed ``search_id``, or no (matching) search in
            it (the message lists the latest search ids).
    """
    exp = find_experiment(client, experiment, where)
    if search_id is not None and not (isinstance(search_id, str) and _SAFE_ID.match(search_id)):
        raise ConfigError(f"search id {search_id!r} must be letters, digits, '-', '_', '.' or ':'")
    latest = search_runs_of(client, exp.experiment_id, max_results=10)
    if not latest:
        raise ConfigError(f"experiment {exp.name!r} holds no search (no run tagged {ROLE_TAG}=search); "
                          f"run `run_search.py search --experiment {exp.name}` first")
    if search_id:
        runs = search_runs_of(client, exp.experiment_id, f"tags.search_id = '{search_id}'", max_results=1)
        if not runs:  # the parent's run id
            runs = search_runs_of(client, exp.experiment_id, f"attributes.run_id = '{search_id}'", max_results=1)
        if not runs:
            known = [r.data.tags.get("search_id", r.info.run_id) for r in latest]
            raise ConfigError(f"experiment {exp.name!r} has no search {search_id!r}; its latest searches: "
                              f"{', '.join(known)}")
        return exp, runs[0]
    if resumable:
        runs = [r for r in search_runs_of(client, exp.experiment_id) if OPTIONS_TAG in r.data.tags]
        if not runs:
            raise ConfigError(f"experiment {exp.name!r} has no resumable search (searches started with this "
                              f"version record what resume needs on their parent run)")
        return exp, runs[0]
    return exp, latest[0]


def search_options_of(run: Any) -> dict[str, Any]:
    """The SearchOptions a search ran with, as recorded on its parent run.

    Raises:
        ConfigError: the run does not record them (a search from an older version).
    """
    raw = run.data.tags.get(OPTIONS_TAG)
    if raw is None:
        raise ConfigError(f"search run {run.info.run_id} does not record its options (tag {OPTIONS_TAG}); it cannot "
                          f"be resumed")
    return json.loads(raw)


def reopen_run(client: Any, run_id: str, note: str) -> None:
    """Set a terminated (or abandoned) parent run back to ``RUNNING`` and count the resume."""
    run = client.get_run(run_id)
    count = int(run.data.tags.get("resume_count", "0")) + 1
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resume_count", str(count))
    client.set_tag(run_id, f"resume_{count}", f"{time.strftime('%Y-%m-%d %H:%M:%S')} {note}"[:5000])
