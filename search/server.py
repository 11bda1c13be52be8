"""``run_search.py server``: an MLflow tracking server that trials on any node can reach.

Trials on remote workers cannot write to the driver's ``sqlite:///`` file, nor to its local
artifact folder. A tracking server solves both: run data goes to its backend store (SQLite or
any SQLAlchemy database) and artifacts are uploaded through the server (``--serve-artifacts``)
to ``--artifacts-destination`` (a folder on the server's machine, or ``s3://``, ``gs://``...).
Experiments created through the server get the proxied ``mlflow-artifacts:/`` location.

    python run_search.py server --host 0.0.0.0 --port 5000      # on the head node
    python run_search.py search --address auto --tracking-uri http://HEAD_IP:5000 ...

The options are validated first (one-line error, exit 2); then this process becomes
``python -m mlflow server`` (``exec``), so stopping it (Ctrl-C, SIGTERM) stops the server. The
backend store URI, which may hold a database password, goes to MLflow through the environment
(``MLFLOW_BACKEND_STORE_URI``), never on the command line (which every user of the machine can
read), and is printed with its password masked.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from search.cluster import folder_or_uri
from trainables.errors import ConfigError
from trainables.untrusted import check_location, mask_credentials, short

#: The environment variable ``mlflow server`` reads its ``--backend-store-uri`` from.
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")


@dataclass
class ServerOptions:
    """What ``run_search.py server`` accepts (see ``--help``)."""

    host: str = "127.0.0.1"
    port: int = 5000
    backend_store_uri: str | None = None
    artifacts_destination: str | None = None
    workers: int = 2
    allowed_hosts: str | None = None


def resolve_backend_store(uri: str | None, cwd: Path) -> str:
    """``None`` -> ``sqlite:///<cwd>/mlflow.db``; sqlite paths made absolute; other SQLAlchemy URIs kept.

    Raises:
        ConfigError: a file store, an unknown scheme, or a sqlite folder that does not exist.
    """
    from search.mlflow_store import resolve_tracking_uri

    uri = uri or "sqlite:///mlflow.db"
    if not uri.isprintable():
        raise ConfigError("--backend-store-uri must be printable text, e.g. sqlite:///mlflow.db")
    try:
        scheme = urllib.parse.urlsplit(uri).scheme.split("+", 1)[0].lower()
    except ValueError as e:
        raise ConfigError(f"--backend-store-uri {mask_credentials(uri)!r} is malformed ({e})") from None
    if scheme == "sqlite":
        return resolve_tracking_uri(uri, cwd)[0]
    if scheme not in SQL_SCHEMES:
        raise ConfigError(f"--backend-store-uri {mask_credentials(uri)!r} must be a SQLAlchemy database URI; allowed "
                          f"schemes: {', '.join(SQL_SCHEMES)} (e.g. sqlite:///mlflow.db, postgresql://user@host/db)")
    return uri


def resolve_artifacts_destination(dest: str | None, cwd: Path) -> str:
    """``None`` -> ``<cwd>/mlartifacts``; a local folder made absolute; ``s3://``-style URIs kept.

    Raises:
        ConfigError: a local path that is a file or cannot be created.
    """
    return folder_or_uri(dest or "mlartifacts", "--artifacts-destination", cwd)


def check_port_free(host: str, port: int) -> None:
    """Raises ConfigError when ``host:port`` cannot be bound (in use, or no such interface)."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({e})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port "
                              f"or stop what uses it") from None


def server_command(opts: ServerOptions, cwd: str | Path | None = None) -> tuple[list[str], dict[str, str]]:
    """Validate ``opts`` and return the ``mlflow server`` command line and the environment it needs.

    Returns:
        ``(argv, env)``: ``env`` holds ``MLFLOW_BACKEND_STORE_URI`` (the backend store, which may
        carry a password, is never put in ``argv``).

    Raises:
        ConfigError: any invalid option (one line).
    """
    cwd = Path(cwd or Path.cwd())
    if not 1 <= opts.workers <= 256:
        raise ConfigError(f"--workers must be from 1 to 256, got {opts.workers}")
    for flag, value in (("--host", opts.host), ("--allowed-hosts", opts.allowed_hosts),
                        ("--artifacts-destination", opts.artifacts_destination)):
        if value is not None and (not value.strip() or not value.isprintable()):
            raise ConfigError(f"{flag} must be non-empty printable text, got {short(value)}")
    backend = resolve_backend_store(opts.backend_store_uri, cwd)
    if opts.artifacts_destination is not None:
        check_location(opts.artifacts_destination, "--artifacts-destination")
    artifacts = resolve_artifacts_destination(opts.artifacts_destination, cwd)
    check_port_free(opts.host, opts.port)
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", opts.host, "--port", str(opts.port),
           "--workers", str(opts.workers), "--serve-artifacts", "--artifacts-destination", artifacts]
    if opts.allowed_hosts:
        cmd += ["--allowed-hosts", opts.allowed_hosts]
    return cmd, {BACKEND_ENV: backend}


def tracking_uri_for(host: str, port: int) -> str:
    """The ``--tracking-uri`` clients should use for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    return f"http://{host}:{port}"


def serve(opts: ServerOptions) -> None:
    """Validate, print how to use it, then replace this process with ``mlflow server`` (never returns).

    Raises:
        ConfigError: invalid options (nothing started).
    """
    cmd, env = server_command(opts)
    artifacts = cmd[cmd.index("--artifacts-destination") + 1]
    uri = tracking_uri_for(opts.host, opts.port)
    print(f"MLflow tracking server on {opts.host}:{opts.port}: runs in {mask_credentials(env[BACKEND_ENV])}, "
          f"artifacts in {mask_credentials(artifacts)}\n"
          f"use it with: python run_search.py search --tracking-uri {uri} ...", flush=True)
    sys.stderr.flush()
    # tracking only: MLflow's job runner (GenAI scoring) would add a pool of consumer processes
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.environ.update(env)  # the backend store (and its password) through the environment, not argv
    os.execv(cmd[0], cmd)
