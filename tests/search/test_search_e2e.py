"""The main job, small: a real local Ray, Optuna multi-objective search, sqlite MLflow store."""

import subprocess
import sys
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
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front over accuracy (max), size_bytes (min)" in proc.stdout
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
    # no finished trial dominates a front member
    for run_id in front["run_id"]:
        a = ids[run_id].data.metrics
        assert not any(b.data.metrics["accuracy"] >= a["accuracy"] and b.data.metrics["size_bytes"] <= a["size_bytes"]
                       and (b.data.metrics["accuracy"], b.data.metrics["size_bytes"]) != (a["accuracy"], a["size_bytes"])
                       for b in children)
    assert np.isfinite(front["accuracy"]).all()
