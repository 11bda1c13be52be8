"""The search's Optuna study in an RDB storage (sqlite files in a temporary folder; no Ray)."""

from __future__ import annotations

import pickle

import optuna
import pytest

from search import optuna_store
from trainables.errors import ConfigError


def test_default_url_is_beside_the_tune_experiment_state(tmp_path):
    assert optuna_store.default_storage_url(str(tmp_path / "exp")) == f"sqlite:///{tmp_path}/exp/optuna.db"
    assert optuna_store.default_storage_url(f"file://{tmp_path}/exp") == f"sqlite:///{tmp_path}/exp/optuna.db"
    # a URI storage (s3://...): a file in the driver's working folder
    assert optuna_store.default_storage_url("s3://bucket/runs/exp", cwd=tmp_path) == f"sqlite:///{tmp_path}/optuna.db"


def test_urls_are_checked_without_connecting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert optuna_store.check_storage_url("sqlite:///o.db") == f"sqlite:///{tmp_path.resolve()}/o.db"
    assert not (tmp_path / "o.db").exists()
    try:
        import psycopg2  # noqa: F401
    except ImportError:  # a server URL needs its driver, checked before anything connects
        with pytest.raises(ConfigError, match="no database driver for 'postgresql'"):
            optuna_store.check_storage_url("postgresql://u@127.0.0.1:9/db")
    for url, match in [("nonsense", "is not a database URL"), ("sqlite://", "in-memory"),
                       ("sqlite:///:memory:", "in-memory"), (f"sqlite:///{tmp_path}/no/o.db", "does not exist"),
                       (f"sqlite:///{tmp_path}", "is a folder"), ("nodriver://u@h/db", "is not a database URL|driver")]:
        with pytest.raises(ConfigError, match=match):
            optuna_store.check_storage_url(url)


def test_the_prepared_study_is_what_optuna_and_a_restored_searcher_see(tmp_path):
    url = f"sqlite:///{tmp_path}/exp/optuna.db"
    storage = optuna_store.prepare_search_study(url, "s", {"accuracy": "max", "size_bytes": "min"},
                                                {"mlflow_parent_run_id": "abc"})
    # OptunaSearch creates the study with load_if_exists=True: it finds this one
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize"],
                                load_if_exists=True)
    trial = study.ask()
    study.tell(trial, [81.5, 1234.0])
    # Tune pickles the searcher (storage included) and a resumed driver unpickles it: same database
    restored = pickle.loads(pickle.dumps(study))
    restored.tell(restored.ask(), [80.0, 999.0])
    loaded = optuna.load_study(study_name="s", storage=url)  # what a user opens
    assert [t.values for t in loaded.trials] == [[81.5, 1234.0], [80.0, 999.0]]
    assert loaded.metric_names == ["accuracy", "size_bytes"] and loaded.user_attrs == {"mlflow_parent_run_id": "abc"}
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]


def test_an_unwritable_storage_is_a_config_error(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "optuna.db").write_text("not a database")
    with pytest.raises(ConfigError, match="cannot open it"):
        optuna_store.prepare_search_study(f"sqlite:///{tmp_path}/ro/optuna.db", "s", {"accuracy": "max"})


def test_load_search_study_reads_the_parent_runs_params(tmp_path, store):
    from search.mlflow_store import start_parent_run

    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna_store.prepare_search_study(url, "study-1", {"accuracy": "max"})
    exp = store.experiment("opt")
    parent = start_parent_run(store.client, exp, "search-1", {"optuna_storage": url, "study_name": "study-1"}, {})
    assert optuna_store.load_search_study(store.client.get_run(parent)).study_name == "study-1"
    old = start_parent_run(store.client, exp, "search-0", {"optuna_storage": "tune searcher state",
                                                           "study_name": "x"}, {})
    with pytest.raises(ConfigError, match="records no Optuna RDB storage"):
        optuna_store.load_search_study(store.client.get_run(old))


def test_trials_a_killed_driver_left_running_are_failed_when_the_search_finishes(tmp_path, store):
    from search.mlflow_store import start_parent_run

    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna_store.prepare_search_study(url, "s", {"accuracy": "max"})
    study = optuna.load_study(study_name="s", storage=url)
    study.tell(study.ask(), 80.0)
    study.ask()  # asked by the driver that was killed; its resume sampled anew
    parent = store.client.get_run(start_parent_run(store.client, store.experiment("orph"), "search-1",
                                                   {"optuna_storage": url, "study_name": "s"}, {}))
    assert optuna_store.fail_orphans(parent) == 1
    assert [t.state.name for t in optuna.load_study(study_name="s", storage=url).trials] == ["COMPLETE", "FAIL"]
    assert optuna_store.fail_orphans(parent) == 0
