"""run_search.py analyze / export / replay: defaults, output and one-line errors (exit 2)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def main():
    spec = importlib.util.spec_from_file_location("run_search", ROOT / "run_search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_analyze_and_export_with_default_store_and_folders(main, search, monkeypatch, capsys):
    monkeypatch.chdir(search.store.tmp)  # the store is ./mlflow.db, the default --tracking-uri
    assert main(["analyze", "--experiment", "fw", "--group-by", "student,embedding"]) == 0
    report = Path("reports/fw/report.html")
    assert report.is_file() and str(report) in capsys.readouterr().out
    assert "bilstm/hash" in report.read_text()

    assert main(["export", "--experiment", "fw", "--select", "knee"]) == 0
    out = capsys.readouterr().out
    (path,) = Path("exports/fw").iterdir()
    assert str(path) in out and "run_search.py replay" in out
    assert yaml.safe_load(path.read_text())["source_run_id"] == search.runs["t1"]

    assert main(["export", "--experiment", "fw", "--select", "pareto", "--out", "front", "--search-id", "old"]) == 0
    assert len(list(Path("front").glob("pareto-*.yaml"))) == 2


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["analyze", "--experiment", "nope"], "no MLflow experiment 'nope'"),
        (["analyze", "--experiment", "fw", "--reference", "1,x"], "--reference '1,x' must be comma-separated"),
        (["analyze", "--experiment", "fw", "--objectives", "accuracy:maybe"], "direction must be max or min"),
        (["analyze"], "the following arguments are required: --experiment"),
        (["export", "--experiment", "fw", "--select", "bogus"], "--select 'bogus' is not one of"),
        (["export", "--experiment", "fw"], "the following arguments are required: --select"),
        (["replay", "missing.yaml"], "config file 'missing.yaml' does not exist"),
    ],
)
def test_errors_are_one_line_and_exit_2(main, shared_search, monkeypatch, capsys, args, fragment):
    monkeypatch.chdir(shared_search.store.tmp)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert err.count("\n") == 1


def test_replay_rejects_a_file_that_is_not_an_export(main, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("config: [1, 2]\n")
    assert main(["replay", str(bad)]) == 2
    assert "not an exported trial" in capsys.readouterr().err
    bad.write_text("config: {student: ffn\n")
    assert main(["replay", str(bad)]) == 2
    assert "invalid YAML" in capsys.readouterr().err
