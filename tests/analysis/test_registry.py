"""``export --register``: real tiny trials logged to a real sqlite store, registered with aliases,
loaded back through ``models:/NAME@ALIAS``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis import export_configs
from analysis.registry import alias_of, check_model_name
from trainables.errors import ConfigError

FAST = {"student": "ffn", "embedding": "hash", "vocab_size": 2000, "hash_buckets": 500, "epochs": 2, "lr": 3e-3}


@pytest.fixture
def two_trials(store, sst2_small, tmp_path):
    """A search with two finished trials: a smaller student (dim 8) and a larger one (dim 48)."""
    import mlflow

    from search.mlflow_store import ROLE_TAG, start_parent_run
    from trainables.tracking import MlflowTracker
    from trainables.trial import RunSettings, run_trial

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)  # what models:/ URIs resolve against
    exp = store.experiment("reg")
    parent = start_parent_run(store.client, exp, "search-reg", {"objectives": "accuracy:max,size_bytes:min"},
                              {"search_id": "reg"})
    runs = {}
    for i, dim in enumerate((8, 48)):
        tracker = MlflowTracker(store.uri, exp, parent, system_metrics=True)
        settings = RunSettings(tags={"search_id": "reg", ROLE_TAG: "trial", "trial_id": f"t{i}"})
        final = run_trial({**FAST, "embedding_dim": dim}, sst2_small, tmp_path / f"t{i}", tracker, settings)
        runs[dim] = (tracker.run_id, final)
    store.client.set_terminated(parent, "FINISHED")
    yield runs
    mlflow.set_tracking_uri(before)


def test_export_registers_versions_with_aliases_that_load(store, two_trials, sst2_small, tmp_path):
    import mlflow.pyfunc

    (small, small_final), (large, large_final) = two_trials[8], two_trials[48]
    assert small_final["size_bytes"] < large_final["size_bytes"]
    client = store.client
    paths = export_configs(store.uri, "reg", tmp_path / "out", "best:size_bytes", register="sst2-student")
    (doc,) = [yaml.safe_load(p.read_text()) for p in paths]
    model_id = client.get_run(small).outputs.model_outputs[0].model_id
    assert doc["source_run_id"] == small and doc["model_uri"] == f"models:/{model_id}"
    assert doc["metrics"]["accuracy"] == small_final["accuracy"] and "model_log_time_s" in doc["metrics"]
    assert "system/system_memory_usage_megabytes" in store.client.get_run(small).data.metrics
    assert not [k for k in doc["metrics"] if k.startswith("system/")]  # the machine's state, not the student's
    reg = doc["registered_model"]
    assert (reg["name"], reg["version"], reg["uri"]) == ("sst2-student", 1, "models:/sst2-student/1")
    assert "smallest" in reg["aliases"]
    version = client.get_model_version_by_alias("sst2-student", "smallest")
    assert (int(version.version), version.run_id) == (1, small)
    assert version.source == f"models:/{model_id}" and version.tags["source_run_id"] == small
    assert version.tags["trial_id"] == "t0" and version.tags["selector"] == "best:size_bytes"

    # the registered model predicts, with the accuracy its trial logged
    model = mlflow.pyfunc.load_model("models:/sst2-student@smallest")
    labels = model.predict(pd.DataFrame({"text": sst2_small.dev.text_a}))["label"].to_numpy()
    assert (labels == sst2_small.dev.labels).mean() * 100 == pytest.approx(small_final["accuracy"])

    # the front: the same model keeps its version, the other becomes version 2; aliases follow the search
    paths = export_configs(store.uri, "reg", tmp_path / "out2", "pareto", register="sst2-student")
    docs = {d["source_run_id"]: d for d in (yaml.safe_load(p.read_text()) for p in paths)}
    best = small if small_final["val_accuracy"] >= large_final["val_accuracy"] else large
    assert docs[small]["registered_model"]["version"] == 1
    if large in docs:  # the larger one is on the front unless the smaller is at least as accurate
        assert docs[large]["registered_model"]["version"] == 2
    assert client.get_model_version_by_alias("sst2-student", "best-accuracy").run_id == best
    assert client.get_model_version_by_alias("sst2-student", "knee").run_id in docs
    assert len(client.search_model_versions("name = 'sst2-student'")) == len(docs)
    assert np.isfinite(mlflow.pyfunc.load_model("models:/sst2-student@knee").predict(
        {"text": ["a fine film"]})["probabilities"][0]).all()


def test_register_names_and_aliases():
    assert check_model_name(" sst2-student ") == "sst2-student"
    for bad in ("", "a/b", "a:b", "x@knee"):
        with pytest.raises(ConfigError, match="a registered model name is"):
            check_model_name(bad)
    assert alias_of("accuracy-at-size_bytes-le-2.5e+06") == "accuracy-at-size_bytes-le-2_5e_06"


def test_runs_without_a_logged_model_cannot_be_registered(shared_search, tmp_path):
    with pytest.raises(ConfigError, match="logged no MLflow model"):
        export_configs(shared_search.store.uri, "fw", tmp_path / "out", "knee", register="m")
    assert not (tmp_path / "out").exists()
