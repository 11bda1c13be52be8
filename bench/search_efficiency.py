"""Benchmark: how many trials random search, TPE, NSGA-II and GP need for the same Pareto front.

Every sampler gets the same search space (``bench/spaces/efficiency.yaml``: fast FFN students,
2,000 SST-2 training rows, one epoch), the same trial budget and the same seeds. Each trial is a
real :func:`trainables.trial.run_trial` on SST-2 with the teacher's logits; accuracy is dev
accuracy of the saved student, size its ``size_bytes``.

Hypervolume: objectives accuracy (max, percent) and **log10(size_bytes)** (min), so that halving a
10 kB model counts as much as halving a 1 MB one. One reference point is shared by all samplers
and seeds: :func:`analysis.pareto.default_reference` (the nadir padded by 10% of the range) over
*all* trials of the benchmark. The target is random search's final hypervolume (median over
seeds); for each sampler the benchmark prints the hypervolume after n trials and the number of
trials it needs to reach the target (median over seeds; a seed that never reaches it counts as
infinitely many, so the median can be "not reached").

Why not through Ray Tune: this measures the *samplers'* efficiency (front quality per trial),
not the service. The samplers are the service's own (:func:`search.tuner.make_sampler`, seeded,
default settings), the distributions are the service's own (Ray's
``OptunaSearch.convert_search_space`` of the space's Tune domains), and each trial runs the same
trainable; only the scheduling is replaced by a sequential Optuna ask/tell loop, which removes
Ray's start-up and per-trial overhead (see ``bench/overhead.py`` for that) and lets identical
configs be memoised: a trial is deterministic for its config (fixed trial seed, deterministic
CPU training), so a config asked again, by any sampler or seed, is told the stored result.

Note on defaults: TPE and GP sample at random for their first 10 trials and NSGA-II for its first
generation, whose size the service sets to the budget (``clip(trials // 4, 4, 50)``, see
:func:`search.tuner.make_sampler`). Seeded alike, all four draw the *same* random configs at
first (Optuna's ``RandomSampler`` with that seed), so seeds pair the samplers (common random
numbers): their curves coincide until each starts modelling.

Usage:
    python -m bench.search_efficiency --quick          # 4 samplers x 3 seeds x 24 trials (about 5 minutes)
    python -m bench.search_efficiency                  # 4 samplers x 5 seeds x 50 trials
    python -m bench.search_efficiency --samplers random,tpe --seeds 0 1 --trials 30
"""

from __future__ import annotations

import json
import math
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

SPACE = ROOT / "bench" / "spaces" / "efficiency.yaml"
SAMPLERS = ("random", "tpe", "nsga2", "gp")


