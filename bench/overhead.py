"""Benchmark: what the service (Ray Tune + Optuna + MLflow + metering) costs over a plain loop.

The same N trials of one fixed config (``bench/spaces/overhead.yaml``: its only searched key is
a one-value choice) run twice, one after the other on this machine:

1. **plain loop**: load SST-2 and the teacher logits (:func:`search.tuner.build_trial_data`),
   then call :func:`trainables.trial.run_trial` N times with a
   :class:`~trainables.tracking.MemoryTracker` (one torch thread, as a 1-CPU trial).
2. **service**: :func:`search.tuner.run_search` with one trial at a time
   (``--max-concurrent 1``, 1 CPU per trial, so both are sequential), which validates, loads the
   data, opens the MLflow parent run, runs the trials as Ray Tune trials sampled by Optuna, each
   logging to its own MLflow child run with per-epoch reports and checkpoints, and prints the
   Pareto front. Ray is started by this script just before, by the service's own
   :func:`search.cluster.connect`, so its start-up is timed on its own (``run_search`` then finds
   it running). Ray's shutdown is not timed.

Printed: wall time of each and the overhead ratio (service / plain, with and without Ray's
start-up). Where the service's time went, from the trials' MLflow run start and end times (the
trials run one at a time): Ray start-up; before the first trial (validation, data loading,
MLflow parent run, Tuner and trial actor set-up); inside the trial runs (training plus per-trial
logging, reports and checkpoints); between trials (Tune scheduling, Optuna, result handling);
after the last (closing runs, Pareto report). From these: the fixed overhead (Ray start-up plus
set-up and close beyond the loop's own data loading) and the marginal overhead per trial (median
gap between trials plus the mean MLflow run time beyond the loop's trial time). Trials are
deterministic, so the service's trial accuracies must equal the loop's (checked). Short trials
make the ratio large: fixed and per-trial seconds are the numbers that carry over.

Usage:
    python -m bench.overhead --quick        # 10 trials of about a second each
    python -m bench.overhead                # 30 trials
    python -m bench.overhead --trials 10 --set max_train_examples=8000   # longer trials
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
    load_sst2,
    log_run,
    main_guard,
    parser,
    print_table,
)

SPACE = ROOT / "bench" / "spaces" / "overhead.yaml"
EXPERIMENT = "bench-overhead"


def fixed_config(plan) -> dict:
    """The one config every trial of ``plan`` runs (its searched keys must be one-value choices)."""
    from trainables.errors import ConfigError

    searched = plan.space.params
    if any(d.kind != "choice" or len(d.args) != 1 for d in searched.values()):
        raise ConfigError(f"{plan.options.space}: every searched key must be a one-value choice for this benchmark")
    return {**plan.space.fixed, **{k: d.args[0] for k, d in searched.items()}}


def plain_loop(args, config: dict, n: int) -> tuple[float, list[float], list[float]]:
    """Wall time of load + ``n`` plain ``run_trial`` calls; per-trial seconds and accuracies."""
    from trainables.tracking import MemoryTracker
    from trainables.trial import RunSettings, run_trial

    t0 = time.perf_counter()
    data = load_sst2(args.data_dir, args.teacher, args.cache_dir)
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-plain-"))
    seconds, accs = [], []
    for i in range(n):
        t = time.perf_counter()
        final = run_trial(config, data, workdir / f"trial{i}", MemoryTracker(), RunSettings(threads=1))
        seconds.append(time.perf_counter() - t)
        accs.append(final["accuracy"])
    shutil.rmtree(workdir, ignore_errors=True)
    return time.perf_counter() - t0, seconds, accs


def service(opts) -> tuple[float, float, float, pd.DataFrame]:
    """Ray start-up seconds, ``run_search`` seconds and its start (epoch seconds), and the
    search's trial runs (with MLflow start and end times)."""
    import ray

    from analysis.runs import load_trials
    from search.cluster import connect
    from search.tuner import run_search

    t0 = time.perf_counter()
    connect(None)  # the service's own ray.init for a local Ray; run_search then finds it running
    ray_s = time.perf_counter() - t0
    try:
        started, t1 = time.time(), time.perf_counter()
        front = run_search(opts)
        search_s = time.perf_counter() - t1
    finally:
        ray.shutdown()
    if front.empty:
        return ray_s, search_s, started, front
    from mlflow.tracking import MlflowClient

    uri, _ = check_tracking(opts.tracking_uri)
    parent = MlflowClient(uri).get_run(front["run_id"].iloc[0]).data.tags["mlflow.parentRunId"]
    return ray_s, search_s, started, load_trials(uri, opts.experiment, parent)


def timeline(runs: pd.DataFrame, started: float, search_s: float) -> dict[str, float]:
    """Split ``run_search``'s wall time by the trials' MLflow run times (sequential trials):
    before the first trial, inside trial runs, between trials, after the last one."""
    if runs.empty:
        return {"before_first_s": search_s, "in_trials_s": 0.0, "between_trials_s": 0.0, "after_last_s": 0.0,
                "median_gap_s": float("nan")}
    start = runs["start_time"].map(lambda t: t.timestamp()).to_numpy()
    end = runs["end_time"].map(lambda t: t.timestamp()).to_numpy()
    order = np.argsort(start)
    start, end = start[order], end[order]
    gaps = start[1:] - end[:-1]
    return {"before_first_s": start[0] - started, "in_trials_s": float((end - start).sum()),
            "between_trials_s": float(gaps.sum()), "after_last_s": started + search_s - end[-1],
            "median_gap_s": float(np.median(gaps)) if len(gaps) else float("nan")}


