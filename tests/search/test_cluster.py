"""Cluster operation and fault tolerance on a real 2-node Ray cluster and an MLflow server (127.0.0.1).

One module-scoped cluster serves both tests: ``ray start --head`` and a second ``ray start
--address`` (1 CPU each, token authentication with a test token), and ``run_search.py server``.
Every process is started in its own session and stopped at the end, even on failure.

Failure injection: the nodes run with ``FEATHERWEIGHT_TEST_CRASH_ONCE=<file>`` and
``crash_hook/`` on their ``PYTHONPATH``, whose ``sitecustomize`` wraps the trainable's epoch
report: while ``<file>`` exists, the first trial to report an epoch deletes it and dies
(``os._exit``), or raises when the file holds ``raise``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.search.local_processes import free_port as _free_port
from tests.search.local_processes import kill_processes_mentioning as _kill_processes_mentioning
from tests.search.local_processes import port_open as _port_open
from tests.search.local_processes import wait as _wait

ROOT = Path(__file__).resolve().parents[2]
FAST_SPACE = Path(__file__).with_name("fast.yaml")
CRASH_HOOK = Path(__file__).with_name("crash_hook")
pytestmark = pytest.mark.slow


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class Cluster:
    """The processes of the test cluster and what a driver needs to reach it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="fw", dir="/tmp"))  # short: unix socket paths <= 107 bytes
        self.crash_marker = workdir / "crash-marker"
        self.port, self.mlflow_port = _free_port(), _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "FEATHERWEIGHT_TEST_CRASH_ONCE": str(self.crash_marker), "RAY_USAGE_STATS_ENABLED": "0",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(CRASH_HOOK), os.environ.get("PYTHONPATH")])),
                    "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen] = []

    def popen(self, args: list[str], log: str, **kw) -> subprocess.Popen:
        out = open(self.workdir / log, "w")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def ray_node(self, head: bool) -> subprocess.Popen:
        common = ["--block", "--num-cpus", "1", "--object-store-memory", str(120 * 2**20), "--temp-dir",
                  str(self.ray_tmp), "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
        if head:
            args = ["--head", "--port", str(self.port), "--include-dashboard", "false", "--dashboard-port",
                    str(_free_port())]
        else:
            args = ["--address", self.address]
        ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter
        return self.popen([*ray_cli, "start", *args, *common], "head.log" if head else "worker.log")

    def start(self) -> None:
        server = self.popen([sys.executable, str(ROOT / "run_search.py"), "server", "--port", str(self.mlflow_port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.workdir}/server.db",
                             "--artifacts-destination", str(self.workdir / "server-artifacts")], "server.log",
                            cwd=self.workdir)
        head = self.ray_node(head=True)
        _wait(lambda: _port_open(self.port), 120, "the Ray head", [head])
        worker = self.ray_node(head=False)
        # a driver that waits for both nodes and checks the project reaches workers through runtime_env
        probe = subprocess.run([sys.executable, "-c", _PROBE, self.address], capture_output=True, text=True,
                               env={**self.env, "PYTHONPATH": str(ROOT)},  # this checkout, not an installed copy
                               timeout=240, cwd=self.workdir)
        assert probe.returncode == 0, probe.stderr[-3000:]
        assert "nodes=2" in probe.stdout, probe.stdout
        _wait(lambda: _healthy(self.tracking_uri), 240, "the MLflow server", [server, worker])

    def stop(self) -> None:
        for p in reversed(self.procs):  # ray start --block stops its node's processes on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # anything left in the session this test started
            except (ProcessLookupError, PermissionError):
                pass
        _kill_processes_mentioning(str(self.ray_tmp))  # Ray workers run in sessions of their own
        shutil.rmtree(self.ray_tmp, ignore_errors=True)


# Runs in a separate driver: both nodes alive, and a task shipped with the search's runtime_env
# imports the project's packages from the uploaded working_dir (not from this checkout).
_PROBE = r"""
import os, sys, time
import ray
from search.cluster import runtime_env
ray.init(address=sys.argv[1], runtime_env=runtime_env(sys.argv[1]), logging_level="WARNING")
deadline = time.time() + 180
while sum(n["Alive"] for n in ray.nodes()) < 2 and time.time() < deadline:
    time.sleep(0.5)
@ray.remote(num_cpus=0)
def where():
    import search, spaces, trainables.trial.stages
    return os.path.dirname(os.path.dirname(os.path.dirname(trainables.trial.stages.__file__))), os.getcwd()
pkg, cwd = ray.get(where.remote())
assert pkg == cwd and "runtime_resources" in pkg and "working_dir" in pkg, (pkg, cwd)
print(f"nodes={sum(n['Alive'] for n in ray.nodes())} code={pkg}")
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _search_args(cluster: Cluster, tmp: Path, glue_dir, teacher, experiment: str, n: int, max_failures: int):
    return [sys.executable, str(ROOT / "run_search.py"), "search", "--task", "sst2", "--data-dir", str(glue_dir),
            "--teacher", str(teacher), "--space", str(FAST_SPACE), "--num-samples", str(n), "--max-concurrent", "2",
            "--experiment", experiment, "--address", cluster.address, "--tracking-uri", cluster.tracking_uri,
            "--storage-path", str(tmp / "ray_results"), "--max-failures", str(max_failures),
            "--cache-dir", str(cluster.workdir / "cache"), "--verbose", "0"]


def _runs(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("featherweight.role") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return exp, parents, children


def test_cluster_search_spreads_trials_retries_a_dead_worker_and_serves_artifacts(cluster, tmp_path, glue_dir,
                                                                                   sst2_teacher):
    from mlflow.tracking import MlflowClient

    from trainables.formats import load_student

    cluster.crash_marker.write_text("exit")  # one trial's worker dies after its first epoch
    proc = subprocess.run(_search_args(cluster, tmp_path, glue_dir, sst2_teacher, "cluster", 4, 1), cwd=tmp_path,
                          env=cluster.env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert not cluster.crash_marker.exists(), "the crash hook never fired"
    assert "Pareto front over val_accuracy (max), size_bytes (min)" in proc.stdout

    client = MlflowClient(cluster.tracking_uri)
    exp, parents, children = _runs(client, "cluster")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server stores what workers upload
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["failed_trials"] == "0"
    finished = [r for r in children if r.info.status == "FINISHED"]
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(finished) == 4 and len(failed) == 1 and len(children) == 5
    assert len({r.data.tags["trial_id"] for r in finished}) == 4
    # the dead attempt is FAILED with an error; its retry is a new FINISHED run of the same trial
    dead = failed[0]
    assert "worker died" in dead.data.tags["error"]
    retry = next(r for r in finished if r.data.tags["trial_id"] == dead.data.tags["trial_id"])
    assert retry.data.tags["attempt"] == "2" and retry.data.tags["retry_of"] == dead.info.run_id
    # the retry continued from the epoch checkpoint the dead attempt reported, and logged its curve again
    assert retry.data.tags["resumed_from_epoch"] == "1"
    assert [m.step for m in client.get_metric_history(retry.info.run_id, "train_loss")] == [1]
    # both nodes ran trials (one box, so one hostname, two Ray node ids): the first two trials run at once, and
    # each node has 1 CPU (which of them finish where depends on where the dead attempt ran)
    assert len({r.data.tags["ray_node_id"] for r in children}) == 2
    assert len({r.data.tags["hostname"] for r in children}) == 1
    for run in finished:
        local = Path(client.download_artifacts(run.info.run_id, "model", str(tmp_path / run.info.run_id)))
        model, _, cfg = load_student(local / "student.safetensors")
        assert cfg["student"] == "ffn" and (local / "config.yaml").is_file()


def test_killed_driver_is_resumed_without_duplicates(cluster, tmp_path, glue_dir, sst2_teacher):
    from mlflow.tracking import MlflowClient

    n = 4
    cluster.crash_marker.write_text("raise")  # one trial raises; with --max-failures 0 it errors for good
    driver = subprocess.Popen(_search_args(cluster, tmp_path, glue_dir, sst2_teacher, "resume", n, 0), cwd=tmp_path,
                              env=cluster.env, stdout=open(tmp_path / "driver.log", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    client = MlflowClient(cluster.tracking_uri)
    try:
        def mid_search() -> bool:
            if client.get_experiment_by_name("resume") is None:
                return False
            status = Counter(r.info.status for r in _runs(client, "resume")[2])
            state = list((tmp_path / "ray_results").glob("*/experiment_state-*.json"))
            return bool(state) and status["FINISHED"] >= 1 and status["FAILED"] >= 1 and status["RUNNING"] >= 1
        _wait(mid_search, 600, "a finished, a failed and a running trial", [driver])
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver dies; the cluster and the server live on
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-3000:]
    assert _runs(client, "resume")[1][0].info.status == "RUNNING"  # the driver never closed its search

    proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "resume", "--experiment", "resume",
                           "--tracking-uri", cluster.tracking_uri, "--storage-path", str(tmp_path / "ray_results")],
                          cwd=tmp_path, env=cluster.env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "resuming search" in proc.stdout

    _, parents, children = _runs(client, "resume")
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["resume_count"] == "1"
    assert len(finished) == n, Counter(r.info.status for r in children)
    assert len({r.data.tags["trial_id"] for r in finished}) == n  # no trial finished twice
    assert not [r for r in children if r.info.status == "RUNNING"]
    # the injected failure stays on record as a FAILED run with its error; resume retried that trial
    raised = [r for r in children if "injected trial failure" in r.data.tags.get("error", "")]
    assert len(raised) == 1 and raised[0].info.status == "FAILED"
    assert raised[0].data.tags["trial_id"] in {r.data.tags["trial_id"] for r in finished}

    # the Optuna study (sqlite beside the Tune state, owned by the driver) outlived the killed driver, and the
    # resumed search kept writing to it: every COMPLETE trial has the values of a finished run, and every
    # finished trial is COMPLETE except the one that had errored for good before the resume (Ray's
    # OptunaSearch records one result per trial id: that one stays FAIL)
    from search.optuna_store import load_search_study

    url = parents[0].data.params["optuna_storage"]
    assert url.startswith(f"sqlite:///{tmp_path}/ray_results/") and url.endswith("/optuna.db")
    study = load_search_study(parents[0])
    states = Counter(t.state.name for t in study.trials)
    values = {(r.data.metrics["val_accuracy"], r.data.metrics["size_bytes"]) for r in finished}
    assert {tuple(t.values) for t in study.trials if t.state.name == "COMPLETE"} <= values
    assert states["COMPLETE"] >= n - 1 and states["COMPLETE"] + states["FAIL"] >= n, states
