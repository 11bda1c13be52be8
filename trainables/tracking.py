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

import json
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Tracker:
    """Uniform interface of a trial's run.

    Lifecycle: :meth:`start` once, any number of :meth:`log_metrics` / :meth:`set_tags` /
    :meth:`log_artifact` / :meth:`log_datasets` / :meth:`log_model`, then :meth:`finish` with
    ``FINISHED`` or ``FAILED``.
    """

    run_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        raise NotImplementedError

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Log ``metrics`` at ``step``; with ``model_id`` they are also the metrics of that logged model."""
        raise NotImplementedError

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        """Record the datasets the run reads (MLflow: the run's inputs). Default: nothing is recorded."""

    def log_model(self, student_path: str | Path, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, str] | None = None, step: int = 0) -> str | None:
        """Log the student file ``student_path`` as a model of the run; returns its id (``None``: not logged)."""
        return None

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


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset a trial reads, as an MLflow dataset input.

    Attributes:
        name: e.g. ``sst2-train``.
        context: the role, MLflow's ``mlflow.data.context`` input tag: ``train``, ``validation``,
            ``dev``, ``dev_mismatched``.
        data_hash: sha256 hex digest of the rows (:func:`trainables.data.glue.content_hash`).
        source: the file path, or ``hub:nyu-mll/glue/<task>/<split>``.
        num_rows: rows of the split.
        columns: ``(name, MLflow type)`` of each column (``string``, ``long``).
    """

    name: str
    context: str
    data_hash: str
    source: str
    num_rows: int
    columns: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        """The MLflow digest: the data hash cut to MLflow's 36-character limit."""
        return self.data_hash[:DIGEST_CHARS]


#: Longest dataset digest MLflow stores.
DIGEST_CHARS = 36


