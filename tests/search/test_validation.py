"""Property tests: malformed spaces and bad argument combinations end in one line ``error: ...`` and exit 2.

``run_search.main`` runs in-process. Validation must fail before anything expensive, so loading
the data and connecting to Ray are replaced by a sentinel: reaching it means the input passed
validation (a failure for the generators that only build invalid input). 60 examples per
property by default; ``FEATHERWEIGHT_HYPOTHESIS_EXAMPLES=3000`` for a deeper local run.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import run_search
from spaces.space import DISTRIBUTIONS, OBJECTIVE_METRICS, TOP_LEVEL_KEYS
from trainables.config import PARAMS

FAST_SPACE = Path(__file__).with_name("fast.yaml")
BASE_SPACE = yaml.safe_load(FAST_SPACE.read_text())
SETTINGS = settings(max_examples=int(os.environ.get("FEATHERWEIGHT_HYPOTHESIS_EXAMPLES", 60)), deadline=None,
                    database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Validated(Exception):
    """Raised instead of loading data or joining Ray: the input got through validation."""


def _sentinel(*_a, **_k):
    raise Validated


def _main(argv: list[str], capfd) -> tuple[int | str, str, str]:
    capfd.readouterr()
    with mock.patch("search.tuner.load_trial_data", _sentinel), mock.patch("search.tuner.connect", _sentinel), \
            mock.patch("search.cluster.connect", _sentinel), mock.patch("search.server.os.execv", _sentinel):
        try:
            code: int | str = run_search.main(argv)
        except Validated:
            code = "validated"
    out, err = capfd.readouterr()
    return code, out, err


def _assert_one_line_error(code, out: str, err: str, *fragments: str) -> None:
    assert code == 2, f"exit {code!r}; stderr: {err[-1500:]}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-1500:]
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def search_args(glue_dir, sst2_teacher):
    return ["search", "--task", "sst2", "--data-dir", str(glue_dir), "--teacher", str(sst2_teacher),
            "--num-samples", "2", "--experiment", "validation"]


# ---------------------------------------------------------------- malformed space files

junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=6)
numeric_keys = sorted(k for k, p in PARAMS.items() if p.kind in ("int", "float"))
string_keys = sorted(k for k, p in PARAMS.items() if p.kind == "str" and p.choices)
not_a_param = st.text(min_size=1, max_size=15).filter(lambda k: k.strip() and k not in PARAMS)


@st.composite
def broken_space(draw) -> tuple[object, str]:
    """A space document with one defect, and a fragment the error must contain (the key at fault)."""
    doc = yaml.safe_load(yaml.safe_dump(BASE_SPACE))
    kind = draw(st.sampled_from(["unknown_param", "unknown_top", "unknown_dist", "swapped_bounds", "params_not_map",
                                 "bad_objective", "bad_choice_value", "non_numeric", "out_of_range", "two_dists",
                                 "empty_choice", "bad_point", "not_a_mapping", "log_nonpositive"]))
    params = doc["params"]
    if kind == "unknown_param":
        key = draw(not_a_param)
        params[key] = draw(junk)
        return doc, "params"
    if kind == "unknown_top":
        doc[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in TOP_LEVEL_KEYS))] = draw(junk)
        return doc, "top-level"
    if kind == "unknown_dist":
        key = draw(st.sampled_from(sorted(PARAMS)))
        params[key] = {draw(st.text(min_size=1, max_size=10).filter(lambda d: d not in DISTRIBUTIONS)): [1, 2]}
        return doc, key
    if kind == "swapped_bounds":
        key = draw(st.sampled_from(numeric_keys))
        lo = draw(st.floats(0.01, 5, allow_nan=False))
        kind_ = "uniform" if PARAMS[key].kind == "float" else "int"
        lo = lo if kind_ == "uniform" else int(lo * 10) + 1
        params[key] = {kind_: [lo, lo]} if draw(st.booleans()) else {kind_: [lo * 2 + 1, lo]}
        return doc, key
    if kind == "params_not_map":
        doc["params"] = draw(st.none() | st.lists(junk, max_size=3) | st.text(max_size=10) | st.integers()
                             | st.just({}))
        return doc, "params"
    if kind == "bad_objective":
        metric = draw(st.sampled_from(sorted(OBJECTIVE_METRICS)) | st.text(min_size=1, max_size=8))
        direction = "up" if metric in OBJECTIVE_METRICS else draw(st.sampled_from(["max", "min"]))
        doc["objectives"] = {metric: direction}
        return doc, "objectives"
    if kind == "bad_choice_value":
        key = draw(st.sampled_from(string_keys))
        bad = draw(st.text(max_size=10).filter(lambda v: v not in PARAMS[key].choices))
        params[key] = {"choice": [bad]} if draw(st.booleans()) else bad
        return doc, key
    if kind == "non_numeric":
        key = draw(st.sampled_from(numeric_keys))
        params[key] = draw(st.text(max_size=8).filter(lambda v: not _is_number(v))
                           | st.lists(st.integers(), max_size=2))
        return doc, key
    if kind == "out_of_range":
        key = draw(st.sampled_from([k for k in numeric_keys if PARAMS[k].high is not None]))
        params[key] = PARAMS[key].high * 10 + 1 if PARAMS[key].kind == "float" else int(PARAMS[key].high) * 10 + 1
        return doc, key
    if kind == "two_dists":
        params["lr"] = {"uniform": [0.001, 0.01], "loguniform": [0.001, 0.01]}
        return doc, "lr"
    if kind == "empty_choice":
        key = draw(st.sampled_from(sorted(PARAMS)))
        params[key] = {"choice": []}
        return doc, key
    if kind == "bad_point":
        point = {"embedding_dim": 8, "vocab_size": 500, "lr": 0.005}
        defect = draw(st.sampled_from(["missing", "extra", "outside"]))
        if defect == "missing":
            point.pop(draw(st.sampled_from(sorted(point))))
        elif defect == "extra":
            point["dropout"] = 0.1
        else:
            point["lr"] = 0.5
        doc["initial_points"] = [point]
        return doc, "initial_points[0]"
    if kind == "log_nonpositive":
        params["lr"] = {"loguniform": [draw(st.floats(-1, 0)), 0.01]}
        return doc, "lr"
    return draw(st.lists(junk, max_size=3) | st.text(max_size=20) | st.integers()), ""


def _is_number(text: str) -> bool:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@SETTINGS
@given(case=broken_space())
def test_malformed_space_is_one_line_exit_2(case, search_args, tmp_path_factory, capfd):
    doc, fragment = case
    path = tmp_path_factory.getbasetemp() / "broken.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    code, out, err = _main(search_args + ["--space", str(path)], capfd)
    _assert_one_line_error(code, out, err, str(path), fragment)


@SETTINGS
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_is_one_line_exit_2(raw, search_args, tmp_path_factory, capfd):
    path = tmp_path_factory.getbasetemp() / "raw.yaml"
    path.write_bytes(raw)
    code, out, err = _main(search_args + ["--space", str(path)], capfd)
    _assert_one_line_error(code, out, err, str(path))


@SETTINGS
@given(key=st.sampled_from(sorted(PARAMS)), value=junk)
def test_any_value_for_any_key_errors_cleanly_or_validates(key, value, search_args, tmp_path_factory, capfd):
    doc = yaml.safe_load(yaml.safe_dump(BASE_SPACE))
    doc["params"][key] = value
    path = tmp_path_factory.getbasetemp() / "value.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    code, out, err = _main(search_args + ["--space", str(path)], capfd)
    if code != "validated":
        _assert_one_line_error(code, out, err, str(path))


# ---------------------------------------------------------------- bad argument combinations

def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


BAD_OPTIONS = st.sampled_from([
    ["--num-samples", "0"], ["--num-samples", "-3"], ["--num-samples", "two"], ["--max-concurrent", "0"],
    ["--sampler", "bogus"], ["--objectives", "foo:max"], ["--objectives", "accuracy:up"], ["--objectives", ","],
    ["--set", "lrr=1"], ["--set", "epochs=0"], ["--set", "student=cnn"], ["--set", "noequals"], ["--set", "=3"],
    ["--set", "lr=abc"], ["--set", "stages=distill,bogus"], ["--set", "lr=[1"], ["--set", "dropout=2"],
    ["--task", "cola"], ["--cpus-per-trial", "0"], ["--gpus-per-trial", "-1"], ["--max-failures", "-1"],
    ["--seed", "-1"], ["--tracking-uri", "file:///tmp/mlruns"], ["--tracking-uri", "./mlruns"],
    ["--tracking-uri", "sqlite:////nonexistent-dir/x.db"], ["--address", "nonsense"], ["--address", "ray://"],
    ["--address", "host:notaport"], ["--address", "http://127.0.0.1:80"], ["--address", "127.0.0.1:99999"],
    ["--data-dir", "/nonexistent-glue"], ["--teacher", "/nonexistent-teacher"], ["--space", "/nonexistent.yaml"],
    ["--storage-path", ""], ["--bogus-flag", "1"], ["--verbose", "x"], ["--pue", "abc"], ["--cpus-per-trial", "x"],
])
GOOD_OPTIONS = st.sampled_from([["--seed", "3"], ["--max-concurrent", "1"], ["--sampler", "random"],
                                ["--objectives", "accuracy:max,size_bytes:min"], ["--set", "epochs=1"],
                                ["--max-failures", "2"], ["--verbose", "0"], ["--space", str(FAST_SPACE)]])


def _slot(group: list[str]) -> str:
    """What an option sets: the flag, or the key for ``--set KEY=VALUE``."""
    return group[0] + (":" + group[1].partition("=")[0] if group[0] == "--set" else "")


@SETTINGS
@given(bad=st.lists(BAD_OPTIONS, min_size=1, max_size=3), good=st.lists(GOOD_OPTIONS, max_size=3),
       order=st.randoms(use_true_random=False))
def test_bad_argument_combinations_are_one_line_exit_2(bad, good, order, search_args, capfd):
    taken = {_slot(g) for g in bad}
    groups = bad + [g for g in good if _slot(g) not in taken]  # a later valid value must not undo a bad one
    order.shuffle(groups)
    argv = search_args + [a for g in groups for a in g]
    code, out, err = _main(argv, capfd)
    _assert_one_line_error(code, out, err)


@SETTINGS
@given(args=st.sampled_from([
    ["server", "--port", "0"], ["server", "--port", "70000"], ["server", "--port", "x"], ["server", "--workers", "0"],
    ["server", "--backend-store-uri", "file:///tmp/mlruns"], ["server", "--backend-store-uri", "redis://x"],
    ["server", "--backend-store-uri", "sqlite:////nonexistent-dir/m.db"], ["server", "--host", "no such host!"],
    ["resume"], ["resume", "--experiment", "x", "--tracking-uri", "./mlruns"],
    ["resume", "--experiment", "x", "--tracking-uri", "sqlite:////nonexistent-dir/m.db"],
    ["resume", "--experiment", "x", "--address", "nonsense"], ["bogus-command"], [],
]))
def test_server_and_resume_reject_bad_arguments(args, capfd, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.getbasetemp())  # resume looks for ./mlflow.db here: none
    code, out, err = _main(args, capfd)
    _assert_one_line_error(code, out, err)


def test_server_refuses_a_port_in_use(capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, out, err = _main(["server", "--port", str(s.getsockname()[1])], capfd)
    _assert_one_line_error(code, out, err, "cannot listen on 127.0.0.1")
