"""Benchmark: a teacher-labelled transfer set at the thesis's scale, its cost, and what sharing it costs.

1. **Make it** as a search's driver does (:func:`trainables.data.augment.prepare_augmented` on the
   SST-2 training rows left after the validation split): ``--augment-n`` synthetic sentences per
   training sentence (at most: repeats are dropped; default 12, about 570,000 from the 63,982
   training sentences; ``--quick``: 2 per sentence of 5,000 rows), labelled
   by the teacher (:class:`trainables.data.teacher.Labeller`, its default precision), cached as
   ``.npy`` files. Printed: rows, wall seconds split into generating and labelling (sentences per
   second), and whether the cache answered. Run it twice to see the cached cost; interrupt it
   (Ctrl-C) and run it again to see the labelling continue.
2. **Share it**: the search data (with the set) goes into Ray's object store once, as
   ``tune.with_parameters`` does; ``--workers`` Ray tasks (1 CPU each, default 2) each fetch it and
   build a trial's training set from all rows (:func:`trainables.data.augment.transfer_set`).
   Printed per worker: unique (private) memory, USS, before and after fetching the data, and after
   building the trial's set; and the driver's RSS. The set's arrays stay in shared memory, so a
   worker's USS grows by what the trial makes of them (its decoded texts), not by the set.

Usage:
    python -m bench.transfer_set --quick
    python -m bench.transfer_set [--augment-n 12] [--augment-p 0.1] [--workers 2]

Ends with a ``SUMMARY:`` line and logs one MLflow run to the experiment ``bench-transfer_set``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd

from bench._common import describe_load, load_sst2, log_run, main_guard, parser, print_table

MiB = 2**20


def _uss() -> float:
    import psutil

    return psutil.Process().memory_full_info().uss / MiB


def _worker(data, n: int, p: float) -> dict:
    """In a Ray task: private memory before and after using the shared data for one trial."""
    import ray

    from trainables.data.augment import transfer_set
    from trainables.trial import run_trial  # noqa: F401  (what unpickling the data imports: not counted)

    before = _uss()
    data = ray.get(data[0])  # the object-store copy, deserialised here
    fetched = _uss()
    aug = data.augmented[(n, round(p, 6))]
    shared = not aug.logits.flags.writeable and not aug.text_a.data.flags.writeable  # zero-copy views
    split, logits, _, _, _ = transfer_set(data, {"augment_n": n, "augment_p": p}, None)
    built = _uss()
    return {"pid": os.getpid(), "USS before MiB": round(before, 1), "USS after fetch MiB": round(fetched, 1),
            "USS after trial set MiB": round(built, 1), "trial rows": len(split),
            "set arrays read-only (shared)": shared}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = parser(__doc__)
    ap.add_argument("--augment-n", type=int, default=None, help="synthetic sentences per training sentence (default 12)")
    ap.add_argument("--augment-p", type=float, default=0.1, help="masking / replacement probability (default 0.1)")
    ap.add_argument("--workers", type=int, default=2, help="Ray tasks that share the set (default 2)")
    args = ap.parse_args(argv)
    from trainables.errors import ConfigError

    n = args.augment_n or (2 if args.quick else 12)
    if n < 1 or not 0.0 <= args.augment_p <= 0.5 or args.workers < 1:
        raise ConfigError("--augment-n must be >= 1, --augment-p in [0, 0.5] and --workers >= 1")
    import psutil
    import ray

    from trainables.data.augment import prepare_augmented

    load_start = describe_load("start")
    t0 = time.perf_counter()
    data = load_sst2(args.data_dir, args.teacher, args.cache_dir)  # validation split already carved
    if args.quick:
        rows = np.arange(5000)
        data = data.__class__(**{**data.__dict__, "train": data.train.subset(rows, "train"),
                                 "train_logits": data.train_logits[rows], "augmented": {}})
    t_data = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare_augmented(data, args.teacher, [(n, args.augment_p)], cache_dir=args.cache_dir)
    wall = time.perf_counter() - t0
    aug = data.augmented[(n, round(args.augment_p, 6))]
    driver_rss = psutil.Process().memory_info().rss / MiB
    set_mib = (aug.text_a.data.nbytes + aug.text_a.offsets.nbytes + aug.logits.nbytes + aug.source.nbytes) / MiB
    print(f"transfer set: {len(aug):,} synthetic sentences from {len(data.train):,} training sentences "
          f"(n={n}, p={args.augment_p:g}); {'cache hit' if aug.cached else 'made'} in {wall:.1f} s this run; "
          f"making it took {aug.seconds:.1f} s ({len(aug) / aug.seconds:.0f} sentences/s, generation included); "
          f"{set_mib:.1f} MiB of arrays; driver RSS {driver_rss:.0f} MiB", flush=True)

    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    try:
        ref = ray.put(data)
        task = ray.remote(num_cpus=1)(_worker)
        rows = ray.get([task.remote([ref], n, args.augment_p) for _ in range(args.workers)])
    finally:
        ray.shutdown()
    table = pd.DataFrame(rows)
    table["fetch adds MiB"] = (table["USS after fetch MiB"] - table["USS before MiB"]).round(1)
    table["trial set adds MiB"] = (table["USS after trial set MiB"] - table["USS after fetch MiB"]).round(1)
    print_table(table, f"{args.workers} Ray workers sharing the search data ({set_mib:.1f} MiB of transfer-set arrays)")
    load_end = describe_load("end")
    metrics = {"rows": len(aug), "make_seconds": aug.seconds, "sentences_per_s": len(aug) / aug.seconds,
               "this_run_s": wall, "data_load_s": t_data, "set_mib": set_mib, "driver_rss_mib": driver_rss,
               "max_fetch_adds_mib": float(table["fetch adds MiB"].max()),
               "max_trial_set_adds_mib": float(table["trial set adds MiB"].max()),
               "load_1m_start": load_start[0], "load_1m_end": load_end[0]}
    log_run("transfer_set", args.tracking_uri,
            {"augment_n": n, "augment_p": args.augment_p, "workers": args.workers, "quick": args.quick,
             "cached": aug.cached, "precision": aug.precision, "teacher": args.teacher},
            metrics, {"workers.csv": table})
    print(f"SUMMARY: transfer_set: {len(aug):,} teacher-labelled sentences ({aug.precision}), made in "
          f"{aug.seconds:.0f} s ({len(aug) / aug.seconds:.0f}/s); {set_mib:.1f} MiB shared; a worker's private "
          f"memory grows {table['fetch adds MiB'].max():.1f} MiB when it fetches the data and "
          f"{table['trial set adds MiB'].max():.1f} MiB when it builds a trial's set; driver RSS {driver_rss:.0f} MiB")
    return table


if __name__ == "__main__":
    main_guard(main)
