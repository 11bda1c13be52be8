"""The main job, small: a real local Ray, Optuna multi-objective search, sqlite MLflow store."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_search_tracks_every_trial_and_prints_the_pareto_front(tmp_path, glue_dir, sst2_teacher, sst2_splits):
    from mlflow.tracking import MlflowClient

    from trainables.formats import load_student
    from trainables.training.encoded import encode_split, predict
    from trainables.training.metrics import accuracy_percent

    cmd = [sys.executable, str(ROOT / "run_search.py"), "search", "--task", "sst2", "--data-dir", str(glue_dir),
           "--teacher", str(sst2_teacher), "--num-samples", "3", "--max-concurrent", "2", "--experiment", "e2e",
           "--seed", "0", "--storage-path", str(tmp_path / "ray_results"), "--cache-dir", str(tmp_path / "cache"),
           "--set", "max_train_examples=1500", "--set", "epochs=1", "--verbose", "0"]
    # system metrics every second, so that trials of seconds record some
    env = {**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front over val_accuracy (max), size_bytes (min)" in proc.stdout
    assert "no energy meter works here" in proc.stdout  # energy_j dropped from the objectives, said once

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("e2e")
    assert exp.artifact_location == (tmp_path / "mlartifacts" / "e2e").as_uri()
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("featherweight.role") == "search"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}

    _, dev = sst2_splits
    for run in children:
        assert run.data.params["max_train_examples"] == "1500" and run.data.params["seed"] == "0"
        assert {"accuracy", "size_bytes", "gzip_bytes", "num_params", "latency_ms"} <= set(run.data.metrics)
        assert run.data.tags["energy_method"] == "unavailable" and "energy_j" not in run.data.metrics
        assert run.data.tags["search_id"] == parents[0].data.tags["search_id"] and run.data.tags["trial_id"]
        local = client.download_artifacts(run.info.run_id, "model", str(tmp_path / run.info.run_id))
        model, enc, cfg = load_student(Path(local) / "student.safetensors")
        acc = accuracy_percent(predict(model, encode_split(dev, enc, cfg["max_length"])), dev.labels)
        assert abs(acc - run.data.metrics["accuracy"]) < 0.1
        assert (Path(local) / "config.yaml").is_file()

    front_csv = client.download_artifacts(parents[0].info.run_id, "pareto_front.csv", str(tmp_path / "front"))
    front = pd.read_csv(front_csv)
    ids = {r.info.run_id: r for r in children}
    assert 1 <= len(front) <= 3 and set(front["run_id"]) <= set(ids)
    # no finished trial dominates a front member on the search objectives (val_accuracy, size_bytes)
    for run_id in front["run_id"]:
        a = ids[run_id].data.metrics
        assert not any(b.data.metrics["val_accuracy"] >= a["val_accuracy"]
                       and b.data.metrics["size_bytes"] <= a["size_bytes"]
                       and (b.data.metrics["val_accuracy"], b.data.metrics["size_bytes"])
                       != (a["val_accuracy"], a["size_bytes"]) for b in children)
    assert np.isfinite(front["accuracy"]).all() and np.isfinite(front["val_accuracy"]).all()

    # what users open in their tools: the experiment in the UI's model-training view; per trial an
    # MLflow model, its datasets, the source tags and system metrics
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for run in children + parents:
        assert run.data.tags["mlflow.source.name"] == str(ROOT / "run_search.py")
        assert run.data.tags.get("mlflow.source.git.commit") == (commit or None)
    for run in children:
        assert len(run.outputs.model_outputs) == 1
        assert {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs} == \
            {"sst2-train": run.data.tags["data_hash"][:36], "sst2-validation": run.data.tags["val_data_hash"][:36],
             "sst2-dev": run.data.tags["dev_data_hash"][:36]}
        assert "system/system_memory_usage_megabytes" in run.data.metrics
        assert 0 < run.data.metrics["model_log_time_s"] < 60

    # the Optuna study: in the storage the parent run names, one COMPLETE trial per finished run, same values
    from search.optuna_store import load_search_study

    parent = parents[0]
    url = parent.data.params["optuna_storage"]
    assert url == f"sqlite:///{tmp_path}/ray_results/{parent.data.params['study_name']}/optuna.db"
    study = load_search_study(parent)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert sorted(tuple(t.values) for t in complete) == sorted(
        (r.data.metrics["val_accuracy"], r.data.metrics["size_bytes"]) for r in children)
    assert study.metric_names == ["val_accuracy", "size_bytes"]
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    _check_optuna_dashboard(url, study.study_name)

    # bench.check_mlflow_models: Pareto students through mlflow.pyfunc.load_model and `mlflow models serve`
    from bench import check_mlflow_models

    assert check_mlflow_models.main(["--experiment", "e2e", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                                     "--count", "2", "--rows", "4"]) == 0


def _check_optuna_dashboard(url: str, study_name: str) -> None:
    """optuna-dashboard serves the study: its HTTP API lists it with its complete trials."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("optuna-dashboard")  # the console script of this interpreter's package
    dashboard = subprocess.Popen([str(exe if exe.is_file() else "optuna-dashboard"), url, "--host", "127.0.0.1",
                                  "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        deadline, summaries = time.time() + 60, None
        while summaries is None and time.time() < deadline:
            assert dashboard.poll() is None, "optuna-dashboard exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    summaries = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.5)
        (summary,) = [x for x in summaries if x["study_name"] == study_name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}?after=0",
                                    timeout=10) as r:
            trials = json.loads(r.read())["trials"]
        assert [t["state"] for t in trials] == ["Complete"] * 3
    finally:
        os.killpg(dashboard.pid, signal.SIGTERM)
        dashboard.wait(30)
