"""Benchmark: why the bidirectional RNN over characters trails the thesis, and what fixes it.

The Featherweight thesis's teacher-free baseline for RNN/char-100 (alpha = 1: labels only, the
original SST-2 training sentences, 6 epochs, patience 2) reaches about 79% on SST-2 dev. A plain
Elman RNN (tanh, hidden 100) read over sentences of up to 256 characters has two known troubles:
gradients that explode over long sequences (Pascanu et al. 2013: clip their norm) and a final
state that mostly remembers the last characters (max pooling over time keeps evidence from the
whole sentence). Each variant is one :func:`trainables.trial.run_trial` with the service's
defaults otherwise (Adam, lr 1e-3, batch 64, dropout 0.1, seed 0), on the SST-2 training rows
left after the validation split; the best epoch is picked on the validation split and the
variant to keep is the one with the best **validation** accuracy. Dev accuracy is reported,
never used to choose.

Variants (``--variants``): ``last`` (the defaults: final states, no clipping), ``last+clip``
(``max_grad_norm`` 1), ``max`` (``pooling: max``), ``max+clip`` (both).

Usage:
    python -m bench.char_rnn --quick        # 8,000 training rows, 2 epochs
    python -m bench.char_rnn [--jobs 2]     # all rows, 6 epochs, patience 2 (about 10 minutes on 2 cores)

Ends with a ``SUMMARY:`` line and logs one MLflow run to the experiment ``bench-char_rnn``.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from bench._common import describe_load, load_sst2, log_run, main_guard, parser, print_table

VARIANTS = {
    "last": {},
    "last+clip": {"max_grad_norm": 1.0},
    "max": {"pooling": "max"},
    "max+clip": {"pooling": "max", "max_grad_norm": 1.0},
}
BASE = {"task": "sst2", "student": "rnn", "embedding": "char", "embedding_dim": 100, "vocab_size": 5000,
        "alpha": 1.0, "epochs": 6, "patience": 2, "seed": 0}


def run_variant(name: str, overrides: dict, data_dir: str, teacher: str, cache_dir: str | None) -> dict:
    """One trial of ``name`` on 1 thread; its validation and dev accuracy, best epoch and seconds."""
    import torch

    from trainables.tracking import MemoryTracker
    from trainables.trial import RunSettings, run_trial

    torch.set_num_threads(1)
    data = load_sst2(data_dir, teacher, cache_dir)
    cfg = {**BASE, **overrides}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-char-rnn-") as tmp:
        tracker = MemoryTracker()
        out = run_trial(cfg, data, Path(tmp), tracker, RunSettings(threads=1))
    val_curve = [round(v, 2) for step, v in tracker.metrics.get("val_accuracy", []) if step is not None]
    return {"variant": name, "val accuracy %": round(out["val_accuracy"], 2), "dev accuracy %": round(out["accuracy"], 2),
            "best epoch": out.get("best_epoch"), "val by epoch": " ".join(map(str, val_curve)),
            "seconds": round(time.perf_counter() - t0), "overrides": json.dumps(overrides)}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = parser(__doc__)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="variants run at once, 1 thread each (default %(default)s)")
    args = ap.parse_args(argv)
    from trainables.errors import ConfigError

    names = [v for v in args.variants.split(",") if v]
    if not names or set(names) - set(VARIANTS) or args.jobs < 1:
        raise ConfigError(f"--variants must name some of {', '.join(VARIANTS)}; --jobs >= 1")
    extra = {"max_train_examples": 8000, "epochs": 2} if args.quick else {}
    load_start = describe_load("start")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_variant, n, {**VARIANTS[n], **extra}, args.data_dir, args.teacher, args.cache_dir)
                   for n in names]
        rows = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    load_end = describe_load("end")
    table = pd.DataFrame(rows)
    print_table(table, "bidirectional RNN over characters (dim 100), alpha = 1, SST-2; chosen on validation accuracy")
    best = table.loc[table["val accuracy %"].idxmax()]
    base = table.set_index("variant")
    gain = (f"{best['dev accuracy %'] - base.loc['last', 'dev accuracy %']:+.2f} pp dev against last"
            if "last" in base.index else "")
    log_run("char_rnn", args.tracking_uri, {"variants": ",".join(names), "quick": args.quick, "jobs": args.jobs,
                                            "base": json.dumps({**BASE, **extra})},
            {"wall_s": wall, "best_val": float(best["val accuracy %"]), "best_dev": float(best["dev accuracy %"]),
             "load_1m_start": load_start[0], "load_1m_end": load_end[0],
             **{f"{r['variant'].replace('+', '_')}_dev": r["dev accuracy %"] for r in rows},
             **{f"{r['variant'].replace('+', '_')}_val": r["val accuracy %"] for r in rows}},
            {"char_rnn.csv": table})
    print(f"SUMMARY: char_rnn: best on validation {best['variant']} (val {best['val accuracy %']:.2f}%, dev "
          f"{best['dev accuracy %']:.2f}%) {gain}; "
          + ", ".join(f"{r['variant']} dev {r['dev accuracy %']:.2f}%" for r in rows)
          + f"; wall {wall:.0f} s, load avg {load_start[0]:.1f}-{load_end[0]:.1f}")
    return table


if __name__ == "__main__":
    main_guard(main)
