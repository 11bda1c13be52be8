"""Ray cluster plumbing of a search: the address, the code shipped to workers, the Tune storage.

A search runs on a local Ray (``--address`` unset) or joins a running cluster
(``--address auto|HOST:PORT|ray://HOST:PORT``). When it joins one, the project folder travels to
every worker as the job's ``runtime_env`` ``working_dir``, so ``trainables``, ``search``,
``spaces`` import on workers that never had the project installed. Tune keeps its experiment
state (trial states, searcher state, checkpoints) under ``--storage-path``; on several machines
that must be storage every node sees (NFS path, ``s3://``, ``gs://``).

Ray 2.60 turns token authentication on by default for clusters started with ``ray start --head``:
every node and the driver need the same ``RAY_AUTH_MODE`` and the cluster's token
(``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# never shipped to workers: VCS, stores, outputs, caches (the project's .gitignore is honoured too)
RUNTIME_ENV_EXCLUDES = [".git", "mlartifacts", "mlflow.db", "mlruns", "ray_results", "reports", "exports",
                        "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "*.db"]

_AUTH_HINT = ("if the cluster uses token authentication (Ray's default), give this shell the same RAY_AUTH_MODE "
              "as the nodes and the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")


def check_address(address: str | None, timeout_s: float = 3.0) -> None:
    """Fail fast on a Ray address nothing answers at.

    ``None``: a local Ray is started later. ``auto``: a running cluster must be recorded on
    this machine (``ray start``) or named by ``RAY_ADDRESS``. ``HOST:PORT`` / ``ray://HOST:PORT``:
    a TCP connection must open.

    Raises:
        ConfigError: malformed address, or nothing reachable at it.
    """
    if address is None:
        return
    hint = "start one with `ray start --head` or leave --address unset for a local Ray"
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS")
        if env and env != "auto":
            return check_address(env, timeout_s)
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        except Exception:
            raise ConfigError(f"--address auto: no running Ray cluster found on this machine; {hint}") from None
    scheme, sep, target = address.rpartition("://")
    host, _, port = target.rpartition(":")
    if ((sep and scheme != "ray") or not host or not (port.isascii() and port.isdigit())  # '²'.isdigit() is True
            or not 0 < int(port) < 65536 or "/" in target):
        raise ConfigError(f"--address {address!r} must be auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, UnicodeError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({reason}); {hint}") from None


def runtime_env(address: str | None) -> dict[str, Any] | None:
    """The job's ``runtime_env`` when joining a cluster: the project folder as ``working_dir``.

    Workers then run in an unpacked copy of the project (it is their current folder and on
    ``sys.path``), so the packages import on machines without the project. ``None`` (local Ray):
    workers inherit the driver's environment.
    """
    if address is None:
        return None
    return {"working_dir": str(PROJECT_ROOT), "excludes": list(RUNTIME_ENV_EXCLUDES)}


def resolve_storage_path(path: str | None) -> str | None:
    """Tune's ``storage_path``: a URI (``s3://...``) as is, a local folder made absolute.

    Raises:
        ConfigError: a local path that is a file, or whose nearest existing parent is not a
            writable folder.
    """
    if path is None:
        return None
    if not path.strip():
        raise ConfigError("--storage-path is empty; pass a folder (shared by all nodes) or a URI such as "
                          "s3://bucket/dir")
    return folder_or_uri(path, "--storage-path", Path.cwd())


def folder_or_uri(value: str, option: str, cwd: Path) -> str:
    """A storage location given on the command line: a URI (``s3://``, ``gs://``...) as is, a
    local folder (or ``file://`` URI) as an absolute path, relative ones against ``cwd``.

    Raises:
        ConfigError: a local path that is a file, or whose nearest existing parent is not a
            writable folder (the message names ``option``).
    """
    scheme = urllib.parse.urlparse(value).scheme
    if len(scheme) > 1 and scheme != "file":  # s3://, gs://, hdfs://... (a Windows drive letter is 1 char)
        return value
    local = Path(value[len("file://"):] if scheme == "file" else value).expanduser()
    local = local if local.is_absolute() else cwd / local
    if local.exists() and not local.is_dir():
        raise ConfigError(f"{option} {value!r} is a file; pass a folder or a URI such as s3://bucket/dir")
    parent = local
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"{option} {value!r} cannot be created: {str(parent)!r} is not a writable folder")
    return str(local)


def experiment_path(storage_path: str | None, name: str) -> str:
    """Where Tune keeps the experiment ``name`` (what ``Tuner.restore`` needs)."""
    if storage_path is None:
        from ray.train.constants import DEFAULT_STORAGE_PATH

        storage_path = DEFAULT_STORAGE_PATH
    return storage_path.rstrip("/") + "/" + name


def connect(address: str | None) -> None:
    """``ray.init`` for a search: join ``address`` shipping the project, or start a local Ray.

    Raises:
        ConfigError: the cluster refused the connection (authentication, version mismatch).
    """
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env=runtime_env(address))
    except (ConnectionError, RuntimeError, ValueError) as e:
        if address is None:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        cause = e.__cause__
        if cause is not None and "auth" in f"{type(cause).__name__} {cause}".lower():
            first = "authentication failed"
        raise ConfigError(f"cannot connect to the Ray cluster at {address} ({first}); {_AUTH_HINT}") from None
