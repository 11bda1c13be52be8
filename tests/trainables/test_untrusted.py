"""trainables/untrusted.py: YAML without aliases or repeated keys and with caps, masked credentials, safe names."""

from __future__ import annotations

import time

import pytest

from trainables.errors import ConfigError
from trainables.untrusted import (
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    check_output_folder,
    load_yaml_file,
    load_yaml_text,
    mask_credentials,
    safe_name,
)

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_an_alias_bomb_is_refused_before_it_expands():
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"at line 2: found the alias \*a; YAML aliases are not allowed"):
        load_yaml_text(BOMB, "bomb.yaml")
    assert time.perf_counter() - start < 1.0
    import yaml

    assert len(yaml.safe_load(BOMB)["i"]) == 9  # PyYAML itself accepts it (9^9 strings once printed)


@pytest.mark.parametrize("text, fragment", [
    ("a: 1\na: 2\n", "the key 'a' is given twice"),
    ("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), f"nested deeper than {MAX_YAML_DEPTH} levels"),
    ("x: " + "9" * 5000, "ValueError"),
    ("x: !!python/object/apply:os.system [ls]", "could not determine a constructor"),
    ("a: [1, 2", "invalid YAML"),
])
def test_malformed_yaml_is_one_line(text, fragment):
    with pytest.raises(ConfigError) as err:
        load_yaml_text(text, "w.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("w.yaml")


def test_plain_yaml_and_merge_keys_still_load():
    assert load_yaml_text("params: {lr: 1.0e-3, student: ffn}\nlist: [1, 2]", "w") == {
        "params": {"lr": 0.001, "student": "ffn"}, "list": [1, 2]}
    assert load_yaml_text("<<: {a: 1}\na: 2\n", "w") == {"a": 2}  # an explicit key overrides a merged one


def test_files_are_capped_and_must_be_utf8(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_YAML_BYTES)
    with pytest.raises(ConfigError, match="larger than 256 KiB"):
        load_yaml_file(big, "search space file")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"description: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 16\)"):
        load_yaml_file(latin)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text, masked", [
    ("http://bob:hunter2@host:5000", "http://bob:***@host:5000"),
    ("postgresql+psycopg2://fw:p@ss/w0rd@db:5432/mlflow", "postgresql+psycopg2://fw:***@db:5432/mlflow"),
    ("error at mysql://u:x@h/db (timeout)", "error at mysql://u:***@h/db (timeout)"),
    ("postgresql://h/db?user=a&password=s3cret&sslmode=require", "postgresql://h/db?user=a&password=***&sslmode=require"),
    ("http://:tok@h", "http://:***@h"),
    ("http://user@host:5000 and sqlite:////tmp/mlflow.db", "http://user@host:5000 and sqlite:////tmp/mlflow.db"),
])
def test_credentials_are_masked(text, masked):
    assert mask_credentials(text) == masked


@pytest.mark.parametrize("name, slug", [("../../x", "x"), ("sst2 demo/1", "sst2_demo_1"), ("..", "experiment"),
                                        ("", "experiment"), ("a" * 300, "a" * 100), (".hidden", "hidden"),
                                        ("fw-1.2_b", "fw-1.2_b")])
def test_safe_name_is_one_harmless_component(name, slug):
    assert safe_name(name) == slug
    assert "/" not in safe_name(name) and not safe_name(name).startswith(".")


def test_output_folders_are_checked_before_writing(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_output_folder(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    for bad, fragment in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "sub", "not a writable folder"),
                          ("", "is empty")):
        with pytest.raises(ConfigError, match=fragment):
            check_output_folder(bad, "--out")
