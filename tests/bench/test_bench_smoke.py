"""Smoke tests of the benchmark scripts: like-with-like comparison with Table 7.5, and a tiny
real search-efficiency run end to end (real SST-2 trials, MLflow run with its CSV)."""

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
    out = frontier_sst2.compare(rows, trials)
    assert out["dominated"].tolist() == ["no", "yes"]  # RNN_Char100: 0.236 MB file; +q: 0.053 MB gzip
    trials.loc[0, "param.stages"] = "distill"
    assert frontier_sst2.compare(rows, trials)["dominated"].tolist() == ["yes", "yes"]
    assert search_efficiency.trials_to_reach(pd.Series([1.0, 2.0, 3.0]).to_numpy(), 2.0) == 2
    assert math.isinf(search_efficiency.trials_to_reach(pd.Series([1.0, 1.5]).to_numpy(), 2.0))


def test_search_efficiency_tiny_real_run(tmp_path, glue_dir, sst2_teacher, capsys):
    from mlflow.tracking import MlflowClient

    table = search_efficiency.main(["--trials", "3", "--seeds", "0", "--samplers", "random,tpe",
                                    "--data-dir", str(glue_dir), "--teacher", str(sst2_teacher),
                                    "--cache-dir", str(tmp_path / "cache"),
                                    "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("SUMMARY: search_efficiency")
    assert list(table["sampler"]) == ["random", "tpe"]
    assert table.loc[0, "trials to target (median)"] != "not reached"  # random reaches its own final value
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("bench-search-efficiency")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["featherweight.role"] == "bench" and run.data.metrics["target_hv"] > 0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"search_efficiency.csv", "trials.csv"}
