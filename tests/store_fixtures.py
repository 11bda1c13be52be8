"""Fixtures (loaded by tests/conftest.py): a real sqlite MLflow store filled with searches shaped like run_search's."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from analysis.store import ROLE_TAG
from trainables.config import resolve_config

T0 = 1_700_000_000_000  # ms; start times are T0 + offsets so trial order is known


@dataclass
class Store:
    """A sqlite MLflow store and helpers that write runs the way a search does."""

    uri: str
    client: Any
    tmp: Path

    def experiment(self, name: str) -> str:
        return self.client.create_experiment(name, artifact_location=(self.tmp / "art").as_uri())

    def search(self, exp_id: str, search_id: str, *, start: int = 0, sampler: str = "tpe",
               objectives: str | None = "accuracy:max,size_bytes:min", params: dict | None = None) -> str:
        all_params = {"task": "sst2", "sampler": sampler, **({"objectives": objectives} if objectives else {}),
                      **(params or {})}
        from mlflow.entities import Param

        # as search.mlflow_store.start_parent_run, with a known start time
        tags = {"search_id": search_id, "sampler": sampler, "random_search": str(sampler == "random").lower(),
                ROLE_TAG: "search"}
        run = self.client.create_run(exp_id, start_time=T0 + start, run_name=f"search-{search_id}", tags=tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in all_params.items()])
        return run.info.run_id

    def trial(self, exp_id: str, parent: str, *, start: int, metrics: dict[str, float] | None = None,
              config: dict | None = None, status: str = "FINISHED", trial_id: str = "",
              epochs: dict[str, list[float]] | None = None, role: str = "trial",
              search_id: str = "s", energy_method: str = "unavailable") -> str:
        from mlflow.entities import Metric, Param, RunTag

        run = self.client.create_run(exp_id, start_time=T0 + start, run_name=f"trial-{trial_id}",
                                     tags={"mlflow.parentRunId": parent, ROLE_TAG: role, "trial_id": trial_id,
                                           "search_id": search_id})
        rid = run.info.run_id
        cfg = resolve_config(config or {"student": "ffn", "embedding": "hash"})
        now = int(time.time() * 1000)
        # per-epoch values at step = epoch, then the final values one step after the last epoch (as the pipeline does)
        ms = [Metric(k, v, now + i, i + 1) for k, values in (epochs or {}).items() for i, v in enumerate(values)]
        last = max((len(v) for v in (epochs or {}).values()), default=0)
        ms += [Metric(k, float(v), now + 100, last + 1) for k, v in (metrics or {}).items()]
        tags = [RunTag("energy_method", energy_method)] if status == "FINISHED" else []
        self.client.log_batch(rid, metrics=ms, params=[Param(k, str(v)) for k, v in cfg.items()], tags=tags,
                              synchronous=True)
        self.client.set_terminated(rid, status=status, end_time=T0 + start + 1000)
        return rid


def _open(tmp: Path, template: Path) -> Store:
    """A store in ``tmp`` started from a copy of the migrated empty database ``template``."""
    from mlflow.tracking import MlflowClient

    shutil.copyfile(template, tmp / "mlflow.db")
    uri = f"sqlite:///{tmp}/mlflow.db"
    return Store(uri, MlflowClient(uri), tmp)


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite database, created (schema migrations: seconds) once per session."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, empty_db: Path) -> Store:
    return _open(tmp_path, empty_db)


# (accuracy %, size_bytes, latency_ms, train_time_s, student); 2-objective (accuracy max,
# size_bytes min) ranks: front {t0, t1, t3}; t2, t4, t7 rank 1; t5 rank 2 (t7 dominates it); t6 rank 3.
POINTS = {
    "t0": (80.0, 1000, 1.0, 10.0, "ffn"),
    "t1": (85.0, 5000, 2.0, 20.0, "ffn"),
    "t2": (82.0, 8000, 0.5, 30.0, "bilstm"),
    "t3": (90.0, 20000, 3.0, 40.0, "bilstm"),
    "t4": (78.0, 3000, 1.5, 10.0, "ffn"),
    "t5": (88.0, 50000, 4.0, 60.0, "bilstm"),
    "t6": (70.0, 60000, 5.0, 5.0, "ffn"),
    "t7": (90.0, 30000, 3.5, 50.0, "bilstm"),
}
RANKS_2D = {"t0": 0, "t1": 0, "t2": 1, "t3": 0, "t4": 1, "t5": 2, "t6": 3, "t7": 1}


@dataclass
class Search:
    store: Store
    exp_id: str
    parent: str
    old_parent: str
    runs: dict[str, str]  # trial id -> run id (finished trials of the latest search)
    failed: str
    old_runs: list[str]
    points: dict[str, tuple] = field(default_factory=lambda: dict(POINTS))
    ranks_2d: dict[str, int] = field(default_factory=lambda: dict(RANKS_2D))


def make_search(store: Store, name: str = "fw", sampler: str = "tpe",
                objectives: str | None = "accuracy:max,size_bytes:min") -> Search:
    """Two searches in one experiment; the later one has the 8 POINTS, one failed trial, one
    child tagged as a replay, and per-epoch values of accuracy for t1 logged at higher steps."""
    exp = store.experiment(name)
    old = store.search(exp, "old", start=0, sampler="random", objectives=objectives)
    old_runs = [store.trial(exp, old, start=10 + i, trial_id=f"o{i}", search_id="old",
                            metrics={"accuracy": 60.0 + i, "size_bytes": 100 * (i + 1)}) for i in range(2)]
    parent = store.search(exp, "new", start=1000, sampler=sampler, objectives=objectives)
    runs, failed = {}, ""
    # created out of order on purpose: trial_order must come from start times
    for i, tid in enumerate(["t3", "t0", "t5", "t1", "t7", "t2", "t6", "t4"]):
        order = int(tid[1])
        start = 2000 + 10 * order + (5 if order >= 3 else 0)
        acc, size, lat, ttime, student = POINTS[tid]
        runs[tid] = store.trial(
            exp, parent, start=start, trial_id=tid, search_id="new",
            metrics={"accuracy": acc, "size_bytes": size, "latency_ms": lat, "train_time_s": ttime},
            config={"student": student, "embedding": "hash", "lr": 0.001 * (order + 1), "embedding_dim": 10 + order},
            epochs={"accuracy": [acc - 2, acc - 5], "size_bytes": [size, size]} if tid == "t1" else None,
            energy_method="estimate" if tid == "t3" else "unavailable")
    failed = store.trial(exp, parent, start=2033, trial_id="tf", search_id="new", status="FAILED",
                         metrics={"accuracy": 99.0, "size_bytes": 10})
    store.trial(exp, parent, start=2100, trial_id="r", search_id="new", role="replay",
                metrics={"accuracy": 99.0, "size_bytes": 10})
    return Search(store, exp, parent, old, runs, failed, old_runs)


@pytest.fixture
def search(store: Store) -> Search:
    """A fresh store with the two searches of :func:`make_search` (for tests that write to it)."""
    return make_search(store)


@pytest.fixture(scope="module")
def shared_search(tmp_path_factory: pytest.TempPathFactory, empty_db: Path) -> Search:
    """The same, shared by a module's read-only tests."""
    return make_search(_open(tmp_path_factory.mktemp("shared"), empty_db))


@pytest.fixture
def new_search():
    """``make_search`` itself, for tests that build searches in their own store."""
    return make_search
