"""Sentence-pair tasks end to end: `search --task qqp` and `--task mnli` on the staged subsets."""

import logging

import numpy as np
import pytest

import run_search
from tests.conftest import TEACHERS

SPACE = """objectives: {accuracy: max, size_bytes: min}
params: {student: ffn, embedding: hash, embedding_dim: 16, vocab_size: 1000, lr: {choice: [0.003]}, patience: 0}
"""
# teacher README: dev accuracy of the shipped teachers on these files
TEACHER_DEV_ACCURACY = {"qqp": 83.0, "mnli": 65.69}


@pytest.mark.slow
def test_qqp_and_mnli_searches_log_their_task_metrics(tmp_path, glue_dir, caplog):
    import ray
    from mlflow.tracking import MlflowClient

    from trainables.data.glue import load_split

    space = tmp_path / "pairs.yaml"
    space.write_text(SPACE)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    caplog.set_level(logging.WARNING)
    try:
        for task in ("qqp", "mnli"):  # one local Ray for both searches
            code = run_search.main(["search", "--task", task, "--data-dir", str(glue_dir), "--teacher",
                                    str(TEACHERS / f"minilm-l6-{task}"), "--space", str(space), "--num-samples", "1",
                                    "--experiment", task, "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"),
                                    "--cache-dir", str(tmp_path / "cache"), "--set", "max_train_examples=500",
                                    "--set", "epochs=1", "--verbose", "0"])
            assert code == 0
    finally:
        ray.shutdown()

    client = MlflowClient(uri)
    for task, metrics, absent in (("qqp", {"accuracy", "f1"}, set()),
                                  ("mnli", {"accuracy"}, {"accuracy_mismatched", "accuracy_mean"})):
        runs = client.search_runs([client.get_experiment_by_name(task).experiment_id],
                                  "tags.`featherweight.role` = 'trial'")
        assert len(runs) == 1 and runs[0].info.status == "FINISHED", task
        run = runs[0]
        assert metrics <= set(run.data.metrics) and not absent & set(run.data.metrics), task
        assert 0 < run.data.metrics["accuracy"] <= 100 and run.data.params["max_train_examples"] == "500"
        assert run.data.tags["task"] == task and run.data.tags["teacher_id"].startswith(f"minilm-l6-{task}@")
        # the shipped logits were verified and used: the cached logits are those of the npz, row for row
        dev = load_split(task, "dev", glue_dir)
        with np.load(TEACHERS / f"minilm-l6-{task}" / f"logits_{task}.npz") as z:
            for split in ("train", "dev"):
                cached = list((tmp_path / "cache" / "logits").glob(f"{task}-{split}-*.npy"))
                assert len(cached) == 1 and np.array_equal(np.load(cached[0]), z[split]), (task, split)
        teacher_acc = (np.load(cached[0]).argmax(1) == dev.labels).mean() * 100
        assert teacher_acc == pytest.approx(TEACHER_DEV_ACCURACY[task], abs=0.01)
    said = [r for r in caplog.records if "dev_mismatched is not available" in r.getMessage()]
    assert len(said) == 1  # said once, for mnli
