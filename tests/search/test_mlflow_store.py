"""The MLflow side of retries and resumes, on a sqlite store (no Ray): seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search import mlflow_store as ms
from search.cluster import check_address, experiment_path, resolve_storage_path, runtime_env
from trainables.errors import ConfigError


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    uri, root = ms.resolve_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db")
    return MlflowClient(uri), root


@pytest.fixture
def store(sqlite_store, request):
    client, root = sqlite_store
    exp = ms.get_or_create_experiment(client, request.node.name[:40], root)
    parent = ms.start_parent_run(client, exp, "search-x", {"num_samples": 2},
                                 {"search_id": "s1", ms.OPTIONS_TAG: json.dumps({"num_samples": 2})})
    return client, exp, parent


def _child(client, exp, parent, trial_id, status=None, metrics=None):
    run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "trial_id": trial_id, "energy_method": "x"})
    for k, v in (metrics or {}).items():
        client.log_metric(run.info.run_id, k, v)
    if status:
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def test_earlier_attempts_are_closed_and_a_finished_one_is_reused(store):
    client, exp, parent = store
    def settle(trial):
        return ms.close_earlier_attempts(client, trial, experiment_id=exp, parent_run_id=parent)

    assert settle("t0") == (None, {"attempt": "1"})  # first attempt
    dead = _child(client, exp, parent, "t1")  # its worker died: left RUNNING
    finished, tags = settle("t1")
    assert finished is None and tags == {"attempt": "2", "retry_of": dead}
    assert client.get_run(dead).info.status == "FAILED" and "worker died" in client.get_run(dead).data.tags["error"]

    done = _child(client, exp, parent, "t2", "FINISHED", {"accuracy": 80.0, "size_bytes": 1000})
    finished, tags = settle("t2")  # finished before the driver died: report it, do not retrain
    assert finished["accuracy"] == 80.0 and finished["mlflow_run_id"] == done and tags == {}


def test_close_search_tags_errors_and_finds_the_search(store):
    client, exp, parent = store
    running = _child(client, exp, parent, "t1")
    failed = _child(client, exp, parent, "t2", "FAILED")
    _child(client, exp, parent, "t3", "FINISHED")
    marked = ms.close_search(client, exp, parent, "FINISHED", {"t1": "RayActorError: died", "t2": "ValueError: x"})
    assert marked == 1
    assert client.get_run(running).info.status == "FAILED"
    assert client.get_run(running).data.tags["error"] == "RayActorError: died"
    assert client.get_run(failed).data.tags["error"] == "ValueError: x"
    assert client.get_run(parent).info.status == "FINISHED"

    name = client.get_experiment(exp).name
    found, run = ms.find_search(client, name, resumable=True)
    assert found.experiment_id == exp and run.info.run_id == parent and ms.search_options_of(run) == {"num_samples": 2}
    assert ms.find_search(client, name, "s1")[1].info.run_id == parent
    assert ms.find_search(client, exp, parent)[1].info.run_id == parent  # experiment id, parent run id
    with pytest.raises(ConfigError, match="no search 'nope'; its latest searches: s1"):
        ms.find_search(client, name, "nope")
    with pytest.raises(ConfigError, match="no MLflow experiment 'other'"):
        ms.find_search(client, "other")
    client.set_tag(parent, ms.OPTIONS_TAG, "")
    client.delete_tag(parent, ms.OPTIONS_TAG)  # a search from a version that did not record its options
    assert ms.find_search(client, name)[1].info.run_id == parent
    with pytest.raises(ConfigError, match="no resumable search"):
        ms.find_search(client, name, resumable=True)
    client.set_tag(parent, ms.OPTIONS_TAG, '{"num_samples": 2}')
    ms.reopen_run(client, parent, "resumed")
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["resume_count"] == "1"


def test_cluster_helpers(tmp_path):
    assert runtime_env(None) is None
    env = runtime_env("127.0.0.1:6379")
    assert (Path(env["working_dir"]) / "trainables" / "trial" / "stages.py").is_file()
    assert ".git" in env["excludes"]
    assert resolve_storage_path("s3://bucket/dir") == "s3://bucket/dir"
    assert resolve_storage_path(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_storage_path(str(tmp_path / "file"))
    assert experiment_path("/r", "exp") == "/r/exp"
    for bad in ("nonsense", "ray://", "http://h:1", "h:99999", "h:1/x"):
        with pytest.raises(ConfigError, match="must be auto, HOST:PORT or ray://HOST:PORT"):
            check_address(bad)
    with pytest.raises(ConfigError, match="cannot reach a Ray cluster"):
        check_address("ray://127.0.0.1:9")


def test_errored_trials_are_read_from_the_result_grid(tmp_path):
    """A real Tune run with one failing trial: its error is found, and the grid says none is left running."""
    import ray
    from ray import tune

    from search.tuner import _error_line, interrupted, trial_errors

    def trainable(config):
        if config["x"] == 1:
            raise ValueError("bad lr")
        tune.report({"score": config["x"]})

    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        results = tune.Tuner(trainable, param_space={"x": tune.grid_search([0, 1])},
                             run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0)).fit()
    finally:
        ray.shutdown()
    errors = trial_errors(results)
    assert len(errors) == 1
    (error,) = errors.values()
    assert _error_line(error) == "ValueError: bad lr"
    assert not interrupted(results, 2) and interrupted(results, 3)


def test_experiments_open_in_the_model_training_view(sqlite_store):
    client, root = sqlite_store
    exp = ms.get_or_create_experiment(client, "kind-new", root)
    assert client.get_experiment(exp).tags[ms.EXPERIMENT_KIND_TAG] == "custom_model_development"
    old = client.create_experiment("kind-old")  # made elsewhere, without the tag: tagged when a search uses it
    assert ms.EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert ms.get_or_create_experiment(client, "kind-old", root) == old
    assert client.get_experiment(old).tags[ms.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(old, ms.EXPERIMENT_KIND_TAG, "genai_development")  # a user's choice is kept
    ms.get_or_create_experiment(client, "kind-old", root)
    assert client.get_experiment(old).tags[ms.EXPERIMENT_KIND_TAG] == "genai_development"


def test_source_tags_name_the_code():
    import subprocess

    tags = ms.source_tags()
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].endswith("run_search.py")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ms.PROJECT_ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
