"""Benchmark: our SST-2 Pareto front next to the Featherweight thesis's Table 7.5.

Runs one search through the service (:func:`search.tuner.run_search`: Ray Tune, Optuna, MLflow,
the multi-objective scheduler), by default ``spaces/frontier.yaml``: the students of the thesis's
small skyline distilled on the SST-2 training sentences plus a teacher-labelled transfer set of
about 570,000 augmented sentences (made and labelled in the driver, within the measured wall
time), distill-only, quantized, or pruned and quantized; up to 32 trials, 2 at a time, MO-ASHA
(grace period 1, reduction factor 3), selected on the validation split, within a search budget
of 6,000 s (``--time-budget-s``: its clock starts once the transfer set is ready; no trial starts
after it, and running trials end their epoch at it), so that the whole run fits in 2.5 hours on
2 cores. It prints the front
(dev accuracy, which no decision saw, against ``size_bytes``) and, for every SST-2 row of Table 7.5
(``bench/reference/featherweight_table7_5.csv``), whether one of our trials dominates it
(accuracy at least as high and size at most as large, one of them strictly), with each side's
accuracy relative to its own teacher (ours: the MiniLM teacher's dev accuracy, measured here;
the thesis's: RoBERTa-large, 96.56%). The goal is the thesis's points at or below 0.25 MB.

Like with like (``shared/reference/README.md``): the table's size is the saved PyTorch model for
uncompressed rows and the gzip of the saved model for pruned/quantized rows. So:

- an **uncompressed** published row is compared with our **distill-only** trials by ``size_bytes``
  (the saved student file);
- a **pruned and/or quantized** row is compared with **all** our trials by ``gzip_bytes`` (the gzip
  of the saved file, compressed pipelines or not).

Units: **1 MB = 10^6 bytes** (assumed: the table's teacher, RoBERTa-large at 355M fp32 parameters,
is listed as 1,426 MB; its ratios are that size over each row's). Caveat: the thesis trained on
about 1.05M augmented sentences with a RoBERTa-large teacher (96.56%); we distil the MiniLM-L6
teacher (89.79%), so the comparison shows where the measured front stands, not a replication.

``--figure PATH`` draws both fronts on one log-size axis (matplotlib, PNG).

Usage:
    python -m bench.frontier_sst2 --quick       # 8 trials, 5,000 training rows, augment_n 1, 1 epoch
    python -m bench.frontier_sst2 --figure docs/img/frontier_sst2.png    # the full search (sized for 2.5 h on 2 cores)
    python -m bench.frontier_sst2 --space spaces/compress.yaml --scheduler fifo --num-samples 24
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
THESIS_TEACHER_ACC = 96.56  # RoBERTa-large, Table 7.5
GOAL_MB = 0.25  # the skyline points the goal is about: at or below this size


def published_sst2(path: Path) -> pd.DataFrame:
    """SST-2 rows of Table 7.5: model, accuracy %, size in bytes, and which size it is."""
    t = pd.read_csv(path)
    compressed = (t["pruned"] == 1) | (t["quantized"] == 1)
    return pd.DataFrame({"model": t["model"], "acc %": t["sst2_acc"], "MB": t["size_mb_single"],
                         "size_bytes": t["size_mb_single"] * MB, "measure": np.where(compressed, "gzip", "file")})


BASELINES = ("RoBERTa-Large", "TinyBERT6", "GLUE+GloVe", "GLUE+ELMo")


def skyline(published: pd.DataFrame, max_mb: float | None = None) -> pd.DataFrame:
    """The thesis's students (baselines left out) on the Pareto front of (accuracy max, size min),
    each row by its own size measure, optionally only those at or below ``max_mb`` MB. At 0.25 MB:
    FFN_Hash25*+p+q, FFN_Hash25+q, RNN_Char100+p+q, RNN_Char100+q and RNN_Char100."""
    from analysis.pareto import pareto_front

    students = published[~published["model"].isin(BASELINES)]
    if max_mb is not None:
        students = students[students["MB"] <= max_mb]
    return pareto_front(students, {"size_bytes": "min", "acc %": "max"})


def dominating(acc: float, size: float, ours: pd.DataFrame, col: str) -> pd.DataFrame:
    """Our trials that dominate (acc, size) in (accuracy max, ``col`` min)."""
    a, s = ours["accuracy"], ours[col]
    return ours[(a >= acc) & (s <= size) & ((a > acc) | (s < size))]


def compare(published: pd.DataFrame, trials: pd.DataFrame, teacher_acc: float) -> pd.DataFrame:
    """For each published row: dominated or not, by which of our trials, and our best accuracy at
    no more than its size (same measure); accuracies also as percent of each side's teacher
    (``teacher_acc``: ours, percent; the thesis's :data:`THESIS_TEACHER_ACC`)."""
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
            "gap pp": "" if best is None else round(float(best["accuracy"] - row["acc %"]), 2),
            "% of teacher (thesis)": round(100.0 * row["acc %"] / THESIS_TEACHER_ACC, 1),
            "% of teacher (ours)": "" if best is None else round(100.0 * float(best["accuracy"]) / teacher_acc, 1),
        })
    return pd.DataFrame(out)


