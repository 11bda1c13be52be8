"""Students as MLflow models: real trials logged to a real sqlite MLflow store, loaded back with
``mlflow.pyfunc.load_model`` and checked against the accuracy the trial logged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainables.data.glue import Split
from trainables.serving import StudentPredictor, input_example, save_pyfunc, signature
from trainables.tracking import MemoryTracker, MlflowTracker
from trainables.training.metrics import accuracy_percent
from trainables.trial import run_trial

FAST = {"student": "ffn", "embedding": "hash", "embedding_dim": 16, "vocab_size": 2000, "hash_buckets": 500, "epochs": 2,
        "lr": 3e-3}


def _dev_accuracy(model, dev: Split) -> float:
    columns = {"text": dev.text_a} if not dev.is_pair else {"text_a": dev.text_a, "text_b": dev.text_b}
    out = model.predict(pd.DataFrame(columns))
    assert list(out.columns) == ["label", "label_name", "probabilities"] and len(out) == len(dev)
    probs = np.array(out["probabilities"].tolist())
    assert np.allclose(probs.sum(1), 1.0) and (out["label"].to_numpy() == probs.argmax(1)).all()
    return accuracy_percent(probs, dev.labels)


@pytest.fixture
def tracking_uri(tmp_path):
    """A sqlite store as MLflow's current tracking URI (what ``models:/`` URIs resolve against)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(before)


def test_a_trial_logs_its_student_as_an_mlflow_model_with_its_datasets(sst2_small, tmp_path, tracking_uri):
    import mlflow.pyfunc
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    uri = tracking_uri
    client = MlflowClient(uri)
    exp = client.create_experiment("fw", artifact_location=(tmp_path / "art").as_uri())
    tracker = MlflowTracker(uri, exp, system_metrics=True)
    final = run_trial(FAST, sst2_small, tmp_path / "trial", tracker)
    run = client.get_run(tracker.run_id)

    # the run's datasets: train, validation and dev, digest = data hash (MLflow keeps 36 characters), role as context
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "dev"} and \
        [t.key for i in run.inputs.dataset_inputs for t in i.tags] == ["mlflow.data.context"] * 3
    for context, split in (("train", sst2_small.train), ("validation", sst2_small.val), ("dev", sst2_small.dev)):
        ds = inputs[context]
        assert ds.name == f"sst2-{context}" and ds.digest == split.data_hash[:36] and ds.source_type == "local"
        assert json.loads(ds.profile) == {"num_rows": len(split), "data_hash": split.data_hash}
        assert json.loads(ds.source) == {"uri": split.source}
    assert run.data.tags["data_hash"] == inputs["train"].digest + sst2_small.train.data_hash[36:]

    # the run's model: a READY LoggedModel from this run, with the final metrics, loadable by pyfunc
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert str(model.status) == "READY"
    assert (model.name, model.source_run_id, model.experiment_id) == ("ffn-hash", tracker.run_id, exp)
    assert model.params["student"] == "ffn" and model.tags["task"] == "sst2"
    assert {m.key: m.value for m in model.metrics}["accuracy"] == final["accuracy"]
    assert output.step == max(m.step for m in client.get_metric_history(tracker.run_id, "accuracy"))
    assert run.data.metrics["model_log_time_s"] > 0
    assert any(k.startswith("system/") for k in run.data.metrics)  # CPU and memory, sampled while it ran

    loaded = mlflow.pyfunc.load_model(f"models:/{output.model_id}")
    assert _dev_accuracy(loaded, sst2_small.dev) == final["accuracy"]

    # inside: the student file itself (its bytes are size_bytes), the models-from-code file, no pickle
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{output.model_id}", dst_path=str(tmp_path / "dl"),
                                                     tracking_uri=uri))
    student = local / "artifacts" / "student.safetensors"
    assert student.read_bytes() == (tmp_path / "trial" / "model" / "student.safetensors").read_bytes()
    assert student.stat().st_size == final["size_bytes"]
    assert not [p for p in local.rglob("*") if p.suffix in (".pkl", ".pickle")]
    meta = Model.load(str(local / "MLmodel"))
    assert meta.model_id == output.model_id and meta.run_id == tracker.run_id
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert meta.signature.inputs.input_names() == ["text"]
    assert meta.signature.outputs.input_names() == ["label", "label_name", "probabilities"]
    assert (local / "input_example.json").is_file()
    # and the student file stays a run artifact (analysis, replay, init_run_id read it)
    assert "model/student.safetensors" in {a.path for a in client.list_artifacts(tracker.run_id, "model")}


