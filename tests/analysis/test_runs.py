"""load_trials / find_parent_run against a real sqlite MLflow store."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import find_parent_run, load_trials
from trainables.errors import ConfigError


def test_load_trials_one_row_per_finished_trial_of_latest_search_in_start_order(shared_search):
    search = shared_search
    df = load_trials(search.store.uri, "fw")
    assert df["tag.trial_id"].tolist() == ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]
    # the failed trial started between t2 and t3: it keeps its place in the order
    assert df["trial_order"].tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    assert df["run_id"].tolist() == [search.runs[t] for t in df["tag.trial_id"]]
    assert set(df["status"]) == {"FINISHED"}
    assert df["start_time"].is_monotonic_increasing
    assert isinstance(df["start_time"].iloc[0], pd.Timestamp)
    assert df.attrs["parent_run_id"] == search.parent
    assert df.attrs["search_id"] == "new"
    assert df.attrs["experiment_name"] == "fw"


def test_load_trials_columns_metrics_typed_params_and_tags(shared_search):
    search = shared_search
    df = load_trials(search.store.uri, "fw").set_index("tag.trial_id")
    for tid, (acc, size, lat, ttime, student) in search.points.items():
        assert df.loc[tid, "accuracy"] == acc
        assert df.loc[tid, "size_bytes"] == size
        assert df.loc[tid, "param.student"] == student
    assert df["param.embedding_dim"].tolist() == [10, 11, 12, 13, 14, 15, 16, 17]
    assert df["param.embedding_dim"].dtype == "int64"
    assert df.loc["t3", "param.lr"] == pytest.approx(0.004)
    assert df.loc["t3", "param.stages"] == "distill"
    assert df.loc["t3", "tag.energy_method"] == "estimate"
    assert df.loc["t0", "tag.search_id"] == "new"
    assert df["accuracy"].dtype == float
    assert not [c for c in df.columns if c.startswith("tag.mlflow")]


def test_final_metrics_win_over_later_epoch_steps(shared_search):
    search = shared_search
    # t1 logged accuracy 83, 80 at steps 1, 2 and its final 85 at step 3: MLflow's "latest" is the final
    latest = search.store.client.get_run(search.runs["t1"]).data.metrics["accuracy"]
    assert latest == 85.0
    df = load_trials(search.store.uri, "fw").set_index("tag.trial_id")
    assert df.loc["t1", "accuracy"] == 85.0


def test_statuses_search_id_and_experiment_id(shared_search):
    search = shared_search
    both = load_trials(search.store.uri, "fw", statuses=("FINISHED", "failed"))
    assert len(both) == 9 and both.loc[both["status"] == "FAILED", "run_id"].tolist() == [search.failed]
    assert len(load_trials(search.store.uri, "fw", statuses=None)) == 9  # the replay child is never a trial
    old = load_trials(search.store.uri, search.exp_id, search_id="old")
    assert old["run_id"].tolist() == search.old_runs
    assert load_trials(search.store.uri, "fw", search_id=search.old_parent)["run_id"].tolist() == search.old_runs
    with pytest.raises(ConfigError, match="'DONE' is not one of"):
        load_trials(search.store.uri, "fw", statuses=("DONE",))


def test_find_parent_run(shared_search):
    search = shared_search
    assert find_parent_run(search.store.uri, "fw").info.run_id == search.parent
    assert find_parent_run(search.store.uri, "fw", "old").info.run_id == search.old_parent
    with pytest.raises(ConfigError, match="no search 'nope'; its latest searches: new, old"):
        find_parent_run(search.store.uri, "fw", "nope")
    with pytest.raises(ConfigError, match="must be letters"):
        find_parent_run(search.store.uri, "fw", "x' or '1'='1")


def test_empty_search_gives_empty_frame(store):
    exp = store.experiment("empty")
    store.search(exp, "e")
    df = load_trials(store.uri, "empty")
    assert df.empty and list(df.columns)[:3] == ["run_id", "run_name", "status"]


def test_clear_errors_for_unknown_experiment_no_search_missing_store_and_dead_server(store, tmp_path, new_search):
    new_search(store)
    store.experiment("bare")
    with pytest.raises(ConfigError, match="no MLflow experiment 'nope' in sqlite:.*experiments there: .*fw"):
        load_trials(store.uri, "nope")
    with pytest.raises(ConfigError, match="experiment 'bare' holds no search"):
        load_trials(store.uri, "bare")
    with pytest.raises(ConfigError, match="no MLflow store at"):
        load_trials(f"sqlite:///{tmp_path}/missing.db", "fw")
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(ConfigError, match="unreachable"):
        load_trials("http://127.0.0.1:9", "fw")
    with pytest.raises(ConfigError, match="file store"):
        load_trials(str(tmp_path / "mlruns"), "fw")
