import numpy as np
import pytest

from trainables.formats import load_student
from trainables.tracking import MemoryTracker
from trainables.training.encoded import encode_split, predict
from trainables.training.metrics import accuracy_percent
from trainables.trial import RunSettings, run_trial

FAST = {"student": "ffn", "embedding": "hash", "embedding_dim": 16, "vocab_size": 2000, "hash_buckets": 500, "epochs": 2,
        "lr": 3e-3}


def test_trial_metrics_artifact_and_tracking(sst2_small, tmp_path):
    tracker, reports = MemoryTracker(), []
    final = run_trial(FAST, sst2_small, tmp_path, tracker, RunSettings(tags={"search_id": "s1"}),
                      report=lambda m, ckpt: reports.append((m, ckpt)))
    for key in ("accuracy", "num_params", "size_bytes", "gzip_bytes", "train_time_s", "latency_ms", "throughput",
                "compression_ratio", "fp32_bytes"):
        assert final[key] > 0, key
    # without NVML or readable RAPL no meter works: energy is labelled unavailable and absent, never 0
    assert final["energy_method"] == tracker.tags["energy_method"] == "unavailable"
    assert "energy_j" not in final and "energy_j" not in tracker.metrics
    assert tracker.status == "FINISHED" and tracker.params["student"] == "ffn" and tracker.params["hidden_dim"] == 100
    assert {"search_id", "seed", "data_hash", "teacher_id", "hostname", "cpu", "gpu", "package_versions"} <= set(tracker.tags)
    # one report per epoch (with a checkpoint) and the final one
    assert [ckpt is not None for _, ckpt in reports] == [True] * len(reports[:-1]) + [False]
    assert len(reports) - 1 == len(tracker.metrics["train_loss"]) <= 2
    # the final (saved student's) values sit at the highest step, which MLflow shows as the run's value
    epochs = len(tracker.metrics["train_loss"])
    assert tracker.metrics["accuracy"][-1] == (epochs + 1, final["accuracy"])
    assert max(step for step, _ in tracker.metrics["accuracy"]) == epochs + 1
    # the saved model reproduces the logged accuracy
    model, enc, cfg = load_student(tmp_path / "model" / "student.safetensors")
    dev = encode_split(sst2_small.dev, enc, cfg["max_length"])
    assert accuracy_percent(predict(model, dev), sst2_small.dev.labels) == final["accuracy"]
    assert final["size_bytes"] == (tmp_path / "model" / "student.safetensors").stat().st_size
    assert final["compression_ratio"] == pytest.approx(90_855_944 / final["size_bytes"])
    # the run's datasets and its model (the final student file, with the final metrics)
    assert [(d.context, d.data_hash) for d in tracker.datasets] == \
        [("train", sst2_small.train.data_hash), ("validation", sst2_small.val.data_hash),
         ("dev", sst2_small.dev.data_hash)]
    (model,) = tracker.models
    assert model["name"] == "ffn-hash" and model["step"] == epochs + 1
    assert model["student_path"] == str(tmp_path / "model" / "student.safetensors")
    assert tracker.model_metrics["memory-model-1"]["accuracy"] == final["accuracy"]


def test_estimate_meter_is_labelled(sst2_small, tmp_path):
    final = run_trial({**FAST, "epochs": 1}, sst2_small, tmp_path, settings=RunSettings(cpu_watts_per_core=10.0))
    assert final["energy_method"] == "estimate" and final["energy_j"] > 0 and final["co2e_kg"] > 0


def test_failed_trial_is_marked_failed(sst2_small, tmp_path):
    tracker = MemoryTracker()
    bad = sst2_small.__class__(**{**sst2_small.__dict__, "train_logits": np.zeros((5, 2), np.float32)})
    with pytest.raises(Exception):
        run_trial(FAST, bad, tmp_path, tracker)
    assert tracker.status == "FAILED" and tracker.tags["error"]


def test_further_compression_starts_from_an_earlier_runs_student(sst2_small, tmp_path):
    from mlflow.tracking import MlflowClient

    from trainables.errors import ConfigError
    from trainables.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = MlflowClient(uri).create_experiment("fw", artifact_location=(tmp_path / "art").as_uri())
    source = MlflowTracker(uri, exp)
    first = run_trial(FAST, sst2_small, tmp_path / "a", source)
    # a different architecture in the config: the source student's wins, and only prune + quantize run
    tracker = MlflowTracker(uri, exp)
    second = run_trial({"init_run_id": source.run_id, "stages": "prune,quantize", "student": "bilstm",
                        "sparsity": 0.3, "bits_embedding": 8, "bits_encoder": 8, "bits_classifier": 8},
                       sst2_small, tmp_path / "b", tracker)
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.data.tags["source_run_id"] == source.run_id and run.data.params["student"] == "ffn"
    assert second["num_params"] == first["num_params"] and second["size_bytes"] < first["size_bytes"]
    assert abs(second["accuracy"] - first["accuracy"]) < 3.0  # 30% pruning + 8 bits of a trained student
    with pytest.raises(ConfigError, match="needs MLflow tracking"):
        run_trial({"init_run_id": source.run_id}, sst2_small, tmp_path / "c")