def main(argv=None):
    from run_search import parse_overrides
    from search.tuner import SearchOptions, plan_search

    ap = parser(__doc__)
    ap.add_argument("--trials", type=int, default=None, help="N trials (default 30; quick 10)")
    ap.add_argument("--space", default=str(SPACE), help="space with one-value choices only (default %(default)s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="fix a trial-config key in both runs, as run_search.py's --set")
    args = ap.parse_args(argv)
    n = args.trials or (10 if args.quick else 30)
    storage = tempfile.mkdtemp(prefix="bench-overhead-ray-")
    opts = SearchOptions(task="sst2", space=args.space, data_dir=args.data_dir, teacher=args.teacher, num_samples=n,
                         max_concurrent=1, experiment=EXPERIMENT, tracking_uri=args.tracking_uri, seed=0,
                         cpus_per_trial=1.0, cache_dir=args.cache_dir, storage_path=storage, verbose=0,
                         overrides=parse_overrides(args.overrides))
    plan = plan_search(opts)  # validates everything before any work
    config = fixed_config(plan)
    load_start = describe_load("start")
    print(f"config: {config}\n{n} trials, one at a time, 1 CPU thread each", flush=True)

    plain_s, plain_trials, plain_acc = plain_loop(args, config, n)
    print(f"plain loop: {plain_s:.1f} s ({np.mean(plain_trials):.2f} s per trial)", flush=True)
    ray_s, search_s, started, runs = service(opts)
    shutil.rmtree(storage, ignore_errors=True)  # Tune's trial folders (the models are in MLflow)
    service_s = ray_s + search_s
    load_end = describe_load("end")

    finished = runs[runs["status"] == "FINISHED"] if not runs.empty else runs
    parts = timeline(finished, started, search_s)
    same = len(finished) == n and bool(np.allclose(sorted(finished["accuracy"]), sorted(plain_acc)))
    table = pd.DataFrame([
        {"run": "plain loop", "trials": n, "wall_s": plain_s, "ray_start_s": 0.0,
         "before_first_trial_s": plain_s - sum(plain_trials), "in_trials_s": sum(plain_trials),
         "between_trials_s": 0.0, "after_last_trial_s": 0.0, "per_trial_s": plain_s / n, "ratio_vs_plain": 1.0},
        {"run": "service (run_search)", "trials": len(finished), "wall_s": service_s, "ray_start_s": ray_s,
         "before_first_trial_s": parts["before_first_s"], "in_trials_s": parts["in_trials_s"],
         "between_trials_s": parts["between_trials_s"], "after_last_trial_s": parts["after_last_s"],
         "per_trial_s": service_s / n, "ratio_vs_plain": service_s / plain_s},
    ]).round(2)
    ratio, ratio_no_ray = service_s / plain_s, search_s / plain_s
    per_trial = (search_s - plain_s) / n
    marginal = parts["median_gap_s"] + (parts["in_trials_s"] - sum(plain_trials)) / max(len(finished), 1)
    fixed = parts["before_first_s"] + parts["after_last_s"] - (plain_s - sum(plain_trials))
    print_table(table, "plain loop versus the full service (seconds; the service's trial times are its MLflow runs')")
    print(f"overhead ratio service/plain: {ratio:.2f} (without Ray start-up: {ratio_no_ray:.2f}); "
          f"(run_search - plain loop) / N = {per_trial:.2f} s per trial")
    print(f"fixed costs: Ray start-up {ray_s:.1f} s, run_search before the first and after the last trial "
          f"{fixed:.1f} s more than the loop's data loading; per trial: {marginal:.2f} s "
          f"(median gap between trials {parts['median_gap_s']:.2f} s + MLflow run time over the loop's trial time)")
    print(f"service trials reproduce the loop's accuracies: {'yes' if same else 'NO'} "
          f"({len(finished)} of {n} trials finished)")

    metrics = {"plain_s": plain_s, "service_s": service_s, "ray_start_s": ray_s, "run_search_s": search_s,
               **{f"service_{k}": v for k, v in parts.items()}, "fixed_overhead_s": fixed,
               "marginal_overhead_per_trial_s": marginal, "overhead_ratio": ratio,
               "overhead_ratio_without_ray_start": ratio_no_ray, "overhead_per_trial_s": per_trial,
               "plain_per_trial_s": float(np.mean(plain_trials)), "trials_finished": len(finished),
               "accuracies_match": float(same), "load_1m_start": load_start[0], "load_1m_end": load_end[0]}
    search_id = str(runs.attrs.get("search_id", "")) if hasattr(runs, "attrs") else ""
    log_run("overhead", args.tracking_uri,
            {"trials": n, "quick": args.quick, "space": args.space, "max_concurrent": 1, "cpus_per_trial": 1,
             "data_dir": args.data_dir, "teacher": args.teacher, **{f"config.{k}": v for k, v in config.items()}},
            metrics, {"overhead.csv": table}, tags={"search_id": search_id})
    print(f"SUMMARY: overhead: {n} trials of ~{np.mean(plain_trials):.1f} s: service {service_s:.1f} s vs plain loop "
          f"{plain_s:.1f} s = {ratio:.2f}x ({ratio_no_ray:.2f}x without Ray start-up {ray_s:.1f} s); fixed "
          f"{ray_s + fixed:.1f} s (Ray {ray_s:.1f} s + run_search set-up/close {fixed:.1f} s) + {marginal:.2f} s per trial; "
          f"accuracies match: {'yes' if same else 'no'}; "
          f"load avg {load_start[0]:.1f}-{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    return metrics


if __name__ == "__main__":
    main_guard(main)