def _teacher_accuracy(args) -> float:
    """Our teacher's SST-2 dev accuracy, percent, from its logits (the service's loader)."""
    from trainables.data.glue import load_split
    from trainables.data.teacher import teacher_logits

    dev = load_split("sst2", "dev", args.data_dir)
    return 100.0 * float((teacher_logits(args.teacher, dev, args.cache_dir, progress=False).argmax(1)
                          == dev.labels).mean())


def draw_fronts(ours: pd.DataFrame, published: pd.DataFrame, path: Path, teacher_acc: float,
                trials: pd.DataFrame | None = None) -> None:
    """Both fronts on one log-size axis: our Pareto trials (dev accuracy, ``size_bytes``), with
    ``trials`` also our front by ``gzip_bytes`` (the measure of the thesis's pruned/quantized
    rows; chosen on ``val_accuracy`` where it exists, as the search chose), and the thesis's
    Table 7.5 SST-2 rows (their own size measure), with each teacher's accuracy. Writes a PNG
    to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    students = published[~published["model"].isin(BASELINES)]
    sky = skyline(published)
    ax.scatter(students["size_bytes"] / MB, students["acc %"], s=12, color="tab:gray", alpha=0.5,
               label="thesis, Table 7.5 (RoBERTa-large teacher)")
    ax.step(sky["size_bytes"] / MB, sky["acc %"], where="post", color="tab:gray")
    mine = ours.sort_values("size_bytes")
    ax.scatter(mine["size_bytes"] / MB, mine["accuracy"], s=18, color="tab:blue", label="featherweight front (MiniLM teacher)")
    ax.step(mine["size_bytes"] / MB, mine["accuracy"], where="post", color="tab:blue")
    if trials is not None and len(trials):
        from analysis.pareto import pareto_front

        chosen_on = "val_accuracy" if "val_accuracy" in trials else "accuracy"  # as the search selected
        gz = pareto_front(trials, {"gzip_bytes": "min", chosen_on: "max"}).sort_values("gzip_bytes")
        ax.scatter(gz["gzip_bytes"] / MB, gz["accuracy"], s=18, marker="x", color="tab:cyan",
                   label="featherweight front by gzip bytes")
        ax.step(gz["gzip_bytes"] / MB, gz["accuracy"], where="post", color="tab:cyan", ls="--")
    ax.axhline(THESIS_TEACHER_ACC, color="tab:gray", ls=":", lw=1)
    ax.axhline(teacher_acc, color="tab:blue", ls=":", lw=1)
    ax.axvline(GOAL_MB, color="tab:red", ls="--", lw=1, label=f"{GOAL_MB} MB")
    ax.set_xscale("log")
    ax.set_xlabel("size, MB (10^6 bytes; thesis: file, or gzip for pruned/quantized rows)")
    ax.set_ylabel("SST-2 dev accuracy, %")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    from analysis.runs import load_trials
    from search.tuner import PROJECT_ROOT, SearchOptions, plan_search, run_search

    ap = parser(__doc__)
    ap.add_argument("--space", default=str(PROJECT_ROOT / "spaces" / "frontier.yaml"), help="default %(default)s")
    ap.add_argument("--num-samples", type=int, default=None, help="trials (default 32; quick 8)")
    ap.add_argument("--train-rows", type=int, default=None, help="max_train_examples; 0 = all (default 0; quick 5000)")
    ap.add_argument("--scheduler", default="moasha", choices=("fifo", "moasha"), help="default %(default)s")
    ap.add_argument("--figure", default=None, help="write both fronts on one log-size axis to this PNG")
    ap.add_argument("--time-budget-s", type=float, default=None,
                    help="end the search cleanly after this many seconds, counted once the transfer set is ready; "
                         "every started trial finishes as a run (default 6000; quick: none)")
    ap.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the space's; quick 1)")
    ap.add_argument("--max-concurrent", type=int, default=2, help="concurrent trials (default %(default)s)")
    ap.add_argument("--sampler", default="tpe", help="Optuna sampler (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", default=str(TABLE), help="published Table 7.5 (default %(default)s)")
    args = ap.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="bench-frontier-ray-")
    n = args.num_samples or (8 if args.quick else 32)
    budget = args.time_budget_s if args.time_budget_s is not None else (None if args.quick else 6000.0)
    rows = args.train_rows if args.train_rows is not None else (5000 if args.quick else 0)
    overrides = {"max_train_examples": rows}
    epochs = args.epochs or (1 if args.quick else None)
    if epochs:
        overrides["epochs"] = epochs
    from spaces.space import load_space

    space = load_space(args.space)
    if args.quick and int(space.fixed.get("augment_n", 0)) > 1:
        overrides["augment_n"] = 1  # the quick run's transfer set: one synthetic sentence per row
    opts = SearchOptions(task="sst2", space=args.space, data_dir=args.data_dir, teacher=args.teacher, num_samples=n,
                         max_concurrent=args.max_concurrent, experiment=EXPERIMENT, tracking_uri=args.tracking_uri,
                         seed=args.seed, sampler=args.sampler, cache_dir=args.cache_dir, verbose=0,
                         storage_path=storage, overrides=overrides, scheduler=args.scheduler,
                         time_budget_s=budget)
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
    teacher_acc = _teacher_accuracy(args)
    table = compare(published, trials, teacher_acc)
    print_table(table, "Featherweight thesis Table 7.5, SST-2 rows: dominated by one of our trials? "
                       "(uncompressed rows vs our distill-only size_bytes; pruned/quantized rows vs our gzip_bytes)")

    small = table[table["model"].isin(skyline(published, GOAL_MB)["model"])]
    n_small = int((small["dominated"] == "yes").sum())
    print(f"goal: the {len(small)} thesis skyline points at or below {GOAL_MB} MB: {n_small} dominated"
          + ("" if n_small == len(small) else " (not dominated: " + "; ".join(
              f"{r['model']} {r['acc %']:.2f}% at {r['MB']} MB, ours {r['our best acc % at <= MB'] or 'none that small'}"
              for r in small[small["dominated"] == "no"].to_dict("records")) + ")"))
    labelling = float(trials["augment_time_s"].max()) if "augment_time_s" in trials else float("nan")
    print(f"wall time {wall:.0f} s, of which the transfer set cost {labelling:.0f} s to make and label "
          f"(augment_time_s; 0 when it came from the cache: see augment_cache)")
    if args.figure:
        draw_fronts(ours, published, Path(args.figure), teacher_acc, trials)
        print(f"figure: {args.figure}")
    file_rows, gzip_rows = table[published["measure"] == "file"], table[published["measure"] == "gzip"]
    n_file, n_gzip = int((file_rows["dominated"] == "yes").sum()), int((gzip_rows["dominated"] == "yes").sum())
    best = trials.loc[trials["accuracy"].idxmax()]
    metrics = {"wall_s": wall, "trials_finished": len(trials), "front_size": len(ours),
               "published_dominated": n_file + n_gzip, "published_uncompressed_dominated": n_file,
               "published_compressed_dominated": n_gzip, "best_accuracy": float(best["accuracy"]),
               "goal_points": len(small), "goal_points_dominated": n_small, "teacher_accuracy": teacher_acc,
               "transfer_set_seconds": labelling,
               "best_accuracy_size_bytes": float(best["size_bytes"]), "smallest_size_bytes": float(trials["size_bytes"].min()),
               "smallest_gzip_bytes": float(trials["gzip_bytes"].min()),
               "load_1m_start": load_start[0], "load_1m_end": load_end[0]}
    log_run("frontier-sst2", args.tracking_uri,
            {"space": args.space, "num_samples": n, "train_rows": rows, "epochs": epochs or "space", "sampler": args.sampler,
             "seed": args.seed, "time_budget_s": budget or "",
             "max_concurrent": args.max_concurrent, "quick": args.quick, "data_dir": args.data_dir,
             "teacher": args.teacher, "table": args.table, "mb": "1e6 bytes"},
            metrics, {"table7_5_comparison.csv": table, "our_front.csv": shown},
            tags={"search_parent_run_id": parent, "search_id": str(trials.attrs.get("search_id", ""))})
    print(f"SUMMARY: frontier_sst2: {len(trials)} trials ({rows or 'all'} rows, epochs {epochs or 'of the space'}), "
          f"front of {len(ours)}; dominates {n_small} of the {len(small)} skyline points <= {GOAL_MB} MB and "
          f"{n_file + n_gzip} of {len(table)} published SST-2 points "
          f"({n_file}/{len(file_rows)} uncompressed by file size, {n_gzip}/{len(gzip_rows)} pruned/quantized by gzip); "
          f"our best {best['accuracy']:.2f}% at {best['size_bytes'] / MB:.3f} MB, smallest "
          f"{trials['size_bytes'].min() / MB:.3f} MB ({trials['gzip_bytes'].min() / MB:.3f} MB gzip); wall {wall:.0f} s "
          f"(transfer set {labelling:.0f} s), "
          f"load avg {load_start[0]:.1f}-{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    return table


if __name__ == "__main__":
    main_guard(main)
