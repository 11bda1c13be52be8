"""The read side of the MLflow store, shared by ``analysis`` and ``search``: tracking URIs,
experiments, and a search's parent and child runs.

A search writes one parent run (tag ``featherweight.role=search``) and one child run per trial
attempt (``featherweight.role=trial``) into an MLflow experiment.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

ROLE_TAG = "featherweight.role"  # "search" on parent runs, "trial" on child runs
OPTIONS_TAG = "featherweight.search_options"  # JSON of the SearchOptions, on parent runs (what resume reads)
_SAFE_ID = re.compile(r"^[\w.:\-]+$")  # search ids and run ids


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
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(f"tracking server {uri} is unreachable ({reason}); start one with "
                          f"`python run_search.py server` or pass --tracking-uri sqlite:///mlflow.db") from None


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
