"""The read side of the MLflow store, shared by ``analysis`` and ``search``: tracking URIs,
experiments, and a search's parent and child runs.

A search writes one parent run (tag ``featherweight.role=search``) and one child run per trial
attempt (``featherweight.role=trial``) into an MLflow experiment.
"""

from __future__ import annotations

import base64
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError
from trainables.untrusted import expand_path, mask_credentials, short

#: Schemes of the tracking URIs MLflow can log to (``+driver`` variants of the databases included).
SQL_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")
TRACKING_SCHEMES = ("sqlite", "http", "https", "databricks", *SQL_SCHEMES)
SQLITE_MAGIC = b"SQLite format 3\x00"
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
        ConfigError: a malformed URI, a scheme MLflow cannot track to (:data:`TRACKING_SCHEMES`),
            the ``./mlruns`` file store (refused by MLflow 3), an in-memory sqlite database, a
            sqlite folder that does not exist, or a sqlite path that is not an SQLite database.
    """
    cwd = Path(cwd or Path.cwd())
    if uri is None:
        uri = "sqlite:///mlflow.db"
    parsed = _parse_uri(uri)
    uri = parsed.scheme.lower() + uri[len(parsed.scheme):]  # HTTP://... as http://... (checks compare lower case)
    scheme = parsed.scheme.lower().split("+", 1)[0]
    if scheme == "sqlite":
        return _sqlite_store(uri, cwd)
    if scheme in ("", "file"):
        raise ConfigError(f"tracking URI {mask_credentials(uri)!r} is a file store, which MLflow 3 refuses; use "
                          f"sqlite:///mlflow.db or a server (http://host:port)")
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"tracking URI scheme {parsed.scheme!r} is not supported; use sqlite:///PATH, "
                          f"http(s)://HOST:PORT or a database URI ({', '.join(SQL_SCHEMES)})")
    if scheme in ("http", "https") and not parsed.hostname:
        raise ConfigError(f"tracking URI {mask_credentials(uri)!r} names no host; use http(s)://HOST:PORT")
    return uri, None


def _parse_uri(uri: Any) -> urllib.parse.SplitResult:
    """``urlsplit(uri)``, with its port read (a malformed port or IPv6 host raises here, not later).

    Raises:
        ConfigError: not printable text, or a URI ``urllib`` cannot parse.
    """
    if not isinstance(uri, str) or not uri.strip() or not uri.isprintable() or len(uri) > 4096:
        raise ConfigError(f"tracking URI {mask_credentials(short(uri))} must be a printable URI such as "
                          f"sqlite:///mlflow.db or http://HOST:PORT")
    try:
        parsed = urllib.parse.urlsplit(uri)
        parsed.port  # noqa: B018 -- raises ValueError for a port that is not a number in 0..65535
    except ValueError as e:
        raise ConfigError(f"tracking URI {mask_credentials(uri)!r} is malformed ({e})") from None
    return parsed


def _sqlite_store(uri: str, cwd: Path) -> tuple[str, str]:
    """``(absolute sqlite URI, artifact root)`` of a ``sqlite:///PATH`` store.

    Raises:
        ConfigError: not ``sqlite:///PATH`` (an in-memory database, which trials in other
            processes cannot see, included), a folder that does not exist, a path that is a
            folder, or an existing file that is not an SQLite database.
    """
    raw = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    if not raw or raw.startswith(":memory:") or "?" in raw or "mode=memory" in raw:
        raise ConfigError(f"tracking URI {mask_credentials(uri)!r} must be sqlite:///PATH of a database file "
                          f"(an in-memory database is not shared with the trials)")
    expand_path(raw, "--tracking-uri")  # a name too long for the file system makes even is_dir() raise
    db = Path(raw) if raw.startswith("/") else cwd / raw
    if not db.parent.is_dir():
        raise ConfigError(f"tracking store folder {str(db.parent)!r} does not exist; create it or pass "
                          f"--tracking-uri sqlite:///mlflow.db")
    if db.is_dir():
        raise ConfigError(f"tracking store {str(db)!r} is a folder; pass sqlite:///PATH of a database file")
    if db.exists():
        try:
            with db.open("rb") as f:
                head = f.read(16)
        except OSError as e:
            raise ConfigError(f"tracking store {str(db)!r} cannot be read ({e.strerror or type(e).__name__})") from None
        if head and head != SQLITE_MAGIC:
            raise ConfigError(f"tracking store {str(db)!r} is not an SQLite database")
    return f"sqlite:///{db.resolve()}", (db.parent.resolve() / "mlartifacts").as_uri()


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a tracking server does not answer its ``/health`` endpoint (credentials in
    the URI, ``user:password@``, are sent as HTTP basic authentication, never in the request line).

    Raises:
        ConfigError: unreachable or unhealthy ``http(s)`` server.
    """
    if urllib.parse.urlsplit(uri).scheme.lower() not in ("http", "https"):
        return
    shown = mask_credentials(uri)
    parts = urllib.parse.urlsplit(uri)
    request = urllib.request.Request(uri.rstrip("/") + "/health")
    if parts.username is not None or parts.password is not None:  # user:password@ -> basic auth, as MLflow does
        host = parts.netloc.rsplit("@", 1)[1]
        request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=host)).rstrip("/") + "/health")
        token = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode("ascii"))
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise ConfigError(f"tracking server {shown} answered /health with HTTP {resp.status}")
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError, ValueError, http.client.HTTPException) as e:
        reason = mask_credentials(str(getattr(e, "reason", e)))
        raise ConfigError(f"tracking server {shown} is unreachable ({reason}); start one with "
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