class MemoryTracker(Tracker):
    """Keeps everything in memory (plain loops, benchmarks, tests)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.datasets: list[DatasetRecord] = []
        self.models: list[dict[str, Any]] = []  # one per log_model: student_path, name, params, tags, step
        self.model_metrics: dict[str, dict[str, float]] = {}  # model id -> metrics logged with it
        self.status = "NOT_STARTED"

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        self.run_name, self.status = run_name, "RUNNING"
        self.params.update(params)
        self.tags.update(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, float(v)))
        if model_id is not None:
            self.model_metrics.setdefault(model_id, {}).update({k: float(v) for k, v in metrics.items()})

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        self.datasets.extend(datasets)

    def log_model(self, student_path: str | Path, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, str] | None = None, step: int = 0) -> str | None:
        self.models.append({"student_path": str(student_path), "name": name, "params": dict(params or {}),
                            "tags": dict(tags or {}), "step": step})
        return f"memory-model-{len(self.models)}"

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


#: Seconds between two samples of the system metrics (CPU, memory, disk, network) of a trial run.
SYSTEM_METRICS_INTERVAL_S = 5.0


class MlflowTracker(Tracker):
    """One MLflow run, a child of the search's parent run.

    Everything goes through an ``MlflowClient`` with the run's id (no fluent API, no global
    state), so trials log from Ray workers.

    Args:
        tracking_uri: absolute URI (``sqlite:////abs/mlflow.db``, ``http://host:port``).
        experiment_id: the search's experiment (created by the driver with its artifact location).
        parent_run_id: the search's parent run; set as ``mlflow.parentRunId``.
        run_id: reuse an existing run (replays, resumed trials) instead of creating one.
        system_metrics: sample the machine's CPU, memory, disk and network use every
            :data:`SYSTEM_METRICS_INTERVAL_S` seconds while the run is open (MLflow's system
            metrics, ``system/...``; needs ``psutil``, else skipped with a warning).
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str | None = None,
                 run_id: str | None = None, system_metrics: bool = False):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment_id, self.parent_run_id, self.run_id = experiment_id, parent_run_id, run_id
        self.system_metrics = system_metrics
        self._monitor: Any = None

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
        if self.system_metrics:
            self._start_system_metrics()

    def _start_system_metrics(self) -> None:
        """Start MLflow's system-metrics sampler on this run (a thread; stopped by :meth:`finish`)."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no notes per trial
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                 tracking_uri=self.tracking_uri)
            self._monitor.start()
        except Exception as e:  # psutil missing, or a monitor that cannot start here
            self._monitor = None
            log.warning("system metrics are not recorded for run %s: %s", self.run_id, e)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step or 0, model_id=model_id) for k, v in metrics.items()]
        _retry(lambda: self.client.log_batch(self.run_id, metrics=ms, synchronous=True))

    def log_datasets(self, datasets: Sequence[DatasetRecord]) -> None:
        """Log each dataset as an MLflow dataset input of the run (``MlflowClient.log_inputs``), tagged
        ``mlflow.data.context`` with its role; digest: the data hash (first 36 hex digits), the full
        hash in the dataset's profile."""
        if datasets:
            inputs = [dataset_input(d) for d in datasets]
            _retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def log_model(self, student_path: str | Path, name: str, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, str] | None = None, step: int = 0) -> str | None:
        """Log the student file as an MLflow model (a LoggedModel, ``models:/<model id>``) of this run.

        The model is the pyfunc of :func:`trainables.serving.save_pyfunc` (models-from-code, with a
        signature and an input example); it is linked to the run as an output at ``step``.

        Returns:
            The model id.

        Raises:
            MlflowException: the store refused the model (the model is then marked ``FAILED``).
        """
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from trainables.serving import save_pyfunc

        model = _retry(lambda: self.client.create_logged_model(
            self.experiment_id, name=name, source_run_id=self.run_id, model_type="featherweight-student",
            params={k: str(v)[:6000] for k, v in (params or {}).items()},
            tags={k: str(v)[:5000] for k, v in (tags or {}).items()}))
        try:
            with tempfile.TemporaryDirectory(prefix="featherweight-model-") as tmp:
                meta = Model(artifact_path=model.artifact_location, run_id=self.run_id, model_uuid=model.model_id,
                             model_id=model.model_id)
                folder = save_pyfunc(student_path, Path(tmp) / "model", mlflow_model=meta)
                self.client.log_model_artifacts(model.model_id, str(folder))
            _retry(lambda: self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY))
            _retry(lambda: self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)]))
        except BaseException:
            try:  # the model stays listed, marked FAILED; the original error is what the trial reports
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            except Exception as e:
                log.warning("could not mark model %s FAILED: %s", model.model_id, e)
            raise
        return model.model_id

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
        if self._monitor is not None:
            try:
                self._monitor.finish()
                # the samples taken since the last logged window (a run shorter than the sampling
                # interval has only these), before the run closes
                tail = self._monitor.aggregate_metrics()
                if tail:
                    self._monitor.publish_metrics(tail)
                    self._monitor.mlflow_logger.flush()
            except Exception as e:
                log.warning("system metrics of run %s: %s", self.run_id, e)
            self._monitor = None
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


def dataset_input(record: DatasetRecord) -> Any:
    """The ``mlflow.entities.DatasetInput`` of a :class:`DatasetRecord`.

    The dataset's source is MLflow's JSON for a local file (``{"uri": path}``, source type
    ``local``) or a Hugging Face dataset (``{"path", "config_name", "split"}``, ``hugging_face``);
    its schema is an MLflow column schema; its profile holds ``num_rows`` and the full ``data_hash``.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    if record.source.startswith("hub:"):
        parts = record.source[len("hub:"):].split("/")
        source_type = "hugging_face"
        source = json.dumps({"path": "/".join(parts[:-2]), "config_name": parts[-2], "split": parts[-1]})
    else:
        source_type, source = "local", json.dumps({"uri": record.source})
    schema = json.dumps({"mlflow_colspec": [{"type": t, "name": n, "required": True} for n, t in record.columns]})
    profile = json.dumps({"num_rows": record.num_rows, "data_hash": record.data_hash})
    dataset = Dataset(record.name, record.digest, source_type, source, schema=schema, profile=profile)
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", record.context)])


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
