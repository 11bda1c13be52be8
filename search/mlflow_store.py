"""The driver's side of MLflow: tracking URIs, experiments, the search's parent run, and clean-up.

Trials log to their own child runs (:class:`trainables.tracking.MlflowTracker`); the driver
creates the experiment with an explicit artifact location (otherwise artifacts would land in
Ray's temporary trial folders), opens one parent run per search, and at the end marks any
child run still ``RUNNING`` (a killed worker) as ``FAILED`` so that none is left running.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from trainables.config import ConfigError

ROLE_TAG = "featherweight.role"  # "search" on parent runs, "trial" on child runs


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


def close_search(client: Any, experiment_id: str, parent_run_id: str, status: str) -> int:
    """Mark children still ``RUNNING`` as ``FAILED`` (tag ``error``), then end the parent run with ``status``.

    Returns:
        How many child runs had to be marked.
    """
    marked = 0
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", "trial ended without finishing its run (worker died or search stopped)")
            client.set_terminated(run.info.run_id, status="FAILED")
            marked += 1
    client.set_terminated(parent_run_id, status=status)
    return marked
