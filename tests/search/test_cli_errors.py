"""Bad input: one line on stderr, exit code 2, before Ray starts or any trial runs."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "run_search.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def base_args(glue_dir, sst2_teacher):
    return ["search", "--task", "sst2", "--data-dir", str(glue_dir), "--teacher", str(sst2_teacher),
            "--num-samples", "1", "--experiment", "errors"]


def _replace(args, flag, value):
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _check_one_line_exit_2(proc, fragment, cwd):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Trial" not in proc.stdout and not (Path(cwd) / "mlflow.db").exists()  # nothing ran, nothing written


def test_malformed_space(tmp_path, base_args):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {loguniform: [0.1, 0.01]}\n")
    proc = _run(base_args + ["--space", str(space)], tmp_path)
    _check_one_line_exit_2(proc, "params.lr: low must be below high", tmp_path)


def test_unknown_task(tmp_path, base_args):
    _check_one_line_exit_2(_run(_replace(base_args, "--task", "cola"), tmp_path), "unknown task 'cola'", tmp_path)


def test_missing_data_folder(tmp_path, base_args):
    proc = _run(_replace(base_args, "--data-dir", str(tmp_path / "no-glue")), tmp_path)
    _check_one_line_exit_2(proc, "does not exist", tmp_path)


def test_unreachable_address(tmp_path, base_args):
    proc = _run(base_args + ["--address", "127.0.0.1:9"], tmp_path)
    _check_one_line_exit_2(proc, "cannot reach a Ray cluster at 127.0.0.1:9", tmp_path)


def test_unreachable_tracking_server_and_unknown_flag(tmp_path, base_args):
    proc = _run(base_args + ["--tracking-uri", "http://127.0.0.1:9"], tmp_path)
    _check_one_line_exit_2(proc, "tracking server http://127.0.0.1:9 is unreachable", tmp_path)
    _check_one_line_exit_2(_run(base_args + ["--bogus"], tmp_path), "unrecognized arguments: --bogus", tmp_path)
    _check_one_line_exit_2(_run(base_args + ["--set", "lrr=1"], tmp_path), "unknown key 'lrr'", tmp_path)
    _check_one_line_exit_2(_run(base_args + ["--pue", "0.5"], tmp_path), "--pue must be a finite number at least 1",
                           tmp_path)
    _check_one_line_exit_2(_run(base_args + ["--seed", str(2**40)], tmp_path), "above its maximum", tmp_path)
    _check_one_line_exit_2(_run(base_args + ["--set", "epochs=" + "9" * 400], tmp_path), "out of range", tmp_path)


def test_missing_teacher_says_how_to_make_one(tmp_path, glue_dir):
    proc = _run(["search", "--task", "sst2", "--data-dir", str(glue_dir), "--cache-dir", str(tmp_path / "cache")],
                tmp_path)
    _check_one_line_exit_2(proc, "run_search.py teacher --task sst2", tmp_path)
    assert "minutes" in proc.stderr


def test_bad_optuna_storage_and_model_name(tmp_path, base_args):
    proc = _run(base_args + ["--optuna-storage", "not a url"], tmp_path)
    _check_one_line_exit_2(proc, "--optuna-storage 'not a url' is not a database URL", tmp_path)
    proc = _run(base_args + ["--optuna-storage", f"sqlite:///{tmp_path}/absent/optuna.db"], tmp_path)
    _check_one_line_exit_2(proc, "absent' does not exist", tmp_path)
    proc = _run(["export", "--experiment", "x", "--select", "knee", "--register", "a/b"], tmp_path)
    _check_one_line_exit_2(proc, "--register 'a/b': a registered model name is", tmp_path)
