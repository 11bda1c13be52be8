"""export_configs selectors and YAML content against a real sqlite MLflow store."""

from __future__ import annotations

import pytest
import yaml

from analysis import Selector, export_configs, parse_selector
from trainables.config import resolve_config
from trainables.errors import ConfigError


def _exported(shared_search, tmp_path, select, **kwargs):
    paths = export_configs(shared_search.store.uri, "fw", tmp_path / "out", select, **kwargs)
    docs = [yaml.safe_load(p.read_text()) for p in paths]
    by_run = {rid: tid for tid, rid in shared_search.runs.items()}
    return paths, docs, [by_run.get(d["source_run_id"], d["source_run_id"]) for d in docs]


@pytest.mark.parametrize(
    "select, expected",
    [
        ("pareto", ["t0", "t1", "t3"]),
        ("knee", ["t1"]),  # normalised distances to utopia: t0 1.0, t1 0.54, t3 1.0
        ("best:accuracy", ["t3"]),  # t7 ties at 90 but started later
        ("best:size_bytes", ["t0"]),  # minimised
        ("best:latency_ms", ["t2"]),
        ("accuracy@size_bytes<=8000", ["t1"]),
        ("accuracy@size_bytes<5000", ["t0"]),  # t1 has exactly 5000
        ("accuracy@size_bytes<=5000", ["t1"]),
        ("accuracy@size_bytes>20000", ["t7"]),
        ("accuracy @ size_bytes >= 40000", ["t5"]),
        ("size_bytes@accuracy>=88", ["t3"]),
    ],
)
def test_selectors_pick_the_right_trials(shared_search, tmp_path, select, expected):
    _, _, tids = _exported(shared_search, tmp_path, select)
    assert tids == expected


def test_pareto_and_knee_follow_given_objectives(shared_search, tmp_path):
    _, _, tids = _exported(shared_search, tmp_path, "pareto", objectives="accuracy:max,latency_ms:min")
    assert tids == ["t1", "t2", "t3"]  # t2 (82 %, 0.5 ms) dominates t0 (80 %, 1.0 ms)
    # normalised over that front: t2 (1.0, 0.0), t1 (0.625, 0.6), t3 (0.0, 1.0)
    _, _, tids = _exported(shared_search, tmp_path, "knee", objectives=["accuracy", "latency_ms"])
    assert tids == ["t1"]


def test_exported_yaml_holds_typed_resolved_config_and_provenance(shared_search, tmp_path):
    paths, docs, _ = _exported(shared_search, tmp_path, "best:accuracy")
    (path,), (doc,) = paths, docs
    rid = shared_search.runs["t3"]
    assert path.name == f"best-accuracy-trial004-{rid[:8]}.yaml"
    expected = resolve_config({"student": "bilstm", "embedding": "hash", "lr": 0.004, "embedding_dim": 13})
    assert doc["config"] == expected
    assert type(doc["config"]["embedding_dim"]) is int and type(doc["config"]["lr"]) is float
    assert doc["source_run_id"] == rid
    assert doc["experiment"] == "fw"
    assert doc["tracking_uri"] == shared_search.store.uri
    assert doc["student_uri"] == f"runs:/{rid}/model/student.safetensors"
    assert doc["model_uri"] is None  # these runs logged no MLflow model
    assert doc["metrics"] == {"accuracy": 90.0, "latency_ms": 3.0, "size_bytes": 20000.0, "train_time_s": 40.0}
    assert (doc["selector"], doc["search_id"], doc["trial_id"]) == ("best:accuracy", "new", "t3")
    assert doc["parent_run_id"] == shared_search.parent


def test_export_from_an_older_search(shared_search, tmp_path):
    _, docs, _ = _exported(shared_search, tmp_path, "best:accuracy", search_id="old")
    assert [d["source_run_id"] for d in docs] == [shared_search.old_runs[1]]
    assert docs[0]["search_id"] == "old"


def test_parse_selector():
    assert parse_selector(" pareto ") == Selector("pareto")
    assert parse_selector("best:f1") == Selector("best", "f1", "max")
    assert parse_selector("energy_j@accuracy>80.5") == Selector("constrained", "energy_j", "min",
                                                                 ("accuracy", ">", 80.5))
    assert parse_selector("accuracy@size_bytes<=2e5").slug() == "accuracy-at-size_bytes-le-200000"


@pytest.mark.parametrize(
    "select, match",
    [
        ("knees", "is not one of: pareto, knee"),
        ("best:colour", "metric 'colour' has no known direction"),
        ("best:", "metric '' has no known direction"),
        ("accuracy@size_bytes=<5", "is not one of"),
        ("accuracy@size_bytes==5", "is not one of"),
        ("accuracy@size_bytes<=big", "'big' is not a number"),
        ("accuracy@size_bytes<=nan", "must be finite"),
    ],
)
def test_bad_selectors_fail_before_the_store_is_opened(tmp_path, select, match):
    with pytest.raises(ConfigError, match=match):
        export_configs(f"sqlite:///{tmp_path}/absent.db", "fw", tmp_path / "out", select)
    assert not (tmp_path / "out").exists()


def test_selectors_that_match_nothing(shared_search, tmp_path):
    with pytest.raises(ConfigError, match=r"no finished trial has size_bytes < 500 \(observed size_bytes from 1000"):
        export_configs(shared_search.store.uri, "fw", tmp_path / "o", "accuracy@size_bytes<500")
    with pytest.raises(ConfigError, match="constraint metric 'energy_j' was not logged"):
        export_configs(shared_search.store.uri, "fw", tmp_path / "o", "accuracy@energy_j<500")
    with pytest.raises(ConfigError, match="metric 'f1' was not logged"):
        export_configs(shared_search.store.uri, "fw", tmp_path / "o", "best:f1")
