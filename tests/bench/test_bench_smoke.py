"""Smoke tests of the benchmark scripts: like-with-like comparison with Table 7.5, and a tiny
real search-efficiency run end to end (real SST-2 trials through the service, FIFO and MO-ASHA,
MLflow run with its CSVs)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench import frontier_sst2, search_efficiency
from bench._common import SHARED

ROOT = Path(__file__).resolve().parents[2]


def test_table_7_5_copy_and_like_with_like_dominance():
    assert (ROOT / "bench/reference/featherweight_table7_5.csv").read_bytes() == \
        (SHARED / "reference/featherweight_table7_5.csv").read_bytes()
    published = frontier_sst2.published_sst2(frontier_sst2.TABLE)
    assert len(published) == 44 and published.loc[published["model"] == "RNN_Char100+q", "measure"].item() == "gzip"
    rows = published[published["model"].isin(["RNN_Char100", "RNN_Char100+q"])].reset_index(drop=True)
    # a quantized trial: tiny gzip, but its file must not be compared with the uncompressed row
    trials = pd.DataFrame([{"name": "t1", "param.stages": "distill,quantize", "accuracy": 90.0,
                            "size_bytes": 40_000, "gzip_bytes": 30_000}])
    out = frontier_sst2.compare(rows, trials, teacher_acc=90.0)
    assert out["dominated"].tolist() == ["no", "yes"]  # RNN_Char100: 0.236 MB file; +q: 0.053 MB gzip
    assert out["% of teacher (ours)"].tolist() == ["", 100.0] and out["% of teacher (thesis)"].tolist() == [87.6, 86.9]
    trials.loc[0, "param.stages"] = "distill"
    assert frontier_sst2.compare(rows, trials, teacher_acc=90.0)["dominated"].tolist() == ["yes", "yes"]
    # the goal's points: the thesis's skyline at or below 0.25 MB
    assert frontier_sst2.skyline(published, 0.25)["model"].tolist() == [
        "FFN_Hash25*+p+q", "FFN_Hash25+q", "RNN_Char100+p+q", "RNN_Char100+q", "RNN_Char100"]
    hv, cpu = pd.Series([1.0, 2.0, 3.0]).to_numpy(), pd.Series([5.0, 7.0, 12.0]).to_numpy()
    assert search_efficiency.cpu_to_reach(hv, cpu, 2.0) == 7.0
    assert math.isinf(search_efficiency.cpu_to_reach(hv[:2], cpu[:2], 2.5))


def test_figure_draws_both_fronts(tmp_path, monkeypatch):
    import matplotlib.axes

    published = frontier_sst2.published_sst2(frontier_sst2.TABLE)
    trials = pd.DataFrame({"accuracy": [80.0, 78.0, 70.0], "val_accuracy": [85.0, 70.0, 80.0],
                           "size_bytes": [300_000, 90_000, 40_000], "gzip_bytes": [250_000, 30_000, 35_000]})
    drawn = []
    step = matplotlib.axes.Axes.step
    monkeypatch.setattr(matplotlib.axes.Axes, "step", lambda ax, x, y, *a, **k: drawn.append(
        (list(x), list(y))) or step(ax, x, y, *a, **k))
    out = tmp_path / "front.png"
    frontier_sst2.draw_fronts(trials, published, out, teacher_acc=90.0, trials=trials)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the thesis's skyline, ours by file size, ours by gzip chosen on validation accuracy, as the
    # search chose: (35 kB, val 80) is kept beside (30 kB, val 70), though its dev accuracy is lower
    assert len(drawn) == 3
    assert drawn[1] == ([0.04, 0.09, 0.3], [70.0, 78.0, 80.0])
    assert drawn[2] == ([0.03, 0.035, 0.25], [78.0, 70.0, 80.0])


def test_search_efficiency_tiny_real_run(tmp_path, glue_dir, sst2_teacher, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["--methods", "random+fifo,random+moasha", "--seeds", "0", "--trials", "3",
            "--no-scale", "--set", "student=ffn", "--set", "epochs=2",
            "--data-dir", str(glue_dir), "--teacher", str(sst2_teacher),
            "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri, "--results-dir", str(tmp_path / "kept")]
    table = search_efficiency.main(argv)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("SUMMARY: search_efficiency")
    assert list(table["method"]) == ["random+fifo", "random+moasha"]
    assert table.loc[0, "ratio to random+fifo"] == 1.0  # the baseline reaches its own final value
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("bench-search-efficiency").experiment_id])
    assert run.data.tags["featherweight.role"] == "bench" and run.data.metrics["target_hv"] > 0
    assert run.data.metrics["hv_logged_agrees"] == 1.0  # the service's running hypervolume = the recomputation
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"search_efficiency.csv", "trials.csv",
                                                                          "searches.csv"}
    searches = client.get_experiment_by_name(search_efficiency.SEARCH_EXPERIMENT)
    trials = [r for r in client.search_runs([searches.experiment_id]) if "trial_id" in r.data.tags]
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.metrics["energy_j"] > 0 and r.data.tags["energy_method"] == "estimate" for r in trials)
    # FIFO runs every trial to its last epoch; MO-ASHA (reduction factor 3) stops trials at its epoch-1 rung
    runs = client.search_runs([searches.experiment_id])
    scheduler = {r.info.run_id: r.data.params["scheduler"] for r in runs if "scheduler" in r.data.params}
    stopped = {scheduler[r.data.tags["mlflow.parentRunId"]]: [] for r in trials}
    for r in trials:
        if r.data.tags.get("early_stopped") == "true":
            stopped[scheduler[r.data.tags["mlflow.parentRunId"]]].append(r.data.tags["stop_reason"])
    assert stopped["fifo"] == [] and stopped["moasha"] and set(stopped["moasha"]) == {"scheduler"}
    # a second run with the same results folder reuses the finished searches: same table, no new trials
    again = search_efficiency.main(argv)
    assert "reusing" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again.drop(columns=["search wall s (median)"]),
                                  table.drop(columns=["search wall s (median)"]))
    assert len([r for r in client.search_runs([searches.experiment_id]) if "trial_id" in r.data.tags]) == 6