def optuna_distributions(space):
    """The Optuna distributions the service hands its sampler for ``space`` (via Ray's converter)."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch.convert_search_space(space.tune_space())


def run_sampler(name, seed, trials, space, dists, evaluate):
    """Ask/tell ``trials`` configs from the seeded service sampler ``name``; one row per trial."""
    import optuna

    from search.tuner import make_sampler

    objectives = space.objectives
    study = optuna.create_study(directions=["maximize" if d == "max" else "minimize" for d in objectives.values()],
                                sampler=make_sampler(name, seed, trials))
    rows = []
    for n in range(1, trials + 1):
        t0 = time.perf_counter()
        trial = study.ask(dists)
        ask_s = time.perf_counter() - t0
        metrics, cached = evaluate({**space.fixed, **trial.params})
        if metrics is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            values = [math.nan] * len(objectives)
        else:
            values = [float(metrics[m]) for m in objectives]
            study.tell(trial, values)
        rows.append({"sampler": name, "seed": seed, "trial": n, **trial.params,
                     **dict(zip(objectives, values)), "cached": cached, "ask_s": ask_s})
    return rows


def trials_to_reach(history: np.ndarray, target: float) -> float:
    """1-based trial count at which ``history`` first reaches ``target`` (inf if never)."""
    hit = np.flatnonzero(history >= target * (1 - 1e-12))
    return float(hit[0] + 1) if hit.size else math.inf


def fmt_trials(x: float) -> str:
    return "not reached" if not math.isfinite(x) else f"{x:g}"


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated (default %(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="sampler seeds (default 0-4; quick 0-2)")
    ap.add_argument("--trials", type=int, default=None, help="trial budget per search (default 50; quick 24)")
    ap.add_argument("--space", default=str(SPACE), help="search space (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial (default 1, as the service)")
    args = ap.parse_args(argv)
    seeds = args.seeds or ([0, 1, 2] if args.quick else [0, 1, 2, 3, 4])
    budget = args.trials or (24 if args.quick else 50)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]

    import optuna

    from analysis.pareto import default_reference, hypervolume_history
    from spaces import load_space
    from trainables.errors import ConfigError
    from trainables.trial import RunSettings, run_trial

    bad = [s for s in samplers if s not in SAMPLERS]
    if bad or "random" not in samplers:
        raise ConfigError(f"--samplers must include random and only name {', '.join(SAMPLERS)}; got {args.samplers!r}")
    check_tracking(args.tracking_uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_start = describe_load("start")
    t_start = time.perf_counter()
    space = load_space(args.space)
    objectives = space.objectives or {"accuracy": "max", "size_bytes": "min"}
    space.objectives = objectives
    if list(objectives) != ["accuracy", "size_bytes"]:
        raise ConfigError(f"{args.space}: this benchmark needs objectives accuracy (max), size_bytes (min)")
    data = load_sst2(args.data_dir, args.teacher, args.cache_dir)
    dists = optuna_distributions(space)
    print(f"space {args.space}: searched {', '.join(dists)}; fixed {space.fixed}", flush=True)
    print(f"samplers {', '.join(samplers)}; seeds {seeds}; {budget} trials each", flush=True)

    memo: dict[str, dict | None] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-search-efficiency-"))
    trial_seconds: list[float] = []

    def evaluate(cfg):
        key = json.dumps(cfg, sort_keys=True, default=str)
        if key in memo:
            return memo[key], True
        t0 = time.perf_counter()
        try:
            final = run_trial(cfg, data, workdir / f"t{len(memo)}", settings=RunSettings(threads=args.threads))
            memo[key] = {k: final[k] for k in ("accuracy", "size_bytes")}
        except Exception as e:  # a failing config is a failed trial, as in the service
            print(f"trial failed ({type(e).__name__}: {e}) for {cfg}", flush=True)
            memo[key] = None
        trial_seconds.append(time.perf_counter() - t0)
        return memo[key], False

    rows, not_run = [], {}
    for name in samplers:
        t0 = time.perf_counter()
        try:
            for seed in seeds:
                rows += run_sampler(name, seed, budget, space, dists, evaluate)
        except Exception as e:  # e.g. GP's optional dependencies; the other samplers still count
            rows = [r for r in rows if r["sampler"] != name]
            not_run[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: did not run ({not_run[name]})", flush=True)
            continue
        print(f"{name}: {len(seeds)} x {budget} trials in {time.perf_counter() - t0:.0f} s "
              f"({len(memo)} distinct configs evaluated so far)", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)  # the trials' saved students; only their metrics are kept
    trials = pd.DataFrame(rows)
    ran = [s for s in samplers if s not in not_run]

    # hypervolume on (accuracy, log10 size_bytes), one reference point from every trial
    trials["log10_size_bytes"] = np.log10(trials["size_bytes"])
    cols, dirs = ["accuracy", "log10_size_bytes"], ["max", "min"]
    reference = default_reference(trials[cols].to_numpy(float), dirs)
    trials["hypervolume"] = np.nan
    for (name, seed), idx in trials.groupby(["sampler", "seed"]).groups.items():
        part = trials.loc[idx].sort_values("trial")
        trials.loc[part.index, "hypervolume"] = hypervolume_history(part[cols].to_numpy(float), dirs, reference)
    final = trials[trials["trial"] == budget].set_index(["sampler", "seed"])["hypervolume"]
    target = float(np.median(final.loc["random"]))

    checkpoints = sorted({max(1, budget // 4), max(1, budget // 2), max(1, 3 * budget // 4), budget})
    table = []
    for name in ran:
        per_seed = trials[trials["sampler"] == name]
        row = {"sampler": name}
        for n in checkpoints:
            hv = per_seed[per_seed["trial"] == n]["hypervolume"]
            row[f"hv@{n} median"] = round(float(hv.median()), 2)
            if n == budget:
                row[f"hv@{n} min-max"] = f"{hv.min():.2f}-{hv.max():.2f}"
        reach = [trials_to_reach(g.sort_values("trial")["hypervolume"].to_numpy(), target)
                 for _, g in per_seed.groupby("seed")]
        row["trials to target (median)"] = fmt_trials(float(np.median(reach)))
        row["reached"] = f"{sum(map(math.isfinite, reach))}/{len(reach)}"
        row["per seed"] = " ".join(fmt_trials(r).replace("not reached", "-") for r in reach)
        row["best acc %"] = round(float(per_seed["accuracy"].max()), 2)
        row["distinct configs"] = int(per_seed.drop_duplicates(list(dists)).shape[0])
        row["ask s (mean)"] = round(float(per_seed["ask_s"].mean()), 3)
        table.append(row)
    table = pd.DataFrame(table)
    wall = time.perf_counter() - t_start
    load_end = describe_load("end")

    print(f"\nreference point (accuracy %, log10 bytes): ({reference[0]:.2f}, {reference[1]:.3f}); "
          f"hypervolume unit: percent x decades of bytes")
    print(f"target: random search's final hypervolume after {budget} trials, median over {len(seeds)} seeds = {target:.2f}")
    print_table(table, "hypervolume after n trials (median over seeds) and trials to reach the target")
    for name, why in not_run.items():
        print(f"{name}: not run ({why})")
    print(f"{len(trials)} trials asked, {len(memo)} distinct configs trained "
          f"({np.mean(trial_seconds):.2f} s each on average); wall time {wall:.0f} s")

    metrics = {"wall_s": wall, "target_hv": target, "distinct_configs": len(memo),
               "mean_trial_s": float(np.mean(trial_seconds)), "load_1m_start": load_start[0], "load_1m_end": load_end[0],
               "reference_accuracy": reference[0], "reference_log10_size_bytes": reference[1]}
    for r in table.to_dict("records"):
        metrics[f"{r['sampler']}_hv_final_median"] = r[f"hv@{budget} median"]
        if r["trials to target (median)"] != "not reached":
            metrics[f"{r['sampler']}_trials_to_target"] = float(r["trials to target (median)"])
    log_run("search-efficiency", args.tracking_uri,
            {"space": args.space, "samplers": ",".join(samplers), "seeds": " ".join(map(str, seeds)),
             "trials": budget, "quick": args.quick, "threads": args.threads, "data_dir": args.data_dir,
             "teacher": args.teacher, "hv_objectives": "accuracy:max,log10(size_bytes):min",
             "not_run": json.dumps(not_run), **{f"fixed.{k}": v for k, v in space.fixed.items()}},
            metrics, {"search_efficiency.csv": table, "trials.csv": trials})
    summary = "; ".join(f"{r['sampler']} {r['trials to target (median)']} (hv {r[f'hv@{budget} median']})"
                        for r in table.to_dict("records"))
    print(f"SUMMARY: search_efficiency: trials to reach random's final hypervolume {target:.2f} "
          f"(median of {len(seeds)} seeds, budget {budget}): {summary}; wall {wall:.0f} s, "
          f"load avg {load_start[0]:.1f}-{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    return table


if __name__ == "__main__":
    main_guard(main)
