"""Benchmark: our SST-2 Pareto front next to the Featherweight thesis's Table 7.5.

Runs a fixed-budget search through the service (:func:`search.tuner.run_search`: Ray Tune,
Optuna, MLflow; default space ``spaces/compress.yaml``, whose trials mix distill-only, pruned,
quantized and pruned+quantized students), prints its Pareto front (accuracy, ``size_bytes``) and,
for every SST-2 row of Table 7.5 (``bench/reference/featherweight_table7_5.csv``), whether one of
our trials dominates it (accuracy at least as high and size at most as large, one of them strictly).

Like with like (``shared/reference/README.md``): the table's size is the saved PyTorch model for
uncompressed rows and the gzip of the saved model for pruned/quantized rows. So:

- an **uncompressed** published row is compared with our **distill-only** trials by ``size_bytes``
  (the saved student file);
- a **pruned and/or quantized** row is compared with **all** our trials by ``gzip_bytes`` (the gzip
  of the saved file, compressed pipelines or not).

Units: **1 MB = 10^6 bytes** (assumed: the table's teacher, RoBERTa-large at 355M fp32 parameters,
is listed as 1,426 MB; its ratios are that size over each row's). Caveat: the thesis trained on
about 1M augmented sentences with a RoBERTa-large teacher; we distil the MiniLM-L6 teacher on
the SST-2 training rows only (``--quick``: a 5,000-row subset for one epoch), so the comparison
shows where the measured front stands, not a replication.

Usage:
    python -m bench.frontier_sst2 --quick                  # 10 trials, 5,000 training rows, 1 epoch
    python -m bench.frontier_sst2                          # 24 trials, 20,000 rows, the space's epochs
    python -m bench.frontier_sst2 --num-samples 40 --train-rows 0 --sampler nsga2
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._common import (
    ROOT,
    check_tracking,
    describe_load,
    log_run,
    main_guard,
    parser,
    print_table,
)

TABLE = ROOT / "bench" / "reference" / "featherweight_table7_5.csv"
EXPERIMENT = "bench-frontier-sst2"
MB = 1e6  # bytes


def published_sst2(path: Path) -> pd.DataFrame:
    """SST-2 rows of Table 7.5: model, accuracy %, size in bytes, and which size it is."""
    t = pd.read_csv(path)
    compressed = (t["pruned"] == 1) | (t["quantized"] == 1)
    return pd.DataFrame({"model": t["model"], "acc %": t["sst2_acc"], "MB": t["size_mb_single"],
                         "size_bytes": t["size_mb_single"] * MB, "measure": np.where(compressed, "gzip", "file")})


def dominating(acc: float, size: float, ours: pd.DataFrame, col: str) -> pd.DataFrame:
    """Our trials that dominate (acc, size) in (accuracy max, ``col`` min)."""
    a, s = ours["accuracy"], ours[col]
    return ours[(a >= acc) & (s <= size) & ((a > acc) | (s < size))]


def compare(published: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """For each published row: dominated or not, by which of our trials, and our best accuracy at
    no more than its size (same measure)."""
    distill_only = trials[trials["param.stages"] == "distill"]
    out = []
    for row in published.to_dict("records"):
        ours, col = (trials, "gzip_bytes") if row["measure"] == "gzip" else (distill_only, "size_bytes")
        dom = dominating(row["acc %"], row["size_bytes"], ours, col)
        within = ours[ours[col] <= row["size_bytes"]]
        best = within.loc[within["accuracy"].idxmax()] if len(within) else None
        by = dom.sort_values(col).iloc[0] if len(dom) else None
        out.append({
            "model": row["model"], "acc %": row["acc %"], "MB": row["MB"], "compare with": f"our {col}",
            "dominated": "yes" if by is not None else "no",
            "by (trial: acc %, MB)": "" if by is None else f"{by['name']}: {by['accuracy']:.2f}, {by[col] / MB:.3f}",
            "our best acc % at <= MB": "" if best is None else f"{best['accuracy']:.2f} ({best[col] / MB:.3f} MB)",
        })
    return pd.DataFrame(out)


def main(argv=None):
    from analysis.runs import load_trials
    from search.tuner import PROJECT_ROOT, SearchOptions, plan_search, run_search

    ap = parser(__doc__)
    ap.add_argument("--space", default=str(PROJECT_ROOT / "spaces" / "compress.yaml"), help="default %(default)s")
    ap.add_argument("--num-samples", type=int, default=None, help="trials (default 24; quick 10)")
    ap.add_argument("--train-rows", type=int, default=None, help="max_train_examples; 0 = all (default 20000; quick 5000)")
    ap.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the space's; quick 1)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="concurrent trials (default %(default)s)")
    ap.add_argument("--sampler", default="tpe", help="Optuna sampler (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default=str(TABLE), help="published Table 7.5 (default %(default)s)")
    args = ap.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="bench-frontier-ray-")
    n = args.num_samples or (10 if args.quick else 24)
    rows = args.train_rows if args.train_rows is not None else (5000 if args.quick else 20000)
    overrides = {"max_train_examples": rows}
    epochs = args.epochs or (1 if args.quick else None)
    if epochs:
        overrides["epochs"] = epochs
    opts = SearchOptions(task="sst2", space=args.space, data_dir=args.data_dir, teacher=args.teacher, num_samples=n,
                         max_concurrent=args.max_concurrent, experiment=EXPERIMENT, tracking_uri=args.tracking_uri,
                         seed=args.seed, sampler=args.sampler, cache_dir=args.cache_dir, verbose=0,
                         storage_path=storage, overrides=overrides)
    plan_search(opts)  # every check before any work
    published = published_sst2(Path(args.table))
    load_start = describe_load("start")
    t0 = time.perf_counter()
    try:
        front = run_search(opts)
    finally:
        shutil.rmtree(storage, ignore_errors=True)  # Tune's trial folders (the models are in MLflow)
    wall = time.perf_counter() - t0
    load_end = describe_load("end")
    if front.empty:
        print("SUMMARY: frontier_sst2: no trial finished; nothing to compare")
        return None

    from mlflow.tracking import MlflowClient

    uri, _ = check_tracking(args.tracking_uri)
    parent = MlflowClient(uri).get_run(front["run_id"].iloc[0]).data.tags["mlflow.parentRunId"]
    trials = load_trials(uri, EXPERIMENT, parent)
    trials["name"] = (trials["tag.trial_id"] + " " + trials["param.student"] + "/" + trials["param.embedding"]
                      + trials["param.embedding_dim"].astype(str) + " " + trials["param.stages"].str.replace(
                          "distill", "d").str.replace("prune", "p").str.replace("quantize", "q").str.replace(",", "+"))
    ours = trials[trials["run_id"].isin(front["run_id"])].sort_values("accuracy", ascending=False)
    shown = pd.DataFrame({"trial": ours["name"], "acc %": ours["accuracy"].round(2),
                          "size MB": (ours["size_bytes"] / MB).round(4), "gzip MB": (ours["gzip_bytes"] / MB).round(4)})
    print_table(shown, f"our Pareto front (accuracy max, size_bytes min): {len(ours)} of {len(trials)} finished "
                       f"trials ({rows or 'all'} training rows; 1 MB = 10^6 bytes)")
    table = compare(published, trials)
    print_table(table, "Featherweight thesis Table 7.5, SST-2 rows: dominated by one of our trials? "
                       "(uncompressed rows vs our distill-only size_bytes; pruned/quantized rows vs our gzip_bytes)")

    file_rows, gzip_rows = table[published["measure"] == "file"], table[published["measure"] == "gzip"]
    n_file, n_gzip = int((file_rows["dominated"] == "yes").sum()), int((gzip_rows["dominated"] == "yes").sum())
    best = trials.loc[trials["accuracy"].idxmax()]
    metrics = {"wall_s": wall, "trials_finished": len(trials), "front_size": len(ours),
               "published_dominated": n_file + n_gzip, "published_uncompressed_dominated": n_file,
               "published_compressed_dominated": n_gzip, "best_accuracy": float(best["accuracy"]),
               "best_accuracy_size_bytes": float(best["size_bytes"]), "smallest_size_bytes": float(trials["size_bytes"].min()),
               "smallest_gzip_bytes": float(trials["gzip_bytes"].min()),
               "load_1m_start": load_start[0], "load_1m_end": load_end[0]}
    log_run("frontier-sst2", args.tracking_uri,
            {"space": args.space, "num_samples": n, "train_rows": rows, "epochs": epochs or "space", "sampler": args.sampler,
             "seed": args.seed, "max_concurrent": args.max_concurrent, "quick": args.quick, "data_dir": args.data_dir,
             "teacher": args.teacher, "table": args.table, "mb": "1e6 bytes"},
            metrics, {"table7_5_comparison.csv": table, "our_front.csv": shown},
            tags={"search_parent_run_id": parent, "search_id": str(trials.attrs.get("search_id", ""))})
    print(f"SUMMARY: frontier_sst2: {len(trials)} trials ({rows or 'all'} rows, epochs {epochs or 'of the space'}), "
          f"front of {len(ours)}; dominates {n_file + n_gzip} of {len(table)} published SST-2 points "
          f"({n_file}/{len(file_rows)} uncompressed by file size, {n_gzip}/{len(gzip_rows)} pruned/quantized by gzip); "
          f"our best {best['accuracy']:.2f}% at {best['size_bytes'] / MB:.3f} MB, smallest "
          f"{trials['size_bytes'].min() / MB:.3f} MB ({trials['gzip_bytes'].min() / MB:.3f} MB gzip); wall {wall:.0f} s, "
          f"load avg {load_start[0]:.1f}-{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    return table


if __name__ == "__main__":
    main_guard(main)
