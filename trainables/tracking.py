"""Experiment trackers: one interface (start / log / finish), thin implementations.

The pattern of accelerate's ``tracking.py``: a trial talks to a :class:`Tracker`, never to
MLflow directly, so the same trial code runs inside Ray Tune (:class:`MlflowTracker`, one
child run per trial) and in a plain loop or a test (:class:`MemoryTracker`).

Example:
    >>> t = MemoryTracker()
    >>> t.start("trial-0", params={"lr": 0.01}, tags={"seed": "0"})
    >>> t.log_metrics({"accuracy": 81.5}, step=1)
    >>> t.finish()
    >>> t.metrics["accuracy"], t.status
    ([(1, 81.5)], 'FINISHED')
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Tracker:
    """Uniform interface of a trial's run.

    Lifecycle: :meth:`start` once, any number of :meth:`log_metrics` / :meth:`set_tags` /
    :meth:`log_artifact`, then :meth:`finish` with ``FINISHED`` or ``FAILED``.
    """

    run_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def set_tags(self, tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        raise NotImplementedError

    def finish(self, status: str = "FINISHED") -> None:
        raise NotImplementedError

    def fetch_student(self, run_id: str, dst: str | Path) -> Path:
        """Download the student file saved by run ``run_id`` (its ``model/*.safetensors``) into ``dst``.

        Raises:
            ConfigError: this tracker has no store to fetch from, or the run has no student.
        """
        from trainables.errors import ConfigError

        raise ConfigError(f"init_run_id {run_id!r}: starting from an earlier run's student needs MLflow tracking")


class MemoryTracker(Tracker):
    """Keeps everything in memory (plain loops, benchmarks, tests)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.status = "NOT_STARTED"

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.run_name, self.status = run_name, "RUNNING"
        self.params.update(params)
        self.tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, float(v)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(local_path), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        self.status = status


def _retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry transient store errors (sqlite 'database is locked' under concurrent trials)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # mlflow wraps sqlalchemy errors in MlflowException
            if i == attempts - 1 or "locked" not in str(e).lower():
                raise
            time.sleep(0.2 * 2 ** i)
    raise AssertionError("unreachable")


class MlflowTracker(Tracker):
    """One MLflow run, a child of the search's parent run.

    Args:
        tracking_uri: absolute URI (``sqlite:////abs/mlflow.db``, ``http://host:port``).
        experiment_id: the search's experiment (created by the driver with its artifact location).
        parent_run_id: the search's parent run; set as ``mlflow.parentRunId``.
        run_id: reuse an existing run (replays, resumed trials) instead of creating one.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str | None = None,
                 run_id: str | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.experiment_id, self.parent_run_id, self.run_id = experiment_id, parent_run_id, run_id

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        all_tags = dict(tags)
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        if self.run_id is None:
            run = _retry(lambda: self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags))
            self.run_id = run.info.run_id
        else:
            self.set_tags(all_tags)
        p = [Param(k, str(v)) for k, v in params.items()]
        try:
            _retry(lambda: self.client.log_batch(self.run_id, params=p, synchronous=True))
        except Exception:
            self.finish("FAILED")  # never leave the run RUNNING
            raise

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=ms, synchronous=True))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=ts, synchronous=True))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        local_path = Path(local_path)
        if local_path.is_dir():
            self.client.log_artifacts(self.run_id, str(local_path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        _retry(lambda: self.client.set_terminated(self.run_id, status=status))

    def fetch_student(self, run_id: str, dst: str | Path) -> Path:
        from trainables.errors import ConfigError

        try:
            files = [a.path for a in self.client.list_artifacts(run_id, "model") if a.path.endswith(".safetensors")]
        except Exception as e:
            raise ConfigError(f"init_run_id {run_id!r}: no such run in the tracking store ({type(e).__name__})") from None
        if not files:
            raise ConfigError(f"init_run_id {run_id!r}: the run has no model/*.safetensors student")
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, files[0], str(dst)))


def environment_tags() -> dict[str, str]:
    """Tags describing where a trial ran: ``hostname``, ``cpu``, ``gpu``, ``package_versions``."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:
        pass
    versions = []
    for pkg in ("torch", "ray", "optuna", "mlflow", "transformers", "tokenizers", "numpy"):
        try:
            versions.append(f"{pkg}=={md.version(pkg)}")
        except md.PackageNotFoundError:
            pass
    return {"hostname": socket.gethostname(), "cpu": f"{cpu} x{os.cpu_count()}", "gpu": gpu,
            "package_versions": ",".join(versions)}