def test_a_trial_killed_after_an_epoch_resumes_from_its_checkpoint(sst2_small, tmp_path):
    from trainables.errors import ConfigError
    from trainables.trial import load_checkpoint

    cfg, settings = {**FAST, "epochs": 3}, RunSettings(cpu_watts_per_core=10.0)
    whole_tracker = MemoryTracker()
    whole = run_trial(cfg, sst2_small, tmp_path / "whole", whole_tracker, settings)

    class Killed(Exception):
        pass

    def die_after_epoch_2(metrics, ckpt):
        if ckpt is not None and metrics["epoch"] == 2:
            raise Killed

    first = MemoryTracker()
    with pytest.raises(Killed):
        run_trial(cfg, sst2_small, tmp_path / "a1", first, settings, report=die_after_epoch_2)
    ckpt = load_checkpoint(tmp_path / "a1" / "checkpoint")
    state, earlier = ckpt.state, ckpt.energy
    assert state.epoch == 2 and earlier.method == "estimate" and earlier.joules > 0
    assert [r["epoch"] for r in ckpt.rows] == [1, 2] and ckpt.rows[-1]["energy_j"] == earlier.joules

    second = MemoryTracker()
    final = run_trial(cfg, sst2_small, tmp_path / "a2", second, settings, resume_from=tmp_path / "a1" / "checkpoint")
    assert second.tags["resumed_from_epoch"] == "2" and second.status == "FINISHED"
    assert "resume_skipped" not in second.tags
    # the same student as the uninterrupted trial, and the same epoch curve in the new run
    assert (final["accuracy"], final["best_epoch"], final["size_bytes"]) == \
        (whole["accuracy"], whole["best_epoch"], whole["size_bytes"])
    assert (tmp_path / "a2/model/student.safetensors").read_bytes() == \
        (tmp_path / "whole/model/student.safetensors").read_bytes()
    for name in ("train_loss", "size_bytes", "gzip_bytes"):
        assert second.metrics[name] == whole_tracker.metrics[name], name
    assert [step for step, _ in second.metrics["energy_j"]] == [1, 2, 3, 4]  # 3 epochs and the final value
    assert second.metrics["energy_j"][:2] == [(r["epoch"], r["energy_j"]) for r in ckpt.rows]
    # the earlier attempt's measured epochs count towards the trial's training energy
    assert final["energy_j"] > earlier.joules and final["train_time_s"] > state.train_time_s

    # a folder that cannot be resumed from (an older version's, or damaged): train afresh, and say so
    (tmp_path / "a1" / "checkpoint" / "progress.json").unlink()
    with pytest.raises(ConfigError, match="not a trial checkpoint: progress.json missing"):
        load_checkpoint(tmp_path / "a1" / "checkpoint")
    third = MemoryTracker()
    again = run_trial(cfg, sst2_small, tmp_path / "a3", third, settings, resume_from=tmp_path / "a1" / "checkpoint")
    assert "progress.json missing" in third.tags["resume_skipped"] and "resumed_from_epoch" not in third.tags
    assert (tmp_path / "a3/model/student.safetensors").read_bytes() == \
        (tmp_path / "whole/model/student.safetensors").read_bytes() and again["accuracy"] == whole["accuracy"]


def test_imp_trial_rewinds_to_its_epoch_and_survives_a_resume(sst2_small, tmp_path):
    cfg = {**FAST, "epochs": 3, "stages": "distill,prune", "prune_schedule": "imp", "imp_rounds": 2,
           "finetune_epochs": 2, "rewind_epoch": 2, "sparsity": 0.6}
    whole_tracker = MemoryTracker()
    whole = run_trial(cfg, sst2_small, tmp_path / "whole", whole_tracker)
    assert whole["sparsity_achieved"] == pytest.approx(0.6, abs=1e-3)
    assert whole_tracker.metrics["prune_rewind_epoch"][-1][1] == 2
    assert len(whole_tracker.metrics["prune_train_loss"]) == 4  # two retraining epochs per round
    assert whole["accuracy"] > 65.0  # the pruned, rewound and retrained student learnt SST-2 (chance: 51%)

    # killed before the rewind epoch (the point is taken after the resume) and after it (it travels along)
    for killed_at in (1, 3):
        def die(metrics, ckpt, killed_at=killed_at):
            if ckpt is not None and metrics["epoch"] == killed_at:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            run_trial(cfg, sst2_small, tmp_path / f"k{killed_at}", MemoryTracker(), report=die)
        tracker = MemoryTracker()
        resumed = run_trial(cfg, sst2_small, tmp_path / f"r{killed_at}", tracker,
                            resume_from=tmp_path / f"k{killed_at}" / "checkpoint")
        assert tracker.tags["resumed_from_epoch"] == str(killed_at)
        assert (tmp_path / f"r{killed_at}/model/student.packed.safetensors").read_bytes() == \
            (tmp_path / "whole/model/student.packed.safetensors").read_bytes()
        assert resumed["accuracy"] == whole["accuracy"]


def test_int8_dynamic_trial_counts_the_weights_its_int8_modules_hide(sst2_small, tmp_path):
    tracker = MemoryTracker()
    final = run_trial({**FAST, "epochs": 1, "stages": "distill,quantize", "quant_method": "int8_dynamic"},
                      sst2_small, tmp_path, tracker)
    distill = {k: v[-1][1] for k, v in tracker.metrics.items() if k.startswith("distill_")}
    assert final["num_params"] == distill["distill_num_params"] > 0
    assert final["fp32_bytes"] == 4 * final["num_params"]
