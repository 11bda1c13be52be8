"""Ray cluster plumbing of a search: the address, the code shipped to workers, the Tune storage.

Where a search runs (``--address``):

* unset or ``local``: a fresh local Ray (``ray.init(address="local")``), even when a
  ``ray start`` on this machine left its address in Ray's ``ray_current_cluster`` file. The
  one exception is a driver that runs inside a Ray job (``ray job submit``, KubeRay ``RayJob``)
  with ``--address`` unset: it joins the job's cluster, as a plain ``ray.init()`` there does.
* ``auto``: the cluster named by ``RAY_ADDRESS``, else the one ``ray start`` recorded on this
  machine; ``HOST:PORT``: a cluster's GCS; ``ray://HOST:PORT``: a cluster's Ray Client server
  (needs ``ray[client]``, part of the ``cluster`` extra).

Which code workers run (the ``runtime_env``):

* ``--runtime-env`` given: that runtime_env, as is.
* inside a Ray job whose runtime_env sets anything (``ray job submit --working-dir .``,
  ``--runtime-env``, a ``RayJob``'s ``runtimeEnvYAML``): nothing is added; Ray gives the job's
  runtime_env to every worker.
* otherwise, joining a cluster: the project folder as ``working_dir``, so ``trainables``,
  ``search``, ``spaces`` import on workers that never had the project installed. A local Ray
  needs nothing: its workers see the driver's files.

Tune keeps its experiment state (trial states, searcher state, checkpoints) under
``--storage-path``; on several machines that must be storage every node sees (NFS path,
``s3://``, ``gs://``).

Ray 2.60 turns token authentication on by default for clusters started with ``ray start --head``:
every node and the driver need the same ``RAY_AUTH_MODE`` and the cluster's token
(``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# never shipped to workers: VCS, stores, outputs, caches (the project's .gitignore is honoured too)
RUNTIME_ENV_EXCLUDES = [".git", "mlartifacts", "mlflow.db", "mlruns", "ray_results", "reports", "exports",
                        "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "*.db"]
#: The environment variable in which Ray's job supervisor hands a job's driver its JobConfig
#: (``{"runtime_env": {...}, "metadata": {...}}``); ``ray.init`` merges that runtime_env with its own.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: The install that adds Ray's dashboard, Jobs CLI and SDK (``ray[default]``) and the Ray Client (``ray[client]``).
CLUSTER_EXTRA_HINT = 'pip install -e ".[cluster]"'

_AUTH_HINT = ("if the cluster uses token authentication (Ray's default), give this shell the same RAY_AUTH_MODE "
              "as the nodes and the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
_JOIN_HINT = "start one with `ray start --head` or leave --address unset for a local Ray"


class ClusterError(RuntimeError):
    """Ray could not start or join a cluster for a reason outside the user's options (the CLI exits 1).

    Raised instead of :class:`ConfigError` (exit 2) when no option of the user caused the failure,
    e.g. Ray refusing the project folder that the search ships as ``working_dir``.
    """


def in_ray_job() -> bool:
    """Whether this process is the driver of a Ray job (``ray job submit``, a KubeRay ``RayJob``)."""
    return JOB_CONFIG_ENV in os.environ


def job_runtime_env() -> dict[str, Any]:
    """The runtime_env of the Ray job this driver runs in; ``{}`` outside a job or when it sets nothing.

    Empty fields (the Jobs API adds ``env_vars: {}``) are left out.
    """
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_ENV) or "{}")
    except json.JSONDecodeError:
        return {}
    env = config.get("runtime_env") if isinstance(config, dict) else None
    return {k: v for k, v in env.items() if v not in (None, {}, [], "")} if isinstance(env, dict) else {}


def ray_address(address: str | None) -> str:
    """What ``ray.init`` gets for ``--address``: ``"local"`` (a fresh local Ray) when it is unset or
    ``local``, except inside a Ray job, where unset means ``"auto"`` (the job's cluster); else ``address``."""
    if address is None:
        return "auto" if in_ray_job() else "local"
    return address


def joins_cluster(address: str | None) -> bool:
    """Whether a search with this ``--address`` runs on an existing cluster (not a local Ray of its own)."""
    return ray_address(address) != "local"


def current_cluster_file() -> Path:
    """Ray's record of the cluster the last ``ray start`` on this machine started (what ``auto``
    joins): ``ray_current_cluster`` in Ray's default temp folder (``$RAY_TMPDIR/ray``, else
    ``$TMPDIR/ray``, else ``/tmp/ray``)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / "ray" / "ray_current_cluster"


def check_address(address: str | None, timeout_s: float = 3.0) -> None:
    """Fail fast on a Ray address nothing answers at.

    ``None`` / ``local``: a local Ray is started later (inside a Ray job, ``None`` checks the job's
    cluster as ``auto``). ``auto``: ``RAY_ADDRESS``, else the cluster recorded in
    :func:`current_cluster_file`, must answer. ``HOST:PORT`` / ``ray://HOST:PORT``: a TCP
    connection must open within ``timeout_s`` seconds; ``ray://`` also needs ``ray[client]``.

    Raises:
        ConfigError: malformed address, nothing reachable at it, or the Ray Client not installed.
    """
    if address == "local" or (address is None and not in_ray_job()):
        return
    if address is None or address == "auto":
        env = os.environ.get("RAY_ADDRESS")
        if env and env != "auto":
            return _check_target(env, timeout_s, f"RAY_ADDRESS={env} (what --address auto joins)")
        record = current_cluster_file()
        try:
            recorded = record.read_text().strip()
        except OSError:
            recorded = ""
        if not recorded:
            raise ConfigError(f"--address auto: no running Ray cluster found on this machine (no RAY_ADDRESS, "
                              f"no {record}); {_JOIN_HINT}")
        return _check_target(recorded, timeout_s, f"--address auto (the cluster recorded in {record}, {recorded})",
                             f"named by {record}, which a head stopped uncleanly leaves behind")
    return _check_target(address, timeout_s, f"--address {address!r}")


def _check_target(address: str, timeout_s: float, named: str, source: str = "") -> None:
    scheme, sep, target = address.rpartition("://")
    host, _, port = target.rpartition(":")
    if ((sep and scheme != "ray") or not host or not (port.isascii() and port.isdigit())  # '²'.isdigit() is True
            or not 0 < int(port) < 65536 or "/" in target):
        raise ConfigError(f"{named} must be auto, HOST:PORT or ray://HOST:PORT")
    if scheme == "ray":
        missing = missing_extra("ray", "client")
        if missing:
            raise ConfigError(f"{named} is a Ray Client address, and the Ray Client is not installed (missing "
                              f"{', '.join(missing)}); install it with {CLUSTER_EXTRA_HINT}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, UnicodeError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        where = f"{address}, {source}" if source else address
        raise ConfigError(f"cannot reach a Ray cluster at {where} ({reason}); {_JOIN_HINT}") from None


def missing_extra(distribution: str, extra: str) -> list[str]:
    """The requirements of ``distribution[extra]`` that are not installed here (names as the
    distribution's metadata spells them; ``[]`` when the extra is complete).

    Raises:
        ConfigError: ``distribution`` is not installed.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{distribution} is not installed") from None
    missing = []
    for line in requires:
        req = Requirement(line)
        if req.marker is None or not req.marker.evaluate({"extra": extra}) or req.marker.evaluate({"extra": ""}):
            continue  # not part of this extra (or needed without it)
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(req.name)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(f"{req.name}{req.specifier} (found {installed})")
    return sorted(set(missing))


def load_runtime_env(value: str | None) -> dict[str, Any] | None:
    """``--runtime-env``: inline JSON (``'{"pip": ["x"]}'``) or a YAML/JSON file, as
    ``ray job submit --runtime-env`` takes it. ``None`` stays ``None``.

    The fields are checked with :class:`ray.runtime_env.RuntimeEnv` (types, local paths,
    exclusive ``pip``/``uv``/``conda``); unknown fields are refused unless
    ``RAY_RUNTIME_ENV_PLUGINS`` registers plugins.

    Raises:
        ConfigError: unreadable file, not a mapping, an unknown field, or a field Ray refuses.
    """
    if value is None:
        return None
    import yaml

    text = value.strip()
    try:
        if text.startswith("{"):
            env = json.loads(text)
        else:
            env = yaml.safe_load(Path(value).expanduser().read_text())
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"--runtime-env {value!r}: cannot read it ({getattr(e, 'strerror', None) or e}); pass "
                          f"a YAML/JSON file or inline JSON such as '{{\"pip\": [\"pkg\"]}}'") from None
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--runtime-env {value!r} is not valid JSON/YAML ({first})") from None
    if not isinstance(env, dict):
        raise ConfigError(f"--runtime-env {value!r} must be a mapping of runtime_env fields, got "
                          f"{type(env).__name__}")
    from ray.runtime_env import RuntimeEnv

    unknown = sorted(set(env) - set(RuntimeEnv.known_fields))
    if unknown and not os.environ.get("RAY_RUNTIME_ENV_PLUGINS"):
        allowed = sorted(f for f in RuntimeEnv.known_fields if not f.startswith("_"))
        raise ConfigError(f"--runtime-env: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    try:
        RuntimeEnv(**env)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--runtime-env: {_first_line(e)}") from None
    return env


def runtime_env(address: str | None, user_env: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The ``runtime_env`` the driver passes to ``ray.init`` (see the module doc for the rules).

    Args:
        address: ``--address`` (``None``: unset).
        user_env: ``--runtime-env`` as :func:`load_runtime_env` returned it.

    Returns:
        ``user_env`` when given; ``None`` inside a Ray job whose runtime_env sets anything, and for
        a local Ray; else the project folder as ``working_dir`` with :data:`RUNTIME_ENV_EXCLUDES`.
    """
    if user_env is not None:
        return user_env
    if (in_ray_job() and job_runtime_env()) or not joins_cluster(address):
        return None
    return {"working_dir": str(PROJECT_ROOT), "excludes": list(RUNTIME_ENV_EXCLUDES)}


def check_launch(address: str | None, user_env: dict[str, Any] | None = None, dashboard: bool = False) -> None:
    """Every cheap check of where and how a search runs, before anything loads or Ray starts.

    Raises:
        ConfigError: see :func:`check_address`; ``dashboard`` (``--ray-dashboard``) with a cluster
            (its dashboard is the head's) or without Ray's dashboard installed.
    """
    if dashboard and joins_cluster(address):
        raise ConfigError("--ray-dashboard starts a dashboard with a local Ray; a cluster serves its own "
                          "(`ray start --head --include-dashboard true`, port 8265): drop --ray-dashboard or --address")
    check_address(address)
    if dashboard:
        missing = missing_extra("ray", "default")
        if missing:
            raise ConfigError(f"--ray-dashboard needs Ray's dashboard (ray[default]; missing {', '.join(missing)}): "
                              f"install it with {CLUSTER_EXTRA_HINT}")


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


def connect(address: str | None, user_env: dict[str, Any] | None = None, dashboard: bool = False) -> None:
    """``ray.init`` for a search: join a cluster or start a fresh local Ray (see the module doc).

    Args:
        address: ``--address`` (``None``: unset).
        user_env: ``--runtime-env`` as :func:`load_runtime_env` returned it.
        dashboard: ``--ray-dashboard``: start the local Ray with its dashboard and print its URL.

    While joining a cluster, SIGINT (Ctrl-C) and SIGTERM end the process at once with one
    ``error:`` line and exit code 130 or 143: Ray retries an unresponsive GCS inside calls that
    Python's own signal handling cannot interrupt.

    Raises:
        ConfigError: the cluster refused the connection (authentication, version mismatch), or
            the runtime_env that ``user_env`` set was refused (e.g. it conflicts with the Ray
            job's).
        ClusterError: Ray refused the runtime_env the search chose itself (the project folder),
            or a local Ray failed to start.
    """
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():
        return
    target = ray_address(address)
    env = runtime_env(address, user_env)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "runtime_env": env}
    if target == "local":
        kwargs["include_dashboard"] = dashboard
    where = "a local Ray" if target == "local" else f"the Ray cluster at {target}"
    try:
        with _exit_on_signal(where) if target != "local" else contextlib.nullcontext():
            context = ray.init(address=target, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TypeError, OSError, RayError) as e:
        raise _connect_error(e, target, env, user_env is not None) from None
    url = getattr(context, "dashboard_url", None)
    if dashboard and url:
        print(f"Ray dashboard: {url if '://' in url else 'http://' + url}", flush=True)


def _first_line(e: BaseException) -> str:
    """The first telling line of an error (Ray's generic ``Failed to set up runtime environment.`` skipped)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    telling = [ln for ln in lines if ln != "Failed to set up runtime environment."]
    line = (telling or lines or [type(e).__name__])[0]
    if len(line) > 300:  # cut after the last whole sentence that fits
        cut = line.rfind(". ", 0, 300)
        line = line[:cut + 1] if cut > 0 else line[:300]
    return line


def _connect_error(e: BaseException, target: str, env: dict[str, Any] | None, user_set: bool) -> Exception:
    """The one-line error for a failed ``ray.init``: runtime_env errors apart from connection ones."""
    text = f"{type(e).__name__} {e}".lower()
    if any(k in text for k in ("runtime env", "runtime_env", "working_dir", "py_modules", "package size")):
        job = job_runtime_env()
        clash = sorted((set(job) - {"env_vars"}) & set(env or {}))
        both_vars = set(job.get("env_vars") or {}) & set((env or {}).get("env_vars") or {})
        clash += sorted(f"env_vars.{k}" for k in both_vars)
        if "failed to merge" in text:
            message = (f"the runtime_env given to the search conflicts with the Ray job's runtime_env on "
                       f"{', '.join(clash) or 'a field both set'}: set each field once, in `ray job submit` "
                       f"(--working-dir, --runtime-env) or in --runtime-env (RAY_OVERRIDE_JOB_RUNTIME_ENV=1 lets "
                       f"--runtime-env win)")
        elif user_set:
            message = f"Ray refused the runtime_env of --runtime-env ({_first_line(e)})"
        elif env is None:
            message = f"Ray refused the Ray job's runtime_env ({_first_line(e)})"
        else:
            message = (f"Ray refused the runtime_env that ships the project folder {PROJECT_ROOT} as working_dir "
                       f"({_first_line(e)}); keep large files out of it (.gitignore), or choose what workers get "
                       f"with --runtime-env or `ray job submit --working-dir`")
        return ConfigError(message) if user_set else ClusterError(message)
    if target == "local":
        return ClusterError(f"cannot start a local Ray ({_first_line(e)})")
    first = _first_line(e)
    cause = e.__cause__
    if cause is not None and "auth" in f"{type(cause).__name__} {cause}".lower():
        first = "authentication failed"
    return ConfigError(f"cannot connect to the Ray cluster at {target} ({first}); {_AUTH_HINT}")


@contextlib.contextmanager
def _exit_on_signal(where: str) -> Iterator[None]:
    """End the process with one ``error:`` line on SIGINT/SIGTERM while the body runs.

    ``ray.init`` can block for minutes inside Ray's core (retrying a GCS that accepts no RPC),
    where Python runs no signal handler. The signals are therefore seen through
    :func:`signal.set_wakeup_fd`, whose byte the C-level handler writes at once, by a thread that
    exits the process (130 for SIGINT, 143 for SIGTERM). Where the body is in Python when the
    signal comes (the Ray Client's retries), the ``KeyboardInterrupt`` or the ``SystemExit`` of
    Ray's own SIGTERM handler ends it the same way. Only in the main thread; elsewhere the body
    runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = {}
    for sig in wanted:  # the wakeup fd only hears signals that have a Python handler
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, _ignore_in_python)
    old_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    done, once = threading.Event(), threading.Lock()

    def stop(number: int) -> None:
        once.acquire()  # the first of the watcher and the main thread to get here ends the process
        sys.stderr.write(f"error: stopped by {signal.Signals(number).name} while connecting to {where}; "
                         f"no trial ran\n")
        sys.stderr.flush()
        os._exit(128 + number)

    def watch() -> None:
        while not done.is_set():
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for number in data:
                if number in wanted and not done.is_set():
                    stop(number)

    watcher = threading.Thread(target=watch, name="featherweight-connect-signals", daemon=True)
    watcher.start()
    try:
        yield
    except KeyboardInterrupt:
        stop(signal.SIGINT)
    except SystemExit as e:
        if e.code == signal.SIGTERM:  # Ray's handler: sys.exit(signum)
            stop(signal.SIGTERM)
        raise
    finally:
        done.set()
        signal.set_wakeup_fd(old_fd)
        for sig, handler in previous.items():
            if signal.getsignal(sig) is _ignore_in_python:  # ray.init may have installed its own since
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        try:
            writer.send(b"\0")
        except OSError:
            pass
        watcher.join(5)
        reader.close()
        writer.close()


def _ignore_in_python(signum: int, frame: Any) -> None:
    """Python-level handler while :func:`_exit_on_signal` guards a connection (its thread acts)."""
