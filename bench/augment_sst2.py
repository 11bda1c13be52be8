"""Benchmark: does a teacher-labelled augmented transfer set make a better SST-2 BiLSTM student?

The question: on SST-2 with the shared MiniLM teacher, a BiLSTM student distilled on a
training subset plus N synthetic examples per sentence (Tang et al. 2019, section 3.3; rules in
:mod:`trainables.data.augment`) has a higher mean dev accuracy over 3 seeds than the same config
distilled on the subset alone.

Both arms run :func:`trainables.trial.run_trial` with one config (BiLSTM, GloVe 100-d, max
pooling, MSE on logits, Adam 1e-3) on the same seeded subset of SST-2 train (the seed changes the
student's initialisation and batch order); only ``augment_n`` differs. The augmented set is made
once (as a search's driver does), labelled by the teacher under bf16 autocast and cached; its cost
(seconds; joules when a meter works) is reported. Dev accuracy is on the full SST-2 dev set (872).

Usage:
    python -m bench.augment_sst2 [--quick] [--train-rows 1500] [--augment-n 6] [--augment-p 0.1]
                                 [--epochs 4] [--seeds 0 1 2] [--threads 2]

Teacher: shared/teachers/minilm-l6-sst2 (logits shipped), data: shared/data/glue.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._common import (
    describe_load,
    load_sst2,
    log_run,
    main_guard,
    parser,
    print_table,
)
from trainables.data.augment import prepare_augmented
from trainables.data.glue import Split
from trainables.tracking import MemoryTracker
from trainables.trial import RunSettings, run_trial

CONFIG = {"task": "sst2", "student": "bilstm", "embedding": "glove", "embedding_dim": 100, "vocab_size": 10000,
          "pooling": "max", "alpha": 0.0, "distill_loss": "mse", "lr": 1e-3, "batch_size": 64, "dropout": 0.1,
          "patience": 0}


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--train-rows", type=int, default=1500, help="SST-2 training subset (sentences)")
    ap.add_argument("--augment-n", type=int, default=6, help="synthetic examples per sentence")
    ap.add_argument("--augment-p", type=float, default=0.1, help="p_mask = p_replace")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--subset-seed", type=int, default=0, help="seed of the training subset and of the rules")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.quick:
        args.train_rows, args.augment_n, args.epochs = 500, 4, 3
    start = time.perf_counter()
    describe_load("start")

    full = load_sst2(args.data_dir, args.teacher, args.cache_dir)
    rows = np.sort(np.random.default_rng(args.subset_seed).permutation(len(full.train))[: args.train_rows])
    train = Split("sst2", "train", [full.train.text_a[i] for i in rows], None, full.train.labels[rows],
                  f"{full.train.source}[subset seed {args.subset_seed}]")
    data = full.__class__(**{**full.__dict__, "train": train, "train_logits": full.train_logits[rows], "augmented": {}})
    prepare_augmented(data, args.teacher, [(args.augment_n, args.augment_p)], seed=args.subset_seed,
                      cache_dir=args.cache_dir)
    aug = data.augmented[(args.augment_n, round(args.augment_p, 6))]

    records = []
    with tempfile.TemporaryDirectory(prefix="augment-sst2-") as tmp:
        for arm, n in (("plain", 0), ("augmented", args.augment_n)):
            for seed in args.seeds:
                cfg = {**CONFIG, "epochs": args.epochs, "seed": seed, "augment_n": n, "augment_p": args.augment_p}
                t0 = time.perf_counter()
                final = run_trial(cfg, data, Path(tmp) / f"{arm}-{seed}", MemoryTracker(),
                                  RunSettings(threads=args.threads))
                records.append({"arm": arm, "seed": seed, "train_rows": len(train) + (len(aug) if n else 0),
                                "accuracy": final["accuracy"], "best_epoch": final["best_epoch"],
                                "train_time_s": final["train_time_s"], "wall_s": time.perf_counter() - t0})
                print(f"{arm:9s} seed {seed}: dev accuracy {final['accuracy']:.2f}% "
                      f"({records[-1]['train_rows']} training rows, {records[-1]['wall_s']:.0f} s)", flush=True)
    runs = pd.DataFrame(records)
    means = runs.groupby("arm")["accuracy"].mean()
    result = {"plain_mean_accuracy": float(means["plain"]), "augmented_mean_accuracy": float(means["augmented"]),
              "gain_pp": float(means["augmented"] - means["plain"]), "synthetic_rows": len(aug),
              "augment_time_s": aug.seconds, "augment_energy_j": aug.joules, "augment_cached": aug.cached,
              "wall_s": time.perf_counter() - start}
    print_table(runs.round(2), f"SST-2 dev accuracy, BiLSTM GloVe-100, {len(train)} training sentences, "
                               f"augment_n={args.augment_n}, augment_p={args.augment_p}")
    energy = f"{aug.joules:.0f} J" if aug.joules is not None else f"energy {aug.energy_method}"
    print(f"\naugmented set: {len(aug)} synthetic examples, made in {aug.seconds:.1f} s ({energy})"
          f"{' (read from the cache)' if aug.cached else ''}")
    describe_load("end")
    log_run("augment_sst2", args.tracking_uri, {**vars(args), **CONFIG},
            {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            {"runs.csv": runs}, {"augment_energy_method": aug.energy_method})
    print(f"SUMMARY: mean dev accuracy over seeds {args.seeds}: without augmentation "
          f"{result['plain_mean_accuracy']:.2f}%, with augmentation {result['augmented_mean_accuracy']:.2f}% "
          f"({result['gain_pp']:+.2f} pp); {len(aug)} synthetic rows in {aug.seconds:.0f} s; "
          f"wall {result['wall_s'] / 60:.1f} min", flush=True)
    return result


if __name__ == "__main__":
    main_guard(main)