@pytest.mark.parametrize("extra", [
    {"stages": "distill,prune,quantize", "sparsity": 0.5, "bits_embedding": 4, "bits_encoder": 4,
     "bits_classifier": 8},
    {"stages": "distill,quantize", "quant_method": "int8_dynamic"},
], ids=["pruned-4bit", "int8_dynamic"])
def test_packed_students_predict_through_pyfunc(sst2_small, tmp_path, extra):
    import mlflow.pyfunc

    tracker = MemoryTracker()
    final = run_trial({**FAST, **extra}, sst2_small, tmp_path / "trial", tracker)
    path = tmp_path / "trial" / "model" / "student.packed.safetensors"
    assert tracker.models[0]["student_path"] == str(path)
    assert tracker.model_metrics["memory-model-1"]["accuracy"] == final["accuracy"]
    folder = save_pyfunc(path, tmp_path / "pyfunc")
    assert (folder / "artifacts" / path.name).stat().st_size == final["size_bytes"]
    assert _dev_accuracy(mlflow.pyfunc.load_model(str(folder)), sst2_small.dev) == final["accuracy"]


def test_pair_students_read_two_text_columns(tmp_path, glue_dir):
    import mlflow.pyfunc

    from trainables.config import resolve_config
    from trainables.data.glue import load_split
    from trainables.formats import load_student, save_student
    from trainables.models.embeddings import build_encoder
    from trainables.models.students import build_student
    from trainables.training.encoded import encode_split, predict

    dev = load_split("mnli", "dev", glue_dir)
    dev = Split("mnli", "dev", dev.text_a[:200], dev.text_b[:200], dev.labels[:200], dev.source)
    cfg = resolve_config({"task": "mnli", "student": "bilstm", "embedding": "hash", "embedding_dim": 8,
                          "hidden_dim": 8, "vocab_size": 300})
    encoder = build_encoder("hash", dev.texts(), cfg["vocab_size"])
    save_student(build_student(cfg, encoder, 3, True), cfg, encoder, 3, True, tmp_path / "s.safetensors")
    model = mlflow.pyfunc.load_model(str(save_pyfunc(tmp_path / "s.safetensors", tmp_path / "pyfunc")))
    assert model.metadata.signature.inputs.input_names() == ["text_a", "text_b"]
    out = model.predict(pd.DataFrame({"text_a": dev.text_a, "text_b": dev.text_b}))
    student, enc, _ = load_student(tmp_path / "s.safetensors")
    expected = predict(student, encode_split(dev, enc, cfg["max_length"])).argmax(1)
    assert (out["label"].to_numpy() == expected).all()
    assert set(out["label_name"]) <= {"entailment", "neutral", "contradiction"}
    assert len(out["probabilities"][0]) == 3
    with pytest.raises(Exception, match="text_b"):  # the signature names the missing column
        model.predict(pd.DataFrame({"text_a": ["a premise"]}))


def test_predictor_inputs_and_signature(sst2_small, tmp_path):
    run_trial({**FAST, "epochs": 1}, sst2_small, tmp_path)
    p = StudentPredictor.from_file(tmp_path / "model" / "student.safetensors")
    texts = sst2_small.dev.text_a[:5]
    expected = p.predict(pd.DataFrame({"text": texts}))
    for given in ({"text": texts}, texts, pd.DataFrame({"sentence": texts})):  # by name, a list, by position
        assert p.predict(given)["label"].tolist() == expected["label"].tolist()
    assert p.predict(pd.DataFrame({"text": []})).empty
    with pytest.raises(ValueError, match="needs the column"):
        p.predict(pd.DataFrame({"a": texts, "b": texts}))
    assert signature(False).inputs.input_names() == ["text"]
    assert list(input_example("qqp").columns) == ["text_a", "text_b"]
