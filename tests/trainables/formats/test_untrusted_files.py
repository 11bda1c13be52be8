"""Student files from elsewhere: every crafted file is refused with one ConfigError line, before
anything large is allocated (peak memory measured in a fresh process, from Linux's VmHWM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from student_files import CRAFTED, real_files, split, tiny_huge_packed

from trainables.errors import ConfigError
from trainables.formats import load_packed, load_student, read_metadata, size_breakdown
from trainables.formats.layout import MAX_HEADER_BYTES, read_layout

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("students")
    dense, packed = real_files(folder)
    return folder, dense.read_bytes(), packed.read_bytes()


def test_the_real_files_load_and_cover_every_packed_layout(files):
    folder, dense, packed = files
    load_student(folder / "dense.safetensors")
    load_student(folder / "packed.safetensors")
    layouts = {s.get("layout") for s in json.loads(split(packed)[0]["__metadata__"]["packing"]).values()}
    assert layouts == {"dense", "bitmap", "index", None}  # None: the raw (integer) entries


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_each_crafted_file_is_refused_with_one_line(name, files, tmp_path):
    _, dense, packed = files
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(CRAFTED[name](dense, packed))
    loaders = [load_student] + ([load_packed] if name.startswith("packed") else [])
    for load in loaders:
        with pytest.raises(ConfigError) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message and len(message) < 600, message


def test_a_consistent_file_of_kilobytes_asking_for_16_gb_is_refused(tmp_path):
    path = tiny_huge_packed(tmp_path / "huge.safetensors")
    assert path.stat().st_size < 20_000
    with pytest.raises(ConfigError, match="would decode to 16,384,"):
        load_student(path)


def test_layout_messages_name_what_is_wrong(files, tmp_path):
    _, dense, _ = files
    cases = {"overlapping offsets": "overlaps", "negative offset": "outside", "unknown dtype": "unknown dtype 'F7'",
             "header length 2^63": f"above the limit of {MAX_HEADER_BYTES:,}", "truncated buffer": "outside",
             "one byte appended": "cover", "header length past the end": "truncated",
             "transposed shape": "config makes it"}
    for name, fragment in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(CRAFTED[name](dense, dense))
        with pytest.raises(ConfigError, match=fragment):
            load_student(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_metadata(tmp_path / "missing.safetensors")


def test_size_breakdown_reads_the_checked_layout(files, tmp_path):
    folder, _, packed = files
    breakdown = size_breakdown(folder / "packed.safetensors")
    layout = read_layout(folder / "packed.safetensors")
    assert breakdown["total"] == layout.size == len(packed)
    assert breakdown["header"] == 8 + layout.header_bytes


_MEASURE = textwrap.dedent("""
    import json, resource, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from trainables.errors import ConfigError
    from trainables.formats import load_student

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def high_water_mark():  # peak RSS since the last reset (Linux: VmHWM)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

    for path in sys.argv[1].split(","):  # real files loaded first: lazy imports are not counted
        load_student(path)
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak: only what follows is measured
        f.write("5")
    before = rss()
    refused = 0
    for path in sys.argv[2:]:
        if path == "ALLOCATE":  # the control: the measure sees 300 MB allocated
            import numpy as np
            np.ones(300 * 2**20 // 8).sum()
            continue
        try:
            load_student(path)
        except ConfigError:
            refused += 1
    print(json.dumps({{"refused": refused, "peak_above_start": high_water_mark() - before}}))
""")


def _peak(warm: list[Path], paths: list[str]) -> dict:
    code = _MEASURE.format(root=str(ROOT), tests=str(ROOT / "tests"))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}  # not the session's
    proc = subprocess.run([sys.executable, "-c", code, ",".join(map(str, warm)), *paths], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_refusing_crafted_files_stays_under_200_mb(files, tmp_path):
    folder, dense, packed = files
    warm = [folder / "dense.safetensors", folder / "packed.safetensors"]
    paths = []
    for i, (name, craft) in enumerate(sorted(CRAFTED.items())):
        path = tmp_path / f"{i}.safetensors"
        path.write_bytes(craft(dense, packed))
        paths.append(str(path))
    paths.append(str(tiny_huge_packed(tmp_path / "huge.safetensors")))
    # the largest header the reader accepts, not JSON: read in full before it is refused
    big = tmp_path / "big-header.safetensors"
    big.write_bytes((MAX_HEADER_BYTES).to_bytes(8, "little") + b"{" + "\U0001f600".encode() * (MAX_HEADER_BYTES // 4 - 1)
                    + b"x" * 3)
    paths.append(str(big))
    result = _peak(warm, paths)
    assert result["refused"] == len(paths)
    assert result["peak_above_start"] < 200 * 2**20, result
    # the measure is real: 300 MB allocated in the same harness shows
    assert _peak(warm, ["ALLOCATE"])["peak_above_start"] > 250 * 2**20
