"""Benchmark: training speed and CPU inference speed of every student x embedding, fp32 and int8.

For each student (bilstm, rnn, ffn) and embedding (hash, char, bpe, glove) one
:func:`trainables.trial.run_trial` on SST-2 runs the stages ``distill,quantize``
(thesis-sized defaults: embedding 100-d, vocabulary 5,000, hidden and classifier sizes of
:mod:`trainables.config`):

- **fp32**: the distilled student, saved dense and measured from that file (``distill_*`` metrics).
- **int8**: the same student quantized to 8 bits per row (``quant_method=int8_dynamic``, no QAT),
  saved packed and run from that file with torch's int8 dynamic kernels for LSTM and Linear
  layers (``quantize_*`` metrics). Elman RNNs and embeddings have no such kernel and stay float32.
  Pruning is left out: unstructured zeros shrink the gzip, not the dense kernels' time.

Columns: ``train ex/s`` = training examples x epochs / the distillation epochs' wall time (each
epoch's time includes its dev evaluation, 872 rows, forward only); ``latency ms`` = median of
50 single-sentence forward passes (batch 1) on SST-2 dev rows; ``infer ex/s`` = examples per
second at batch 256 on SST-2 dev (:func:`trainables.training.metrics.inference_speed`). All with
``--threads`` torch threads (default 1, as one 1-CPU trial of the service); sizes are the saved
files' ``size_bytes``. Accuracy is dev accuracy after this training, printed as a check that the
saved files run, not as a result (with ``--quick``'s 2,000 rows and the default learning rate
most students are still at chance, 50.9%).

Usage:
    python -m bench.throughput --quick     # 2,000 training rows, 1 epoch per student
    python -m bench.throughput             # all 67,349 training rows, 1 epoch
    python -m bench.throughput --students ffn --embeddings hash,bpe --threads 2
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
    check_tracking,
    describe_load,
    load_sst2,
    log_run,
    main_guard,
    parser,
    print_table,
)

STUDENTS = ("bilstm", "rnn", "ffn")
EMBEDDINGS = ("hash", "char", "bpe", "glove")
VARIANTS = {"fp32": "distill", "int8": "quantize"}  # variant -> stage whose saved file is measured


def measure(student: str, embedding: str, data, args, workdir: Path) -> list[dict]:
    """One trial of ``student`` x ``embedding``; a row per variant."""
    from trainables.tracking import MemoryTracker
    from trainables.trial import RunSettings, run_trial

    cfg = {"task": "sst2", "seed": 0, "student": student, "embedding": embedding, "max_train_examples": args.train_rows,
           "epochs": args.epochs, "patience": 0, "stages": "distill,quantize", "quant_method": "int8_dynamic",
           "bits_embedding": 8, "bits_encoder": 8, "bits_classifier": 8, "qat_epochs": 0}
    tracker = MemoryTracker()
    t0 = time.perf_counter()
    run_trial(cfg, data, workdir / f"{student}-{embedding}", tracker, RunSettings(threads=args.threads))
    wall = time.perf_counter() - t0
    last = {k: v[-1][1] for k, v in tracker.metrics.items()}
    epoch_s = [v for _, v in tracker.metrics["epoch_time_s"]]
    rows_seen = (args.train_rows if 0 < args.train_rows < len(data.train) else len(data.train)) * len(epoch_s)
    out = []
    for variant, stage in VARIANTS.items():
        out.append({"student": student, "embedding": embedding, "variant": variant,
                    "accuracy": round(last[f"{stage}_accuracy"], 2), "size_bytes": int(last[f"{stage}_size_bytes"]),
                    "train ex/s": round(rows_seen / sum(epoch_s)) if variant == "fp32" else np.nan,
                    "latency ms": round(last[f"{stage}_latency_ms"], 3),
                    "infer ex/s": round(last[f"{stage}_throughput"]), "trial_s": round(wall, 1)})
    return out


def main(argv=None):
    from trainables.errors import ConfigError

    ap = parser(__doc__)
    ap.add_argument("--students", default=",".join(STUDENTS), help="comma-separated (default %(default)s)")
    ap.add_argument("--embeddings", default=",".join(EMBEDDINGS), help="comma-separated (default %(default)s)")
    ap.add_argument("--train-rows", type=int, default=None, help="training rows (default all; quick 2000)")
    ap.add_argument("--epochs", type=int, default=1, help="distillation epochs (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and inference (default 1)")
    args = ap.parse_args(argv)
    args.train_rows = args.train_rows if args.train_rows is not None else (2000 if args.quick else 0)
    students = [s.strip() for s in args.students.split(",") if s.strip()]
    embeddings = [e.strip() for e in args.embeddings.split(",") if e.strip()]
    bad = [x for x in students if x not in STUDENTS] + [x for x in embeddings if x not in EMBEDDINGS]
    if bad or not students or not embeddings:
        raise ConfigError(f"unknown or no student/embedding {bad}; allowed students {', '.join(STUDENTS)}, "
                          f"embeddings {', '.join(EMBEDDINGS)}")
    check_tracking(args.tracking_uri)
    load_start = describe_load("start")
    t_start = time.perf_counter()
    data = load_sst2(args.data_dir, args.teacher, args.cache_dir)
    workdir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    rows = []
    for student in students:
        for embedding in embeddings:
            part = measure(student, embedding, data, args, workdir)
            rows += part
            fp32, int8 = part
            print(f"{student:>6} {embedding:<5} trained at {fp32['train ex/s']:>6} ex/s; fp32 {fp32['latency ms']:.2f} ms, "
                  f"{fp32['infer ex/s']} ex/s; int8 {int8['latency ms']:.2f} ms, {int8['infer ex/s']} ex/s "
                  f"({fp32['trial_s']} s)", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    table = pd.DataFrame(rows)
    wall = time.perf_counter() - t_start
    load_end = describe_load("end")
    n_rows = args.train_rows or len(data.train)
    print_table(table, f"SST-2: training speed ({n_rows} rows x {args.epochs} epoch(s)) and dev inference speed, "
                       f"{args.threads} thread(s)")

    fp32 = table[table["variant"] == "fp32"].set_index(["student", "embedding"])
    int8 = table[table["variant"] == "int8"].set_index(["student", "embedding"])
    speedup = (int8["infer ex/s"] / fp32["infer ex/s"]).rename("int8/fp32 infer ex/s")
    print_table(speedup.round(2).reset_index(), "int8 dynamic over fp32, batch-256 throughput")
    fastest = fp32["infer ex/s"].idxmax()
    slowest = fp32["latency ms"].idxmax()
    metrics = {"wall_s": wall, "load_1m_start": load_start[0], "load_1m_end": load_end[0],
               "median_int8_speedup": float(speedup.median())}
    for r in rows:
        key = f"{r['student']}_{r['embedding']}_{r['variant']}"
        metrics.update({f"{key}_latency_ms": r["latency ms"], f"{key}_throughput": r["infer ex/s"],
                        f"{key}_size_bytes": r["size_bytes"]})
        if r["variant"] == "fp32":
            metrics[f"{key}_train_examples_per_s"] = r["train ex/s"]
    log_run("throughput", args.tracking_uri,
            {"students": ",".join(students), "embeddings": ",".join(embeddings), "train_rows": n_rows,
             "epochs": args.epochs, "threads": args.threads, "quick": args.quick, "data_dir": args.data_dir,
             "teacher": args.teacher, "compressed": "distill,quantize int8_dynamic 8-bit, no QAT"},
            metrics, {"throughput.csv": table})
    print(f"SUMMARY: throughput ({args.threads} thread(s), SST-2 dev): fastest fp32 {'/'.join(fastest)} "
          f"{fp32.loc[fastest, 'infer ex/s']:.0f} ex/s at batch 256 ({fp32.loc[fastest, 'latency ms']:.2f} ms at batch 1); "
          f"slowest fp32 {'/'.join(slowest)} {fp32.loc[slowest, 'latency ms']:.2f} ms, "
          f"{fp32.loc[slowest, 'infer ex/s']:.0f} ex/s; training {fp32['train ex/s'].min():.0f}-"
          f"{fp32['train ex/s'].max():.0f} ex/s; int8/fp32 throughput median {speedup.median():.2f}x "
          f"(range {speedup.min():.2f}-{speedup.max():.2f}); wall {wall:.0f} s, "
          f"load avg {load_start[0]:.1f}-{load_end[0]:.1f} on {os.cpu_count()} CPUs")
    return table


if __name__ == "__main__":
    main_guard(main)
