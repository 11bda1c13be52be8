"""Benchmark: how fast the teacher labels sentences on CPU, and how faithfully.

Every method labels the same sentences with the same teacher (``--teacher``, default the MiniLM
SST-2 teacher) on ``--threads`` torch threads (default 2):

- ``today``: :func:`trainables.data.teacher.compute_logits`, the path that computed teacher
  logits until :class:`~trainables.data.teacher.Labeller` existed: batches of 64 in data order,
  padded to the batch's longest, bf16 autocast;
- ``today-sorted``: the augmentation path of the same release (sentences sorted by characters,
  batches of 128, then ``compute_logits``);
- ``fp32``, ``bf16``, ``int8``: :class:`~trainables.data.teacher.Labeller` (tokenised once,
  sorted by tokens, batches of ``--batch-tokens`` padded tokens) at that precision; ``int8`` runs
  every ``nn.Linear`` through torch's dynamic int8 kernels (:mod:`trainables.kernels`).

**Throughput**: sentences per second over ``--rows`` SST-2 training sentences (short phrases,
the sentences augmented transfer sets are made from; default 8,000, ``--quick`` 2,000), each
method timed in ``--rounds`` interleaved rounds (default 3) after one warm-up batch; the table
gives the median round and the ratio to ``today``.
**Fidelity**: each method's logits on the 872 SST-2 dev sentences against float32 logits
(``fp32``): argmax agreement (percent) and mean squared logit difference; and each method's dev
accuracy against the gold labels.

Usage:
    python -m bench.teacher_labelling --quick
    python -m bench.teacher_labelling [--rows 8000] [--rounds 3] [--threads 2] [--batch-tokens 8192]

Ends with a ``SUMMARY:`` line and logs one MLflow run to the experiment ``bench-teacher_labelling``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import torch

from bench._common import describe_load, log_run, main_guard, parser, print_table
from trainables.data.glue import Split, load_split
from trainables.data.teacher import Labeller, check_teacher, compute_logits, load_teacher

METHODS = ("today", "today-sorted", "fp32", "bf16", "int8")


def labeller_for(method: str, model, tokenizer, batch_tokens: int):
    """A function ``texts -> logits (n, C)`` for ``method``."""
    if method == "today":
        def run(texts: list[str]) -> np.ndarray:
            split = Split("sst2", "bench", texts, None, np.zeros(len(texts), np.int64), "bench", data_hash="-")
            return compute_logits(model, tokenizer, split, batch_size=64, progress=False)
        return run
    if method == "today-sorted":
        def run_sorted(texts: list[str]) -> np.ndarray:
            order = np.argsort([len(t) for t in texts], kind="stable")
            split = Split("sst2", "bench", [texts[i] for i in order], None, np.zeros(len(texts), np.int64), "bench",
                          data_hash="-")
            out = np.empty((len(texts), model.config.num_labels), np.float32)
            out[order] = compute_logits(model, tokenizer, split, batch_size=128, progress=False)
            return out
        return run_sorted
    labeller = Labeller(model, tokenizer, method, batch_tokens=batch_tokens)
    return lambda texts: labeller(texts, progress=False)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = parser(__doc__)
    ap.add_argument("--rows", type=int, default=None, help="training sentences timed (default 8,000; quick 2,000)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default %(default)s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    ap.add_argument("--batch-tokens", type=int, default=2048, help="Labeller's padded tokens per batch")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default %(default)s)")
    args = ap.parse_args(argv)
    from trainables.errors import ConfigError

    rows = args.rows or (2000 if args.quick else 8000)
    methods = [m for m in args.methods.split(",") if m]
    if "today" not in methods or "fp32" not in methods or set(methods) - set(METHODS):
        raise ConfigError(f"--methods must include today and fp32 and only name {', '.join(METHODS)}")
    if rows < 1 or args.rounds < 1 or args.threads < 1 or args.batch_tokens < 1:
        raise ConfigError("--rows, --rounds, --threads and --batch-tokens must be at least 1")
    check_teacher(args.teacher)
    torch.set_num_threads(args.threads)
    train = load_split("sst2", "train", args.data_dir)
    dev = load_split("sst2", "dev", args.data_dir)
    rng = np.random.default_rng(0)
    texts = [train.text_a[i] for i in rng.choice(len(train), size=min(rows, len(train)), replace=False)]
    model, tokenizer = load_teacher(args.teacher)
    run = {m: labeller_for(m, model, tokenizer, args.batch_tokens) for m in methods}
    load_start = describe_load("start")

    dev_logits = {m: run[m](list(dev.text_a)) for m in methods}  # also the warm-up
    ref = dev_logits["fp32"]
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(args.rounds):
        for m in methods:
            t0 = time.perf_counter()
            run[m](texts)
            seconds[m].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{m} {seconds[m][-1]:.1f} s" for m in methods), flush=True)
    load_end = describe_load("end")

    base = len(texts) / statistics.median(seconds["today"])
    table = pd.DataFrame([{
        "method": m,
        "sentences/s (median)": round(len(texts) / statistics.median(seconds[m]), 1),
        "min-max": f"{len(texts) / max(seconds[m]):.0f}-{len(texts) / min(seconds[m]):.0f}",
        "x today": round(len(texts) / statistics.median(seconds[m]) / base, 2),
        "dev argmax agreement with fp32 %": round(100.0 * float((dev_logits[m].argmax(1) == ref.argmax(1)).mean()), 2),
        "dev logit MSE vs fp32": float(f"{float(((dev_logits[m] - ref) ** 2).mean()):.3g}"),
        "dev accuracy %": round(100.0 * float((dev_logits[m].argmax(1) == dev.labels).mean()), 2),
    } for m in methods])
    print_table(table, f"teacher labelling: {len(texts):,} SST-2 training sentences, {args.threads} threads, "
                       f"{args.rounds} interleaved rounds; fidelity on the {len(dev)} dev sentences")
    rec = table.set_index("method")
    fast = [m for m in methods if m not in ("today", "today-sorted")
            and rec.loc[m, "dev argmax agreement with fp32 %"] >= 99.0]
    best = max(fast, key=lambda m: rec.loc[m, "sentences/s (median)"]) if fast else None
    metrics = {"rows": len(texts), "load_1m_start": load_start[0], "load_1m_end": load_end[0]}
    for m in methods:
        key = m.replace("-", "_")
        metrics[f"{key}_sent_per_s"] = rec.loc[m, "sentences/s (median)"]
        metrics[f"{key}_agreement_pct"] = rec.loc[m, "dev argmax agreement with fp32 %"]
        metrics[f"{key}_logit_mse"] = rec.loc[m, "dev logit MSE vs fp32"]
    log_run("teacher_labelling", args.tracking_uri,
            {"teacher": args.teacher, "rows": len(texts), "rounds": args.rounds, "threads": args.threads,
             "batch_tokens": args.batch_tokens, "methods": ",".join(methods), "quick": args.quick},
            metrics, {"teacher_labelling.csv": table})
    if best is None:
        print("SUMMARY: teacher_labelling: no method kept 99% argmax agreement with fp32")
    else:
        print(f"SUMMARY: teacher_labelling: fastest with >= 99% agreement: {best} "
              f"{rec.loc[best, 'sentences/s (median)']:.0f} sentences/s = {rec.loc[best, 'x today']:.2f}x today "
              f"({rec.loc['today', 'sentences/s (median)']:.0f}/s), agreement "
              f"{rec.loc[best, 'dev argmax agreement with fp32 %']:.2f}%, logit MSE "
              f"{rec.loc[best, 'dev logit MSE vs fp32']:.3g}; {len(texts):,} sentences, {args.threads} threads, "
              f"load avg {load_start[0]:.1f}-{load_end[0]:.1f}")
    return table


if __name__ == "__main__":
    main_guard(main)
