"""The ways to launch a search, each against real Ray processes on 127.0.0.1.

A module-scoped head (``ray start --head --block``, 2 CPUs, dashboard, Ray Client server, token
authentication with a test token, its own temp folder and free ports, so that no other Ray on
the machine is touched) serves:

* ``ray job submit --working-dir <checkout>``: the driver runs inside a Ray job and uses the
  job's runtime_env (the old driver shipped its own ``working_dir`` and Ray refused to merge it);
* the Ray Client (``--address ray://127.0.0.1:PORT``) from a plain shell;
* runtime_env errors: a ``--runtime-env`` that conflicts with the job's (exit 2, the user's
  flags) and a project folder too large for Ray's package limit (exit 1), each one line without
  the authentication hint.

Without the head: a search without ``--address`` while Ray's ``ray_current_cluster`` file names a
killed head (it starts its own Ray, with the cluster extra's modules hidden, as after a plain
``pip install -e .``), ``--ray-dashboard``, and SIGTERM/SIGINT while joining a cluster whose GCS
port accepts connections but never answers.

Every process is started in a session of its own and killed at the end, even on failure.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.search.local_processes import free_port as _free_port
from tests.search.local_processes import kill_processes_mentioning as _kill_processes_mentioning
from tests.search.local_processes import port_open as _port_open
from tests.search.local_processes import wait as _wait

ROOT = Path(__file__).resolve().parents[2]
FAST_SPACE = Path(__file__).with_name("fast.yaml")
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter
# top-level modules that only the cluster extra (ray[default,client]) installs
CLUSTER_EXTRA_MODULES = ("aiohttp_cors", "colorful", "distlib", "grpc", "opencensus", "prometheus_client",
                         "smart_open", "virtualenv")


def _stop(procs: list[subprocess.Popen], temp_dir: Path) -> None:
    for p in procs:  # `ray start --block` stops its node's processes on SIGTERM
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _kill_processes_mentioning(str(temp_dir))  # Ray workers run in sessions of their own
    shutil.rmtree(temp_dir, ignore_errors=True)


def _test_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR")}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1", **extra})
    return env


class Head:
    """One Ray head with its dashboard (Jobs API) and Ray Client server, on free ports."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fwl", dir="/tmp"))  # short: unix socket paths <= 107 bytes
        self.port, self.dashboard_port, self.client_port = _free_port(), _free_port(), _free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.client = f"ray://127.0.0.1:{self.client_port}"
        self.env = _test_env()
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        args = ["start", "--head", "--block", "--port", str(self.port), "--num-cpus", "2",
                "--object-store-memory", str(256 * 2**20), "--temp-dir", str(self.temp_dir / "ray"),
                "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(self.dashboard_port), "--ray-client-server-port", str(self.client_port),
                "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
        log = open(self.workdir / "head.log", "w")
        head = subprocess.Popen([*RAY_CLI, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        self.procs.append(head)
        _wait(lambda: _port_open(self.port), 120, "the Ray head's GCS", [head])
        _wait(lambda: _http_ok(self.dashboard + "/api/version", self.env["RAY_AUTH_TOKEN"]), 180,
              "the Ray dashboard", [head])
        _wait(lambda: _port_open(self.client_port), 120, "the Ray Client server", [head])

    def stop(self) -> None:
        _stop(self.procs, self.temp_dir)

    def job(self, submission_id: str, entrypoint: list[str], *submit_args: str) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir <checkout> ... -- <entrypoint>``, waiting for the job to end."""
        return subprocess.run([*RAY_CLI, "job", "submit", "--address", self.dashboard, "--working-dir", str(ROOT),
                               "--submission-id", submission_id, *submit_args, "--", *entrypoint],
                              env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=900)

    def job_status(self, submission_id: str) -> str:
        return subprocess.run([*RAY_CLI, "job", "status", "--address", self.dashboard, submission_id], env=self.env,
                              capture_output=True, text=True, timeout=120).stdout

    def job_logs(self, submission_id: str) -> str:
        return subprocess.run([*RAY_CLI, "job", "logs", "--address", self.dashboard, submission_id], env=self.env,
                              capture_output=True, text=True, timeout=120).stdout


def _http_ok(url: str, token: str | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    h = Head(tmp_path_factory.mktemp("launch"))
    try:
        h.start()
        yield h
    finally:
        h.stop()


def _search(tmp: Path, glue_dir, teacher, experiment: str, *extra: str, space: str | Path = FAST_SPACE,
            script: str | Path = ROOT / "run_search.py", trials: int = 2) -> list[str]:
    return [sys.executable, str(script), "search", "--task", "sst2", "--data-dir", str(glue_dir), "--teacher",
            str(teacher), "--space", str(space), "--num-samples", str(trials), "--max-concurrent", "2",
            "--experiment", experiment,
            "--tracking-uri", f"sqlite:///{tmp}/m.db", "--storage-path", str(tmp / "ray_results"),
            "--cache-dir", str(tmp / "cache"), "--verbose", "0", *extra]


def _runs(tmp: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp}/m.db")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("featherweight.role") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _assert_parent_and_finished_trials(tmp: Path, experiment: str, trials: int = 2):
    parents, children = _runs(tmp, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all("accuracy" in r.data.metrics and "size_bytes" in r.data.metrics for r in children)
    return parents[0]


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text and "RAY_AUTH_MODE" not in lines[0], text[-3000:]
    return lines[0]


@pytest.mark.slow
def test_ray_job_submit_with_working_dir_uses_the_jobs_runtime_env(head, tmp_path, glue_dir, sst2_teacher):
    # relative --space: the driver runs in the job's unpacked working_dir, not in this checkout
    entry = _search(tmp_path, glue_dir, sst2_teacher, "rayjob", "--address", "auto",
                    space="tests/search/fast.yaml", script="run_search.py")
    proc = head.job("fw-job-ok", entry)
    status = head.job_status("fw-job-ok")
    assert proc.returncode == 0 and "succeeded" in status.lower(), proc.stdout[-4000:] + proc.stderr[-2000:] + status
    assert "Failed to merge" not in proc.stdout + proc.stderr
    parent = _assert_parent_and_finished_trials(tmp_path, "rayjob")
    assert parent.data.params["address"] == "auto"
    space = json.loads(parent.data.tags["featherweight.search_options"])["space"]
    assert "runtime_resources" in space and "_ray_pkg_" in space, space


@pytest.mark.slow
def test_ray_client_address_runs_the_search(head, tmp_path, glue_dir, sst2_teacher):
    proc = subprocess.run(_search(tmp_path, glue_dir, sst2_teacher, "rayclient", "--address", head.client),
                          cwd=tmp_path, env=head.env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    assert re.search(r"Pareto front over val_accuracy \(max\), size_bytes \(min\): [12] of 2 finished trials", proc.stdout)
    parent = _assert_parent_and_finished_trials(tmp_path, "rayclient")
    assert parent.data.params["address"] == head.client


@pytest.mark.slow
def test_runtime_env_conflicting_with_the_jobs_is_one_line_and_exit_2(head, tmp_path, glue_dir, sst2_teacher):
    entry = _search(tmp_path, glue_dir, sst2_teacher, "conflict", "--address", "auto", "--runtime-env",
                    '{"env_vars": {"FW_LAUNCH_TEST": "flag"}}', space="tests/search/fast.yaml", script="run_search.py")
    proc = head.job("fw-job-conflict", entry, "--runtime-env-json", '{"env_vars": {"FW_LAUNCH_TEST": "job"}}')
    status = head.job_status("fw-job-conflict")
    assert proc.returncode != 0 and "failed" in status.lower() and "exit code 2" in status, status
    line = _one_error_line(head.job_logs("fw-job-conflict"))
    assert "conflicts with the Ray job's runtime_env on env_vars.FW_LAUNCH_TEST" in line, line
    assert not (tmp_path / "m.db").exists()  # refused before the MLflow store was touched


@pytest.mark.slow
def test_project_folder_refused_by_ray_is_one_line_and_exit_1(head, tmp_path, glue_dir, sst2_teacher):
    # a copy of the project holding a file larger than Ray's package limit (lowered from 512 MiB
    # to 195 KiB through Ray's own setting, so that the test need not write 512 MiB)
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.db", "mlartifacts",
                                                                 "mlruns", ".pytest_cache", "*.egg-info"))
    (project / "large.bin").write_bytes(os.urandom(300_000))
    env = {**head.env, "RAY_max_grpc_message_size": "200000"}
    proc = subprocess.run(_search(tmp_path, glue_dir, sst2_teacher, "big", "--address", f"127.0.0.1:{head.port}",
                                  script=project / "run_search.py"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert f"Ray refused the runtime_env that ships the project folder {project} as working_dir" in line, line
    assert "exceeds the maximum size" in line and "authentication" not in line, line


@pytest.fixture
def ray_tmpdir():
    """A Ray temp folder of the test's own (``RAY_TMPDIR``): its ``ray/ray_current_cluster`` is the
    file a plain ``ray.init()`` reads, and nothing in /tmp/ray is touched."""
    path = Path(tempfile.mkdtemp(prefix="fwd", dir="/tmp"))
    try:
        yield path
    finally:
        _kill_processes_mentioning(str(path))
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_no_address_starts_a_fresh_local_ray_despite_a_dead_recorded_head(ray_tmpdir, tmp_path, glue_dir,
                                                                           sst2_teacher):
    env = _test_env(RAY_TMPDIR=str(ray_tmpdir))
    port = _free_port()
    head = subprocess.Popen([*RAY_CLI, "start", "--head", "--block", "--port", str(port), "--num-cpus", "1",
                             "--object-store-memory", str(100 * 2**20), "--include-dashboard", "false",
                             "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"],
                            env=env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    record = ray_tmpdir / "ray" / "ray_current_cluster"
    try:
        _wait(lambda: record.is_file() and _port_open(port), 120, "the head to record itself", [head])
    finally:  # an unclean stop: every process of that head dies at once, the record stays
        os.killpg(head.pid, signal.SIGKILL)
        _kill_processes_mentioning(str(ray_tmpdir))
        head.wait()
    _wait(lambda: not _port_open(port), 30, "the dead head's GCS port to close")
    assert record.read_text().strip().endswith(f":{port}")

    # the cluster extra's modules hidden: the search needs no extra (README quick start, command 1)
    hidden = tmp_path / "no-cluster-extra"
    hidden.mkdir()
    for name in CLUSTER_EXTRA_MODULES:
        message = f"No module named {name!r}"
        (hidden / f"{name}.py").write_text(f"raise ModuleNotFoundError({message!r}, name={name!r})\n")
    env["PYTHONPATH"] = os.pathsep.join([str(hidden), *filter(None, [env.get("PYTHONPATH")])])
    started = time.time()
    proc = subprocess.run(_search(tmp_path, glue_dir, sst2_teacher, "local"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    parent = _assert_parent_and_finished_trials(tmp_path, "local")
    assert parent.data.params["address"] == "local"
    assert f":{port}" not in proc.stdout + proc.stderr  # never tried the recorded head
    assert record.read_text().strip().endswith(f":{port}")  # a local Ray does not record itself
    print(f"search with a dead recorded head: {time.time() - started:.0f} s")


@pytest.mark.slow
def test_ray_dashboard_flag_serves_the_local_rays_dashboard(ray_tmpdir, tmp_path, glue_dir, sst2_teacher):
    env = _test_env(RAY_TMPDIR=str(ray_tmpdir))
    proc = subprocess.Popen(_search(tmp_path, glue_dir, sst2_teacher, "dash", "--ray-dashboard", trials=1),
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        _wait(lambda: any(ln.startswith("Ray dashboard: http://") for ln in out), 300, "the dashboard URL", [proc])
        url = next(ln for ln in out if ln.startswith("Ray dashboard: ")).split(": ", 1)[1].strip()
        request = urllib.request.Request(url + "/api/version",
                                         headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as r:  # while the search runs
            import ray

            assert json.loads(r.read())["ray_version"] == ray.__version__
        assert proc.wait(600) == 0, "".join(out)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(10)
    _assert_parent_and_finished_trials(tmp_path, "dash", trials=1)


class SilentGcs:
    """A TCP port that accepts connections and never answers: a GCS that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("", 0))  # every interface: Ray dials the node's own IP for 127.0.0.1
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_search_still_connecting(tmp_path, glue_dir, sst2_teacher, sig, code):
    gcs = SilentGcs()
    try:
        proc = subprocess.Popen(_search(tmp_path, glue_dir, sst2_teacher, "hang", "--address",
                                        f"127.0.0.1:{gcs.port}"),
                                cwd=tmp_path, env=_test_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            # the address check's probe is the first connection; Ray's own come after it
            _wait(lambda: len(gcs.accepted) >= 2, 120, "the driver to connect to the GCS port", [proc])
            time.sleep(1)
            sent = time.time()
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=20)
            took = time.time() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        gcs.close()
    assert proc.returncode == code, err[-3000:]
    assert took < 10, f"{took:.1f} s from the signal to the exit"
    line = _one_error_line(err)
    assert line == (f"error: stopped by {sig.name} while connecting to the Ray cluster at 127.0.0.1:{gcs.port}; "
                    f"no trial ran"), line
    assert not (tmp_path / "m.db").exists()


def test_runtime_env_flag_and_dashboard_flag_are_checked_before_any_work(tmp_path, glue_dir, sst2_teacher):
    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(_search(tmp_path, glue_dir, sst2_teacher, "flags", *extra), cwd=tmp_path,
                              env=_test_env(), capture_output=True, text=True, timeout=120)

    for extra, fragment in [
        (("--runtime-env", '{"working_directory": "."}'), "--runtime-env: unknown field(s) working_directory"),
        (("--runtime-env", '{"pip": 3}'), "--runtime-env: runtime_env['pip'] must be of type"),
        (("--runtime-env", str(tmp_path / "missing.yaml")), "cannot read it"),
        (("--runtime-env", "{not json"), "is not valid JSON/YAML"),
        (("--ray-dashboard", "--address", "127.0.0.1:9"), "--ray-dashboard starts a dashboard with a local Ray"),
    ]:
        proc = run(*extra)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], (extra, proc.stderr)
    assert not (tmp_path / "m.db").exists()


def test_missing_extra_reads_the_installed_metadata():
    from importlib import metadata

    from search.cluster import missing_extra

    assert missing_extra("ray", "default") == [] and missing_extra("ray", "client") == []  # the test extra has them
    extras = metadata.metadata("ray").get_all("Provides-Extra")
    reported = {name for extra in extras for name in missing_extra("ray", extra)}
    assert reported, "every extra of ray installed: nothing to check against"
    for entry in reported:  # a name, or "name<specifier> (found <version>)"
        if "(found" not in entry:
            with pytest.raises(metadata.PackageNotFoundError):
                metadata.version(entry)


def test_kuberay_rayjob_example_runs_this_cli_on_this_ray():
    """docs/examples/rayjob.yaml needs a Kubernetes cluster to run; here its entrypoint must parse with
    the search's CLI, its runtime_env must pass Ray's checks, and its Ray version must be this one."""
    import ray
    import yaml

    import run_search
    from search.cluster import load_runtime_env

    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "docs" / "examples" / "rayjob.yaml").read_text())}
    spec = docs["RayJob"]["spec"]
    argv = spec["entrypoint"].split()
    assert argv[:3] == ["python", "run_search.py", "search"]
    args = run_search.build_parser().parse_args(argv[2:])
    assert args.address == "auto" and (ROOT / args.space).is_file()
    env = load_runtime_env(json.dumps(yaml.safe_load(spec["runtimeEnvYAML"])))
    assert env["working_dir"].endswith(".zip")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["authOptions"] == {"mode": "token"}
    assert f"rayproject/ray:{ray.__version__}-" in (ROOT / "docs" / "examples" / "Dockerfile").read_text()
    mlflow = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert mlflow[:2] == ["featherweight", "server"]
    run_search.build_parser().parse_args(mlflow[1:])  # the console script's own arguments
    assert spec["entrypoint"].count("http://featherweight-mlflow:5000") == 1


def test_cluster_launcher_example_validates_against_rays_schema():
    """docs/examples/cluster.yaml needs an AWS account to run; here it must validate against the
    cluster launcher's schema and start every node with token authentication."""
    import jsonschema
    import ray
    import yaml

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "docs" / "examples" / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any('[cluster]' in c for c in config["setup_commands"])
