"""Fuzz: several hundred malformed inputs, from a seeded generator, through every subcommand's
checks, search spaces, replay configs and student files.

Each input must end in one of two ways: one line ``error: ...`` on stderr with exit code 2, no
traceback, and nothing written to the working folder; or (for inputs that happen to be valid)
reaching the point where the real work would start, which is replaced by a sentinel here (loading
data, joining Ray, fine-tuning, ``exec`` of the MLflow server, the first write of ``analyze``).
Student files must load or raise :class:`ConfigError`, nothing else. A few failing command lines
are run again as real processes for the exit code and stderr.

``run_search.main`` runs in-process to keep this fast. The generator is seeded
(``FEATHERWEIGHT_FUZZ_SEED``, default 0); every category stops drawing new cases at its share of
``FEATHERWEIGHT_FUZZ_SECONDS`` (default 30 seconds), so the test's run time is bounded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import pytest
import yaml
from student_files import real_files, split

import run_search
from trainables.config import PARAMS
from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("FEATHERWEIGHT_FUZZ_SEED", "0"))
BUDGET_S = float(os.environ.get("FEATHERWEIGHT_FUZZ_SECONDS", "30"))
CASE_TIMEOUT_S = 30  # one case taking longer is a hang
FAST_SPACE = ROOT / "tests" / "search" / "fast.yaml"
SHARES = {"search": 0.22, "space": 0.2, "commands": 0.2, "replay": 0.1, "files": 0.08, "processes": 0.2}


class Validated(Exception):
    """Raised where the real work would start: the input got through every check."""


def _sentinel(*_a, **_k):
    raise Validated


@contextmanager
def _deadline(seconds: float, case: object):
    def alarm(*_):
        raise TimeoutError(f"case took over {seconds} s (a hang?): {case!r}")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


PATCHES = ("search.tuner.load_trial_data", "search.tuner.connect", "search.cluster.connect",
           "search.server.os.execv", "search.replay.build_trial_data",
           "trainables.data.teacher.finetune_teacher", "analysis.report._tag_ranks",
           "analysis.export._config_from_params")


def _main(argv: list[str], capfd, work: Path) -> tuple[object, str, str]:
    """``run_search.main(argv)`` in ``work``: ``(exit code or "validated", stdout, stderr)``."""
    capfd.readouterr()
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with _deadline(CASE_TIMEOUT_S, argv), ExitStack() as stack:
            for target in PATCHES:
                stack.enter_context(mock.patch(target, _sentinel))
            try:
                code: object = run_search.main(argv)
            except Validated:
                code = "validated"
            except SystemExit as e:  # argparse's --help
                code = f"exit {e.code}"
    except Exception as e:
        raise AssertionError(f"{type(e).__name__} escaped for argv {argv!r}: {e}") from e
    finally:
        os.chdir(cwd)
    out, err = capfd.readouterr()
    return code, out, err


def _check(argv: list[str], code: object, out: str, err: str, work: Path) -> bool:
    """Assert the outcome; return whether it was a refusal. Empties ``work`` after a valid input."""
    assert "Traceback" not in out + err, (argv, err[-2000:])
    if code in ("validated", "exit 0"):
        for entry in work.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return False
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, code, err[-2000:])
    assert "hunter2" not in out + err, (argv, err)  # the password of the fuzzed URIs is never shown
    assert not list(work.iterdir()), (argv, sorted(p.name for p in work.iterdir()))  # nothing written
    return True


# ------------------------------------------------------------------------------------- values

NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1", "2", "3.5", "1e999", "-0", "1e-400", "²", "١٢", "0x10", "", " ",
           "1_000", "9" * 30, "9" * 5000, "2.0", "true", "-3"]
TEXT_PIECES = ["", " ", "a", "sst2", "../../x", "..", "/", "\n", "\t", "\x1b[31m", "é", "\U0001f600", "'", '"', ",",
               ":", "=", "&a", "*a", "[", "{", "}", "%s", "%(x)s", "\\", "$HOME", "~", "-", "--", "x" * 300]


def rand_text(rng: random.Random) -> str:
    return "".join(rng.choice(TEXT_PIECES) for _ in range(rng.randint(0, 4)))


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def rand_uri(rng: random.Random, paths: dict[str, Path]) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return rng.choice(["http://[::1", "http://127.0.0.1:abc", "http://127.0.0.1:99999", "http://:0", "http://",
                           "https://h st:1", "ftp://h/x", "file:///tmp/mlruns", "./mlruns", "sqlite:///:memory:",
                           "sqlite://", "sqlite:///", "sqlite:////nonexistent-dir/m.db", "mlflow-artifacts:/x",
                           "HTTP://127.0.0.1:²", "postgresql+x://[", "databricks", "\x00", ""])
    if kind == 1:
        target = rng.choice([paths["folder"], paths["junk"], paths["folder"] / "new.db", paths["store_db"]])
        return f"sqlite:///{target}" + rng.choice(["", "?mode=memory", "?x=1"])
    user = rng.choice(["", "bob:hunter2@", "bob@", ":hunter2@", "b%40b:hunter2@x@"])
    host = rng.choice(["127.0.0.1", "[::1]", "localhost", "[::1", "", "999.1.1.1"])
    port = rng.choice(["", ":" + closed_port(), ":abc", ":0", ":65536", ":²"])
    return f"{rng.choice(['http', 'https', 'HtTp'])}://{user}{host}{port}{rng.choice(['', '/', '/x?y=1'])}"


def rand_path(rng: random.Random, paths: dict[str, Path]) -> str:
    return str(rng.choice([paths["missing"], paths["junk"], paths["folder"], paths["store_db"], Path(""),
                           paths["folder"] / "sub" / "deeper", Path("~nouser/x")]))


# -------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def env(tmp_path_factory, glue_dir, sst2_teacher, empty_db):
    """Inputs (a real store, bad data folders, student files, spaces) and an empty working folder."""
    from store_fixtures import _open, make_search

    base = tmp_path_factory.mktemp("fuzz")
    store = _open(base, empty_db)
    search = make_search(store, "fw")
    _resumable_searches(store, random.Random(SEED))
    folder = base / "folder"
    folder.mkdir()
    junk = base / "junk.bin"
    junk.write_bytes(b"\x00\xff junk \xfe")
    data = {}
    for name, train in (("header", b"sentence\tlabel\n"), ("empty", b""), ("latin", b"sentence\tlabel\nw\xe9\t1\n"),
                        ("labels", b"sentence\tlabel\ngood\t1\nbad\tpositive\n"), ("wide", b"x\n" * 3)):
        (base / f"data-{name}" / "SST-2").mkdir(parents=True)
        (base / f"data-{name}" / "SST-2" / "train.tsv").write_bytes(train)
        shutil.copy(glue_dir / "SST-2" / "dev.tsv", base / f"data-{name}" / "SST-2" / "dev.tsv")
        data[name] = base / f"data-{name}"
    dense, packed = real_files(base)
    run_id = search.runs["t1"]
    config = {k: _typed(k, v) for k, v in store.client.get_run(run_id).data.params.items()}
    export = {"config": config, "source_run_id": run_id, "experiment": "fw", "tracking_uri": store.uri}
    work = base / "work"
    work.mkdir()
    paths = {"missing": base / "missing", "junk": junk, "folder": folder, "store_db": base / "mlflow.db"}
    return {"base": base, "store": store, "paths": paths, "data": data, "dense": dense.read_bytes(),
            "packed": packed.read_bytes(), "export": export, "work": work, "glue": glue_dir, "teacher": sst2_teacher}


def _typed(key: str, raw: str) -> object:
    from trainables.config import parse_param

    return parse_param(key, raw)


def _resumable_searches(store, rng: random.Random) -> None:
    """An experiment ``res`` whose searches record fuzzed options (tag) and Tune folders (param)."""
    from dataclasses import asdict

    from analysis.store import OPTIONS_TAG, ROLE_TAG
    from search.tuner import SearchOptions

    exp = store.experiment("res")
    good = asdict(SearchOptions(space=str(FAST_SPACE), num_samples=2, experiment="res", overrides={"epochs": 1}))
    for i in range(12):
        options = dict(good)
        for _ in range(rng.randint(0, 3)):
            options[rng.choice(sorted(good) + ["bogus"])] = rng.choice(
                [None, "x", -1, 1e300, float("nan"), [1], {"a": 1}, {"lr": [1]}, True, "1", "auto", "127.0.0.1:1"])
        tag = rng.choice([json.dumps(options)] * 3 + ["not json", "[1]", json.dumps(options)[:-3], "{}"])
        run = store.client.create_run(exp, run_name=f"search-r{i}",
                                      tags={ROLE_TAG: "search", "search_id": f"r{i}", OPTIONS_TAG: tag[:5000]})
        path = rng.choice(["/tmp/ray_results/res-r", "", "..", "/", "s3://b/k", "/tmp/x/../../etc"])
        store.client.log_param(run.info.run_id, "tune_experiment_path", path)


# ---------------------------------------------------------------------------------- the cases

def search_argv(rng: random.Random, env: dict) -> list[str]:
    paths = env["paths"]
    argv = ["search", "--task", "sst2", "--data-dir", str(env["glue"]), "--teacher", str(env["teacher"]),
            "--num-samples", "2", "--experiment", "fuzz", "--space", str(FAST_SPACE)]
    numeric = ["--num-samples", "--max-concurrent", "--cpus-per-trial", "--gpus-per-trial", "--max-failures", "--seed",
               "--pue", "--kg-per-kwh", "--cpu-watts-per-core", "--verbose"]
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 0:
            argv += [rng.choice(numeric), rng.choice(NUMBERS)]
        elif kind == 1:
            argv += ["--tracking-uri", rand_uri(rng, paths)]
        elif kind == 2:
            argv += ["--address", rng.choice(["127.0.0.1:²", "host:notaport", "ray://", "[::1:80", "a:b:c", "",
                                              "http://x:1", "127.0.0.1:" + closed_port(), "ray://127.0.0.1:0"])]
        elif kind == 3:
            argv += [rng.choice(["--data-dir", "--teacher", "--space", "--cache-dir", "--storage-path"]),
                     rand_path(rng, paths) if rng.random() < 0.7 else str(rng.choice(list(env["data"].values())))]
        elif kind == 4:
            key = rng.choice(sorted(PARAMS) + ["", "lrr", "x y"])
            argv += ["--set", f"{key}{rng.choice(['=', '', '=='])}{rng.choice(NUMBERS + TEXT_PIECES + ['ffn', '[&a [1]]'])}"]
        elif kind == 5:
            metrics = ["accuracy", "size_bytes", "energy_j", "f1", "bogus", ""]
            argv += ["--objectives", ",".join(f"{rng.choice(metrics)}:{rng.choice(['max', 'min', 'up', ''])}"
                                              for _ in range(rng.randint(0, 3)))]
        else:
            argv += [rng.choice(["--task", "--sampler", "--experiment", "--bogus"]), rand_text(rng)]
    return argv


def space_file(rng: random.Random, env: dict, path: Path) -> None:
    doc = yaml.safe_load(rng.choice([FAST_SPACE, ROOT / "spaces" / "compress.yaml"]).read_text())
    params = doc["params"]
    values = [None, True, 0, -1, 1e300, "x", [], {}, [1, 2], {"choice": []}, {"choice": ["ffn", "ffn"]},
              {"int": [0, 2]}, {"uniform": [1, 0]}, {"loguniform": [0, 1]}, {"logint": [1, 10 ** 9]},
              {"choice": [0, 9, 16]}, {"int": [2, 12]}, {"uniform": ["a", 1]}, {"int": [1, 2], "choice": [1]}]
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        if kind == 0:
            params[rng.choice(sorted(PARAMS) + ["bogus"])] = rng.choice(values)
        elif kind == 1:  # a cross-key rule some trial would break
            params.update(rng.choice([{"student": "ffn", "hidden_dim": 0}, {"bits_encoder": {"choice": [8, 9]}},
                                      {"prune_targets": "thesis", "embedding": {"choice": ["hash", "glove"]}},
                                      {"stages": "distill,prune", "prune_schedule": "imp", "finetune_epochs": 0},
                                      {"stages": {"choice": ["distill", "prune,distill"]}},
                                      {"augment_n": {"int": [0, 2]}}, {"student": "transformer",
                                                                        "transformer_layers": 40}]))
        elif kind == 2:
            doc["objectives"] = rng.choice([{"accuracy": "up"}, {"bogus": "max"}, [], "accuracy:max,accuracy:min",
                                            None, {"accuracy": "max"}])
        elif kind == 3:
            doc["initial_points"] = rng.choice([[{"lr": 0.5}], "x", [None], [{}], [{k: 1 for k in params}]])
        elif kind == 4:
            doc[rng.choice(["description", "bogus", "params"])] = rng.choice(values + [rand_text(rng)])
        else:
            params.pop(rng.choice(sorted(params)), None)
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    kind = rng.randrange(5)
    if kind == 1:
        text = text[: rng.randrange(len(text))]
    elif kind == 2:
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice([b"&a ", b"*a", b"\xff", b"\x00", b"[" * 80, b": :", b"\n  - "]) + text[at:]
    elif kind == 3:
        lines = text.splitlines(keepends=True)
        text = b"".join(lines + [rng.choice(lines)])  # a repeated key, most often
    elif kind == 4:
        text = b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + text
    path.write_bytes(text)


def command_argv(rng: random.Random, env: dict) -> list[str]:
    paths, uri = env["paths"], env["store"].uri
    kind = rng.randrange(6)
    if kind == 0:
        argv = ["teacher", "--task", "sst2", "--data-dir", str(rng.choice(list(env["data"].values()) + [env["glue"]]))]
        for _ in range(rng.randint(0, 2)):
            argv += [rng.choice(["--epochs", "--lr", "--batch-size", "--max-length", "--max-train-examples", "--seed"]),
                     rng.choice(NUMBERS)]
        if rng.random() < 0.3:
            argv += [rng.choice(["--out", "--cache-dir", "--base"]), rand_path(rng, paths)]
        return argv
    if kind in (1, 2):
        argv = [rng.choice(["analyze", "export"]), "--experiment", rng.choice(["fw", "../../x", "", "nope", "1"]),
                "--tracking-uri", rng.choice([uri] * 4 + [rand_uri(rng, paths)])]
        if argv[0] == "export" or rng.random() < 0.3:
            argv += ["--select", rng.choice(["pareto", "knee", "best:accuracy", "best:bogus", "accuracy@size_bytes<=1",
                                             "accuracy@size_bytes<=nan", "", "x@y"])]
        for _ in range(rng.randint(0, 2)):
            flag = rng.choice(["--reference", "--out", "--objectives", "--group-by", "--search-id"])
            value = {"--reference": rng.choice(["1,2", "nan,1", "1", "a,b", "", "1,2,3", "inf,0"]),
                     "--out": rand_path(rng, paths), "--search-id": rng.choice(["new", "old", "x' or 1=1", ""]),
                     "--objectives": rng.choice(["accuracy:max", "accuracy:max,accuracy:min", "bogus", ""]),
                     "--group-by": rng.choice(["student", "bogus", "", "param.lr"])}[flag]
            argv += [flag, value]
        return argv
    if kind == 3:
        argv = ["resume", "--experiment", rng.choice(["res", "fw", ""]), "--tracking-uri", uri,
                "--search-id", f"r{rng.randrange(12)}"]
        argv += rng.choice([[], ["--trust-recorded-storage"], ["--storage-path", rand_path(rng, paths)],
                            ["--address", rng.choice(["local", "nonsense", "127.0.0.1:²"])]])
        return argv
    if kind == 4:
        return ["server", rng.choice(["--port", "--workers", "--host", "--backend-store-uri", "--artifacts-destination",
                                      "--allowed-hosts"]),
                rng.choice(NUMBERS + [rand_uri(rng, paths), rand_path(rng, paths), "postgresql://bob:hunter2@[x"])]
    return rng.choice([[], ["bogus"], ["search", "--bogus"], ["replay"], ["resume"], ["export", "--experiment", "x"],
                       ["search", "--num-samples"], [rand_text(rng)]])


def replay_file(rng: random.Random, env: dict, path: Path) -> list[str]:
    doc = json.loads(json.dumps(env["export"]))
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(5)
        if kind in (0, 4) and not (isinstance(doc.get("config"), dict) and doc["config"]):
            kind = 1
        if kind == 0:
            doc["config"][rng.choice(sorted(PARAMS) + ["bogus"])] = rng.choice(
                [None, -1, 1e300, "x", [1], {"a": 1}, True, 0, "ffn", 9])
        elif kind == 1:
            doc["source_run_id"] = rng.choice([None, "", "0" * 32, "../x", 5, ["a"], "x' or 1=1", "a" * 70])
        elif kind == 2:
            doc["tracking_uri"] = rand_uri(rng, env["paths"])
        elif kind == 3:
            doc[rng.choice(["config", "bogus"])] = rng.choice([None, [], "x", {"student": "cnn"}])
        else:
            doc["config"].pop(rng.choice(sorted(doc["config"])), None)
    text = yaml.safe_dump(doc, allow_unicode=True).encode()
    if rng.random() < 0.3:
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice([b"\xff\xfe", b"&a ", b"*a", b"\t", b"\n- "]) + text[at:]
    path.write_bytes(text)
    extra = rng.choice([[], ["--tracking-uri", env["store"].uri], ["--workdir", rand_path(rng, env["paths"])],
                        ["--device", "tpu"], ["--max-diff-pp", "nan"]])
    return ["replay", str(path), *extra]


def student_bytes(rng: random.Random, env: dict) -> bytes:
    data = rng.choice([env["dense"], env["packed"]])
    kind = rng.randrange(4)
    if kind == 0:  # flipped bytes anywhere
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 1:
        return data[: rng.randrange(len(data))]
    header, buffer = split(data)
    junk = [None, -1, 2**64, 2**31, 1.5, "x", [], [0], [-1, 5], [0, 2**60], {"a": 1}, True, "F64", [2**20, 2**20]]
    if kind == 2:  # one field of one tensor's description
        name = rng.choice(sorted(k for k in header if k != "__metadata__"))
        header[name][rng.choice(["dtype", "shape", "data_offsets", "bogus"])] = rng.choice(junk)
    else:  # one value inside one JSON metadata document, or a metadata string itself
        meta = header["__metadata__"]
        key = rng.choice(sorted(meta))
        try:
            doc = json.loads(meta[key])
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc:
            inner = rng.choice(sorted(doc))
            if isinstance(doc[inner], dict) and doc[inner] and rng.random() < 0.7:
                doc[inner][rng.choice(sorted(doc[inner]))] = rng.choice(junk)
            else:
                doc[inner] = rng.choice(junk)
            meta[key] = json.dumps(doc)
        else:
            meta[key] = rng.choice(["", "x", "0", "99", "{}", "[]"])
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + buffer


# -------------------------------------------------------------------------------------- test

def test_hostile_inputs_are_one_line_errors_or_reach_the_work(env, capfd):
    from trainables.formats import load_student

    rng = random.Random(SEED)
    work, base = env["work"], env["base"]
    counts = {k: [0, 0] for k in SHARES}  # category -> [cases, refused]
    refused_argv: list[list[str]] = []
    start = time.monotonic()

    def run_category(name: str, make) -> None:
        stop = time.monotonic() + SHARES[name] * BUDGET_S
        while time.monotonic() < stop:
            argv = make()
            code, out, err = _main(argv, capfd, work)
            refused = _check(argv, code, out, err, work)
            counts[name][0] += 1
            counts[name][1] += refused
            if refused and len(refused_argv) < 40 and name in ("search", "commands"):
                refused_argv.append(argv)

    space = base / "fuzz-space.yaml"
    replay = base / "fuzz-replay.yaml"
    run_category("search", lambda: search_argv(rng, env))

    def space_argv() -> list[str]:
        space_file(rng, env, space)
        return ["search", "--task", "sst2", "--data-dir", str(env["glue"]), "--teacher", str(env["teacher"]),
                "--num-samples", "2", "--experiment", "fuzz", "--space", str(space)]

    run_category("space", space_argv)
    run_category("commands", lambda: command_argv(rng, env))
    run_category("replay", lambda: replay_file(rng, env, replay))

    student = base / "fuzz.safetensors"
    stop = time.monotonic() + SHARES["files"] * BUDGET_S
    while time.monotonic() < stop:
        student.write_bytes(student_bytes(rng, env))
        try:
            with _deadline(CASE_TIMEOUT_S, "student file"):
                load_student(student)
        except ConfigError as e:
            assert "\n" not in str(e) and str(student) in str(e), str(e)
            counts["files"][1] += 1
        except Exception as e:
            kept = base / f"failing-{counts['files'][0]}.safetensors"
            shutil.copy(student, kept)
            raise AssertionError(f"{type(e).__name__} escaped loading {kept}: {e}") from e
        counts["files"][0] += 1

    # real processes: exit code and stderr of failing command lines
    proc_rng = random.Random(SEED + 1)
    stop = time.monotonic() + SHARES["processes"] * BUDGET_S
    for argv in proc_rng.sample(refused_argv, min(len(refused_argv), 8)):
        if time.monotonic() > stop and counts["processes"][0] >= 2:
            break
        proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), *argv], cwd=work, capture_output=True,
                              text=True, timeout=120)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr and not list(work.iterdir()), argv
        counts["processes"][0] += 1
        counts["processes"][1] += 1

    elapsed = time.monotonic() - start
    print(f"fuzz: {json.dumps(counts)} in {elapsed:.1f} s")
    total = sum(c for c, _ in counts.values())
    assert total >= 150, counts  # several hundred on a 2-core CPU; at least this many however slow the machine
    for name, (cases, refused) in counts.items():
        assert cases >= 2 and refused >= 1, (name, counts)
    assert elapsed < BUDGET_S + 45, elapsed
