"""analyze(): pareto_rank tags, files, parent-run artifacts and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import NOT_RANDOM_NOTE, analyze, hypervolume, load_trials, pareto_ranks
from trainables.errors import ConfigError

EMP_FILES = {"emp_dodge_trials.png", "emp_dodge_time.png", "emp_tang_trials.png", "emp_tang_time.png"}


def _tags(search, key="pareto_rank"):
    get = search.store.client.get_run
    return {tid: get(rid).data.tags.get(key) for tid, rid in search.runs.items()}


def _png_text(path):
    img = Image.open(path)
    img.load()
    return img.text


def _first_table(text):
    """Cell texts of the first HTML table in ``text``, row by row (header row first)."""
    table = text[: text.index("</table>")]
    return [[html.unescape(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]


def test_analyze_two_objectives_from_parent_run(search, tmp_path):
    out = tmp_path / "rep"
    report = analyze(search.store.uri, "fw", out)
    assert report == out / "report.html"

    # ranks written back to every finished trial of the latest search, nowhere else
    assert _tags(search) == {tid: str(r) for tid, r in search.ranks_2d.items()}
    client = search.store.client
    assert "pareto_rank" not in client.get_run(search.failed).data.tags
    assert client.get_run(search.parent).data.tags["pareto_objectives"] == "accuracy:max,size_bytes:min"
    assert all("pareto_rank" not in client.get_run(r).data.tags for r in search.old_runs)
    assert load_trials(search.store.uri, "fw")["tag.pareto_rank"].tolist() == ["0", "0", "1", "0", "1", "2", "3", "1"]

    front = pd.read_csv(out / "pareto_front.csv")
    assert front["run_id"].tolist() == [search.runs[t] for t in ("t0", "t1", "t3")]  # by accuracy, ascending
    assert "param.student" in front.columns
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 8 and trials["pareto_rank"].tolist() == [0, 0, 1, 0, 1, 2, 3, 1]

    written = {p.name for p in out.iterdir()}
    assert written == {"report.html", "trials.csv", "pareto_front.csv", "skyline.png", "hypervolume.png"} | EMP_FILES
    logged = {a.path for a in client.list_artifacts(search.parent, "analysis")}
    assert logged == {f"analysis/{name}" for name in written}

    # tpe search: the EMP plots and the report carry the i.i.d. warning
    for name in EMP_FILES:
        assert _png_text(out / name)["Description"] == NOT_RANDOM_NOTE
    pts = np.array([search.points[t][:2] for t in sorted(search.points)], dtype=float)
    hv = hypervolume(pts, ["max", "min"])
    assert f"{hv:.4g}" in _png_text(out / "hypervolume.png")["Title"]

    page = report.read_text()
    assert html.escape(NOT_RANDOM_NOTE) in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page
    first = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert first.size[0] > 300
    for tid in ("t0", "t1", "t3"):
        assert search.runs[tid] in page
    assert search.runs["t2"] not in page  # only the front is tabulated
    # groups table: one row per student with its trial count and best accuracy
    groups = _first_table(page[page.index("<h2>Groups"):])
    assert groups[0][:4] == ["group", "trials", "on_front", "best accuracy"]
    assert [row[:4] for row in groups[1:]] == [["bilstm", "4", "1", "90"], ["ffn", "4", "2", "85"]]


def test_analyze_three_objectives_random_search_no_warning(store, new_search, tmp_path):
    search = new_search(store, name="rnd", sampler="random")
    out = tmp_path / "rep3"
    objectives = "accuracy:max,size_bytes:min,latency_ms:min"
    report = analyze(store.uri, "rnd", out, objectives=objectives, group_by=())
    assert (out / "pairwise.png").is_file()
    assert "Description" not in _png_text(out / "emp_tang_trials.png")
    assert html.escape(NOT_RANDOM_NOTE) not in report.read_text()
    pts = np.array([search.points[t][:3] for t in sorted(search.points)], dtype=float)
    expected = pareto_ranks(pts, ["max", "min", "min"])
    assert _tags(search) == {t: str(r) for t, r in zip(sorted(search.points), expected)}
    assert _tags(search)["t2"] == "0"  # fastest: on the 3-objective front, not on the 2-objective one
    assert "all trials" in report.read_text()


def test_analyze_explicit_reference_changes_hypervolume(shared_search, tmp_path):
    report = analyze(shared_search.store.uri, "fw", tmp_path / "r", reference=[0.0, 100000.0], group_by=["embedding"])
    pts = np.array([shared_search.points[t][:2] for t in sorted(shared_search.points)], dtype=float)
    hv = hypervolume(pts, ["max", "min"], [0.0, 100000.0])
    assert f"{hv:.4g}" in _png_text(tmp_path / "r" / "hypervolume.png")["Title"]
    assert "hash" in report.read_text()  # the single embedding group


def test_analyze_bad_input_fails_before_writing(store, new_search, tmp_path):
    search = new_search(store)
    uri, out = store.uri, tmp_path / "bad"
    cases = [
        (dict(objectives="accuracy:up"), "direction must be max or min"),
        (dict(objectives="accuracy:max,energy_j:min"), "objective 'energy_j' was not logged"),
        (dict(group_by=["colour"]), "no column 'colour'"),
        (dict(reference=[1.0]), "one per objective"),
        (dict(search_id="zzz"), "no search 'zzz'"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ConfigError, match=match):
            analyze(uri, "fw", out, **kwargs)
    assert not out.exists()
    assert set(_tags(search).values()) == {None}

    exp = store.experiment("nothing-finished")
    parent = store.search(exp, "nf")
    store.trial(exp, parent, start=1, status="FAILED", trial_id="x")
    with pytest.raises(ConfigError, match="has no finished trial"):
        analyze(uri, "nothing-finished", out)
