"""Hostile input, example by example: one line ``error: ...``, exit code 2, within seconds, no
traceback, nothing left in the store or on disk; credentials never shown; Tune state restored only
from a folder the user names; student files checked (tests/trainables/formats/test_untrusted_files.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

import run_search

ROOT = Path(__file__).resolve().parents[2]
FAST_SPACE = Path(__file__).with_name("fast.yaml")
BOMB = "".join([f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")])
BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BOMB


class Reached(Exception):
    """Raised where real work would start (data loading, Ray, fine-tuning, exec of the server)."""


def _reached(*_a, **_k):
    raise Reached


def _main(argv, capfd, cwd: Path, load_data: bool = False):
    """``run_search.main(argv)`` in ``cwd``; returns (code, stdout, stderr, seconds). The search stops
    where it would load the data (``load_data``: where it would join Ray), the teacher command where
    it would fine-tune."""
    capfd.readouterr()
    here = os.getcwd()
    os.chdir(cwd)
    start = time.perf_counter()
    try:
        data = mock.patch("search.tuner.connect") if load_data else mock.patch("search.tuner.load_trial_data", _reached)
        with data, mock.patch("search.tuner.connect", _reached), mock.patch("search.cluster.connect", _reached), \
                mock.patch("trainables.data.teacher.finetune_teacher", _reached):
            code = run_search.main(argv)
    finally:
        os.chdir(here)
    out, err = capfd.readouterr()
    return code, out, err, time.perf_counter() - start


def check_refused(result, *fragments: str, seconds: float = 20.0):
    code, out, err, took = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err[-2000:])
    assert "Traceback" not in out + err and took < seconds, took
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def search_args(glue_dir, sst2_teacher):
    return ["search", "--task", "sst2", "--data-dir", str(glue_dir), "--teacher", str(sst2_teacher),
            "--num-samples", "1", "--experiment", "hostile", "--space", str(FAST_SPACE)]


@pytest.fixture
def bad_data(tmp_path, glue_dir):
    """GLUE folders whose SST-2 train.tsv is header-only, empty, not UTF-8, or badly labelled."""
    out = {}
    for name, train in (("header", b"sentence\tlabel\n"), ("empty", b""),
                        ("latin", b"sentence\tlabel\nfine\t1\ncaf\xe9\t0\n"),
                        ("labels", b"sentence\tlabel\ngood\t1\nbad\tpositive\n"), ("range", b"sentence\tlabel\nx\t7\n")):
        folder = tmp_path / f"glue-{name}" / "SST-2"
        folder.mkdir(parents=True)
        (folder / "train.tsv").write_bytes(train)
        (folder / "dev.tsv").write_bytes((glue_dir / "SST-2" / "dev.tsv").read_bytes())
        out[name] = folder.parent
    return out


def _empty(folder: Path) -> bool:
    return not list(folder.iterdir())


def test_yaml_alias_bombs_are_refused_in_seconds(tmp_path, search_args, capfd):
    space = tmp_path / "in" / "bomb.yaml"
    space.parent.mkdir()
    space.write_text("params: {epochs: 1, lr: {loguniform: [0.001, 0.01]}}\n" + BOMB.replace("i: &i", "description: &i"))
    work = tmp_path / "work"
    work.mkdir()
    search_args = [a if a != str(FAST_SPACE) else str(space) for a in search_args]
    check_refused(_main(search_args, capfd, work), "found the alias *a; YAML aliases are not allowed", seconds=5)
    export = tmp_path / "in" / "export.yaml"
    export.write_text("config: {student: ffn}\n" + BOMB.replace("i: &i", "source_run_id: &i"))
    check_refused(_main(["replay", str(export)], capfd, work), "YAML aliases are not allowed", seconds=5)
    assert _empty(work)


def test_teacher_options_and_data_files(tmp_path, glue_dir, sst2_teacher, bad_data, capfd):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "a-file").write_text("x")
    base = ["teacher", "--task", "sst2", "--data-dir", str(glue_dir)]
    cases = [(["--batch-size", "-1"], "--batch-size must be an integer from 1"),
             (["--batch-size", "0"], "--batch-size must be an integer from 1"),
             (["--epochs", "nan"], "--epochs must be a finite number"),
             (["--lr", "inf"], "--lr must be a finite number"),
             (["--out", str(tmp_path / "a-file")], "is a file"),
             (["--max-length", "0"], "--max-length")]
    for extra, fragment in cases:
        check_refused(_main(base + extra, capfd, work), fragment)
    train = "SST-2/train.tsv"
    for name, fragment in (("header", f"{train}: no data rows"), ("empty", f"{train}: the file is empty"),
                           ("latin", f"{train}: line 3: not UTF-8"), ("labels", f"{train}: line 3: label 'positive'"),
                           ("range", f"{train}: line 2: label '7' is not one of 0..1")):
        data = ["teacher", "--task", "sst2", "--data-dir", str(bad_data[name]), "--max-train-examples", "10"]
        check_refused(_main(data, capfd, work), fragment)
        # the search reads them with the same reader, in the driver, before anything is written or Ray starts
        search = ["search", "--task", "sst2", "--data-dir", str(bad_data[name]), "--teacher", str(sst2_teacher),
                  "--num-samples", "1", "--space", str(FAST_SPACE)]
        check_refused(_main(search, capfd, work, load_data=True), fragment)
    assert _empty(work)


@pytest.mark.parametrize("space, fragment", [
    ({"stages": "distill,quantize", "bits_encoder": 9}, "'bits_encoder' = 9 is not allowed"),
    ({"bits_encoder": {"choice": [4, 9]}, "stages": "distill,quantize"}, "a trial with bits_encoder=9"),
    ({"student": "ffn", "hidden_dim": 0}, "'hidden_dim' = 0 is below its minimum 1 for student=ffn"),
    ({"prune_targets": "thesis", "embedding": "glove", "student": "ffn"}, "no embedding target for 'glove'"),
    ({"stages": "distill,prune", "prune_schedule": "imp", "finetune_epochs": {"choice": [1, 0]}},
     "a trial with stages=distill,prune, prune_schedule=imp, finetune_epochs=0"),
    ({"student": "transformer", "transformer_layers": 9}, "transformer_layers=9 exceeds the teacher's 6 layers"),
    ({"augment_n": {"int": [0, 2]}}, "use a 'choice' or a fixed value"),
])
def test_cross_key_rules_are_checked_before_ray(space, fragment, tmp_path, search_args, capfd):
    import yaml

    doc = yaml.safe_load(FAST_SPACE.read_text())
    doc["params"].update(space)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    work = tmp_path / "work"
    work.mkdir()
    argv = [a if a != str(FAST_SPACE) else str(path) for a in search_args]
    check_refused(_main(argv, capfd, work), str(path), fragment)
    assert _empty(work)


def test_cross_key_rules_over_set_values(tmp_path, search_args, capfd):
    line = check_refused(_main(search_args + ["--set", "stages=distill,quantize", "--set", "bits_encoder=9"], capfd, tmp_path),
                    "with --set stages=distill,quantize, bits_encoder=9")
    assert "'bits_encoder' = 9 is not allowed" in line and _empty(tmp_path)


@pytest.mark.parametrize("extra, fragment", [
    (["--tracking-uri", "http://[::1"], "is malformed (Invalid IPv6 URL)"),
    (["--tracking-uri", "http://127.0.0.1:abc"], "is malformed (Port could not be cast"),
    (["--tracking-uri", "ftp://host/x"], "scheme 'ftp' is not supported"),
    (["--tracking-uri", "sqlite:///:memory:"], "an in-memory database is not shared"),
    (["--address", "127.0.0.1:²"], "must be auto, HOST:PORT"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial must be a finite number"),
    (["--gpus-per-trial", "inf"], "--gpus-per-trial must be a finite number"),
    (["--experiment", ""], "--experiment must be a non-empty name"),
    (["--objectives", "accuracy:max,accuracy:min"], "objective 'accuracy' is given more than once"),
    (["--data-dir", "~no-such-user-here/glue"], "cannot expand '~no-such-user-here'"),
])
def test_search_options(extra, fragment, tmp_path, search_args, capfd):
    check_refused(_main(search_args + extra, capfd, tmp_path), fragment)
    assert _empty(tmp_path)


def test_cache_dir_that_is_a_file_and_a_sqlite_path_that_is_no_database(tmp_path, search_args, capfd):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "a-file").write_text("not a database")
    check_refused(_main(search_args + ["--cache-dir", str(tmp_path / "a-file")], capfd, work), "is a file")
    check_refused(_main(search_args + ["--tracking-uri", f"sqlite:///{tmp_path / 'a-file'}"], capfd, work),
             "is not an SQLite database")
    assert _empty(work)


def test_credentials_are_masked_in_errors_logs_and_the_options_tag(tmp_path, search_args, capfd):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = check_refused(_main(search_args + ["--tracking-uri", f"http://bob:hunter2@127.0.0.1:{port}"], capfd, tmp_path),
                    f"http://bob:***@127.0.0.1:{port} is unreachable")
    assert "hunter2" not in line
    # the parent run's options tag (what resume reads) and the printed notes
    from search.tuner import Plan, SearchOptions, recorded_options
    from spaces import load_space

    uri = "http://bob:hunter2@mlflow.example:5000"
    options = SearchOptions(tracking_uri=uri, optuna_storage="postgresql://fw:hunter2@db.example/optuna")
    plan = Plan(options, "sst2", load_space(FAST_SPACE), {"accuracy": "max"}, "t", uri, None)
    recorded = json.dumps(recorded_options(plan))
    assert "hunter2" not in recorded and "bob:***@" in recorded and "fw:***@db.example" in recorded
    # log records through the CLI's handler
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "retrying %s", (uri,), None)
    run_search._MaskCredentials().filter(record)
    assert record.getMessage() == "retrying http://bob:***@mlflow.example:5000"


def test_server_passes_the_store_password_in_the_environment(tmp_path, capfd, monkeypatch):
    from search.server import BACKEND_ENV, ServerOptions, serve, server_command

    monkeypatch.chdir(tmp_path)
    uri = "postgresql://fw:hunter2@db.example:5432/mlflow"
    argv, env = server_command(ServerOptions(port=5999, backend_store_uri=uri), tmp_path)
    assert env == {BACKEND_ENV: uri} and not any("hunter2" in a for a in argv)
    seen = {}

    def execv(path, args):
        seen.update(args=list(args), env=os.environ.get(BACKEND_ENV))
        raise Reached

    monkeypatch.setattr("search.server.os.execv", execv)
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    with pytest.raises(Reached):
        serve(ServerOptions(port=5999, backend_store_uri=uri))
    out, err = capfd.readouterr()
    assert seen["env"] == uri and not any("hunter2" in a for a in seen["args"])
    assert "fw:***@db.example" in out and "hunter2" not in out + err
    monkeypatch.delenv(BACKEND_ENV, raising=False)


def _store_state(client) -> list:
    runs = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            runs.append((run.info.run_id, run.info.status, sorted(run.data.tags.items()), sorted(run.data.params.items())))
    return sorted(runs)


def test_resume_checks_the_record_and_restores_only_a_named_folder(store, tmp_path, capfd, glue_dir, sst2_teacher):
    from analysis.store import OPTIONS_TAG, ROLE_TAG
    from search.resume import trusted_tune_path

    exp = store.experiment("res")
    from dataclasses import asdict

    from search.tuner import SearchOptions

    recorded = asdict(SearchOptions(space=str(FAST_SPACE), num_samples=2, experiment="res", data_dir=str(glue_dir),
                                    teacher=str(sst2_teacher), overrides={"epochs": 1}))  # as a search records them
    tags = {"b0": '{"num_samples": "abc"}', "b1": "not json", "b2": "[1]", "b3": json.dumps(recorded),
            "b4": json.dumps({**recorded, "overrides": [1]})}
    for sid, tag in tags.items():
        run = store.client.create_run(exp, run_name=f"search-{sid}", tags={ROLE_TAG: "search", "search_id": sid,
                                                                            OPTIONS_TAG: tag})
        store.client.log_param(run.info.run_id, "tune_experiment_path", str(tmp_path / "ray" / f"res-{sid}"))
    before = _store_state(store.client)
    work = tmp_path / "work"
    work.mkdir()
    base = ["resume", "--experiment", "res", "--tracking-uri", store.uri, "--search-id"]
    check_refused(_main(base + ["b0"], capfd, work), "'num_samples' = 'abc' must be of type int")
    check_refused(_main(base + ["b1"], capfd, work), "is not a JSON object")
    check_refused(_main(base + ["b2"], capfd, work), "is not a JSON object")
    check_refused(_main(base + ["b4"], capfd, work), "'overrides' = [1] must be of type dict")
    line = check_refused(_main(base + ["b3"], capfd, work), "loading it runs code",
                    f"pass --storage-path {tmp_path / 'ray'} to confirm")
    assert "--trust-recorded-storage" in line
    # with the folder named, the search is planned; its Tune state is not there
    check_refused(_main(base + ["b3", "--storage-path", str(tmp_path / "elsewhere")], capfd, work),
             f"no Tune experiment state at {tmp_path / 'elsewhere' / 'res-b3'}")
    assert _store_state(store.client) == before and _empty(work)
    parent = store.client.search_runs([exp], "tags.search_id = 'b3'")[0]
    assert trusted_tune_path(parent, None, True) == str(tmp_path / "ray" / "res-b3")
    assert trusted_tune_path(parent, str(tmp_path / "moved"), False) == str(tmp_path / "moved" / "res-b3")


def test_analyze_and_export_check_before_writing_and_keep_derived_folders_inside(search, tmp_path, capfd):
    store = search.store
    before = _store_state(store.client)
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_text("x")
    analyze = ["analyze", "--experiment", "fw", "--tracking-uri", store.uri]
    check_refused(_main(analyze + ["--reference", "nan,1"], capfd, work), "finite numbers")
    check_refused(_main(analyze + ["--reference", "1,2,3"], capfd, work), "has 3 values, need one per objective (2)")
    check_refused(_main(analyze + ["--out", str(work / "a-file")], capfd, work), "is a file")
    check_refused(_main(["export", "--experiment", "fw", "--tracking-uri", store.uri, "--select", "pareto", "--out",
                    str(work / "a-file" / "x")], capfd, work), "not a writable folder")
    assert _store_state(store.client) == before and sorted(p.name for p in work.iterdir()) == ["a-file"]
    # an experiment named like a path: the derived folders stay under ./exports and ./reports
    from store_fixtures import make_search

    make_search(store, "../../x")
    code, out, err, _ = _main(["export", "--experiment", "../../x", "--tracking-uri", store.uri, "--select", "pareto"],
                              capfd, work)
    assert code == 0, err
    written = [p for p in work.rglob("*.yaml")]
    assert written and all(p.is_relative_to(work / "exports" / "x") for p in written)
    assert not (tmp_path.parent / "x").exists()


def test_replay_of_a_file_that_is_not_utf8(tmp_path, capfd):
    path = tmp_path / "export.yaml"
    path.write_bytes(b"config: {student: ffn}\nsource_run_id: abc\n\xff\xfe\n")
    check_refused(_main(["replay", str(path)], capfd, tmp_path), "is not UTF-8 text")
    masked = tmp_path / "masked.yaml"
    masked.write_text("config: {student: ffn}\nsource_run_id: abc\ntracking_uri: http://bob:***@host:5000\n")
    check_refused(_main(["replay", str(masked)], capfd, tmp_path), "has its password masked; pass --tracking-uri")


@pytest.mark.parametrize("argv_tail", [
    ["--tracking-uri", "http://[::1"],
    ["--set", "stages=distill,quantize", "--set", "bits_encoder=9"],
])
def test_as_a_real_process(argv_tail, tmp_path, search_args):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), *search_args, *argv_tail], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr and _empty(tmp_path)
    assert time.perf_counter() - start < 60
