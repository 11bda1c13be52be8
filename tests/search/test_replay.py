"""A real tiny SST-2 trial logged to MLflow, exported, and replayed as a new run."""

from __future__ import annotations

import numpy as np
import yaml

from analysis import export_configs, load_trials
from search.mlflow_store import ROLE_TAG, start_parent_run
from search.replay import replay

# a fast trial: 2,000 shuffled training rows (max_train_examples), full dev set, one epoch
CONFIG = {"task": "sst2", "seed": 0, "student": "ffn", "embedding": "hash", "embedding_dim": 25, "vocab_size": 2000,
          "hash_buckets": 500, "epochs": 1, "max_train_examples": 2000, "lr": 0.03, "batch_size": 32}


def test_export_and_replay_a_real_trial(store, tmp_path, glue_dir, sst2_teacher, sst2_splits, capsys):
    from trainables.data.teacher import teacher_id, teacher_size_bytes
    from trainables.formats import load_student
    from trainables.tracking import MlflowTracker
    from trainables.trial import RunSettings, TrialData, run_trial

    client = store.client
    exp = store.experiment("real")
    # the parent run as run_search writes it: data folder, teacher and logit cache are params
    parent = start_parent_run(client, exp, "search-real",
                              params={"task": "sst2", "objectives": "accuracy:max,size_bytes:min",
                                      "teacher": str(sst2_teacher), "data_dir": str(glue_dir),
                                      "cache_dir": str(tmp_path / "cache"), "cpus_per_trial": 1.0},
                              tags={"search_id": "real", "sampler": "random", "random_search": "true"})
    train, dev = sst2_splits
    with np.load(sst2_teacher / "logits_sst2.npz") as z:  # arrays in file order
        data = TrialData(train, dev, z["train"], z["dev"], teacher_id(str(sst2_teacher)),
                         teacher_size_bytes(str(sst2_teacher)))
    tracker = MlflowTracker(store.uri, exp, parent)
    settings = RunSettings(tags={"search_id": "real", ROLE_TAG: "trial", "trial_id": "real_00000"})
    final = run_trial(CONFIG, data, tmp_path / "trial", tracker, settings, run_name="trial-0")
    source = tracker.run_id
    client.set_terminated(parent, "FINISHED")
    assert final["accuracy"] > 55.0  # it learned something, so equal accuracies mean something

    (path,) = export_configs(store.uri, "real", tmp_path / "exports", "best:accuracy")
    doc = yaml.safe_load(path.read_text())
    assert doc["source_run_id"] == source
    assert doc["metrics"]["accuracy"] == final["accuracy"]
    assert doc["student_uri"] == f"runs:/{source}/model/student.safetensors"
    (output,) = client.get_run(source).outputs.model_outputs
    assert doc["model_uri"] == f"models:/{output.model_id}"
    local = client.download_artifacts(source, "model/student.safetensors", str(tmp_path / "dl"))
    assert load_student(local)[2] == doc["config"]  # the exported config is the logged student's

    result = replay(path)  # data folder, teacher and cache come from the parent run
    printed = capsys.readouterr().out
    assert abs(result["accuracy_diff_pp"]) <= 0.3
    assert result["metrics"]["accuracy"] == final["accuracy"]  # CPU trials are deterministic
    assert result["diff"]["size_bytes"] == 0 and result["diff"]["num_params"] == 0
    assert result["data_matches"] is True and result["device"] == "cpu"
    assert result["source_run_id"] == source and result["run_id"] != source
    assert "accuracy" in printed and " pp" in printed

    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == exp
    assert run.data.tags["source_run_id"] == source
    assert run.data.tags[ROLE_TAG] == "replay"
    assert "mlflow.parentRunId" not in run.data.tags
    assert {a.path for a in client.list_artifacts(result["run_id"], "model")} >= {"model/student.safetensors"}
    assert run.data.params["max_train_examples"] == "2000"
    # the replay is not one of the search's trials
    assert load_trials(store.uri, "real")["run_id"].tolist() == [source]
    assert any(p.name.endswith(".npy") for p in (tmp_path / "cache" / "logits").iterdir())
