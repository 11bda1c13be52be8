"""Searches through the CLI with the multi-objective scheduler, a time budget and the fixed
hypervolume reference: a real local Ray, Optuna and a sqlite MLflow store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPACE = Path(__file__).with_name("schedule.yaml")
pytestmark = pytest.mark.slow


def _search(tmp_path: Path, glue_dir: Path, teacher: Path, *extra: str, experiment: str = "sched") -> str:
    cmd = [sys.executable, str(ROOT / "run_search.py"), "search", "--task", "sst2", "--data-dir", str(glue_dir),
           "--teacher", str(teacher), "--space", str(SPACE), "--max-concurrent", "2", "--experiment", experiment,
           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage-path", str(tmp_path / "ray_results"),
           "--cache-dir", str(tmp_path / "cache"), "--verbose", "0", *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


def _runs(tmp_path: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("featherweight.role") == "search"]
    return client, parents, [r for r in runs if r.data.tags.get("featherweight.role") == "trial"]


def test_moasha_stops_dominated_trials_which_still_finish_as_real_trials(tmp_path, glue_dir, sst2_teacher):
    out = _search(tmp_path, glue_dir, sst2_teacher, "--num-samples", "8", "--seed", "0", "--sampler", "random",
                  "--scheduler", "moasha", "--reduction-factor", "2")
    assert "Pareto front over val_accuracy (max), size_bytes (min)" in out
    client, (parent,), trials = _runs(tmp_path, "sched")
    assert len(trials) == 8 and {r.info.status for r in trials} == {"FINISHED"}
    stopped = [r for r in trials if r.data.tags.get("early_stopped") == "true"]
    assert 1 <= len(stopped) < 8
    for run in trials:
        assert {"accuracy", "val_accuracy", "size_bytes"} <= set(run.data.metrics)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")]
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        epochs = max(m.step for m in history) - 1  # per-epoch values, then the final one a step later
        if run in stopped:
            assert run.data.tags["stop_reason"] == "scheduler"
            assert int(run.data.tags["stopped_at_epoch"]) == epochs < 4
        else:
            assert epochs == 4 and "stop_reason" not in run.data.tags
    params = parent.data.params
    assert params["scheduler"] == "moasha" and params["hypervolume_reference"]
    hv = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in hv) == list(range(1, 9))  # one step per finished trial
    values = [m.value for m in sorted(hv, key=lambda m: m.step)]
    assert values == sorted(values) and values[-1] > 0  # a front only grows
    assert client.get_metric_history(parent.info.run_id, "pareto_front_size")
    assert client.get_metric_history(parent.info.run_id, "hypervolume_time")


def test_two_searches_of_a_task_share_the_hypervolume_reference_and_a_budget_ends_a_search(
        tmp_path, glue_dir, sst2_teacher):
    _search(tmp_path, glue_dir, sst2_teacher, "--num-samples", "2", "--seed", "1", experiment="a")
    out = _search(tmp_path, glue_dir, sst2_teacher, "--num-samples", "50", "--seed", "2", "--time-budget-s", "15",
                  experiment="b")
    assert "the time budget of 15 s is spent" in out
    _, (first,), _ = _runs(tmp_path, "a")
    client, (second,), trials = _runs(tmp_path, "b")
    # the reference is fixed by the task (dev majority-class accuracy, teacher size), not by the trials
    assert first.data.params["hypervolume_reference"] == second.data.params["hypervolume_reference"]
    majority, log_teacher = map(float, first.data.params["hypervolume_reference"].split(","))
    assert majority == pytest.approx(50.9174, abs=1e-3) and log_teacher == pytest.approx(7.958, abs=1e-2)
    assert second.info.status == "FINISHED" and 1 <= len(trials) < 50
    assert {r.info.status for r in trials} == {"FINISHED"}  # every started trial closed


def test_a_spent_budget_ends_the_epoch_in_progress(tmp_path, glue_dir, sst2_teacher):
    # a 1 s budget is spent before any trial's first batch (a Ray worker takes longer to start):
    # each trial stops after that batch, in epoch 1 of 4, and still finishes as a real trial
    out = _search(tmp_path, glue_dir, sst2_teacher, "--num-samples", "6", "--seed", "3", "--time-budget-s", "1",
                  experiment="halt")
    assert "the time budget of 1 s is spent" in out
    client, (parent,), trials = _runs(tmp_path, "halt")
    assert parent.info.status == "FINISHED" and 1 <= len(trials) < 6
    for run in trials:
        assert run.info.status == "FINISHED" and {"accuracy", "size_bytes"} <= set(run.data.metrics)
        assert (run.data.tags["stop_reason"], run.data.tags["stopped_at_epoch"]) == ("time_budget", "1")
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "partial_epoch")] == [(1, 1.0)]
