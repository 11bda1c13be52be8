"""Benchmark: does compression keep a BiLSTM SST-2 student's accuracy at a fraction of its size?

The target: a BiLSTM student pruned to 50% and quantized to 8 bits has ``size_bytes`` at most 30%
of its float32 artifact and dev accuracy within 1 pp of the uncompressed student; the same at
4 bits within 2 pp.

Each run is one :func:`trainables.trial.run_trial` with stages ``distill,prune,quantize``
(50% Top-V, local, every part; then 8 or 4 bits on every part), so the uncompressed (``distill_``),
pruned (``prune_``) and quantized (``quantize_``, final) students are each evaluated from their
saved files. The distillation is seeded and repeats exactly in both runs (checked). The 8-bit
file is also run through torch's int8 dynamic kernels for a latency comparison.

Usage:
    python -m bench.compress_sst2 --quick      # 3,000 training rows, 1 epoch, 2 latency rounds
    python -m bench.compress_sst2              # 20,000 training rows, 2 epochs
    python -m bench.compress_sst2 [--train-rows N] [--epochs E] [--threads 2] [--json out.json]

Prints one table per bit width (accuracy, file and gzip bytes, non-zero weights, and latency as
measured inside each trial), then a CPU speed table of the saved students measured in
interleaved rounds (best round kept, 1 thread by default: the numbers in the trial tables are
taken while other processes may load the CPU).

Ends with a ``SUMMARY:`` line and logs one MLflow run to the experiment ``bench-compress_sst2``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench._common import check_tracking, describe_load, log_run, main_guard, parser
from trainables.data.glue import load_split
from trainables.data.teacher import teacher_id, teacher_logits, teacher_size_bytes
from trainables.formats import packed
from trainables.kernels import to_int8_dynamic
from trainables.tracking import MemoryTracker
from trainables.training.encoded import encode_split, predict
from trainables.training.metrics import accuracy_percent, inference_speed
from trainables.trial import RunSettings, TrialData, run_trial

STAGES = ("distill", "prune", "quantize")
SHOWN = ("accuracy", "size_bytes", "gzip_bytes", "nonzero_params", "latency_ms", "throughput")


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__)
    ap.add_argument("--train-rows", type=int, default=None, help="training rows (default 20,000; --quick 3,000)")
    ap.add_argument("--epochs", type=int, default=None, help="distillation epochs (default 2; --quick 1)")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="distillation epochs after pruning")
    ap.add_argument("--qat-epochs", type=int, default=1, help="quantization-aware epochs of the 4-bit run")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-threads", type=int, default=1, help="torch threads of the final latency table")
    ap.add_argument("--latency-rounds", type=int, default=None,
                    help="interleaved rounds of the final latency table (best round kept; default 5, --quick 2)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    quick = args.quick
    args.train_rows = args.train_rows if args.train_rows is not None else (3000 if quick else 20000)
    args.epochs = args.epochs if args.epochs is not None else (1 if quick else 2)
    args.latency_rounds = args.latency_rounds or (2 if quick else 5)
    check_tracking(args.tracking_uri)  # before any training
    describe_load("start")
    started = time.perf_counter()

    train, dev = load_split("sst2", "train", args.data_dir), load_split("sst2", "dev", args.data_dir)
    data = TrialData(train, dev, teacher_logits(args.teacher, train, progress=False),
                     teacher_logits(args.teacher, dev, progress=False), teacher_id(args.teacher),
                     teacher_size_bytes(args.teacher))
    base = {"task": "sst2", "seed": 0, "student": "bilstm", "embedding": "glove", "embedding_dim": 100,
            "vocab_size": 5000, "max_train_examples": args.train_rows, "epochs": args.epochs, "patience": 0,
            "stages": "distill,prune,quantize", "sparsity": 0.5, "prune_method": "topv", "prune_scope": "local",
            "finetune_epochs": args.finetune_epochs}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="compress-sst2-"))
    results: dict = {"config": base, "train_rows": args.train_rows, "teacher_bytes": data.teacher_bytes, "runs": {}}
    for bits in args.bits:
        cfg = {**base, "bits_embedding": bits, "bits_encoder": bits, "bits_classifier": bits,
               "qat_epochs": args.qat_epochs if bits < 8 else 0}
        tracker, t0 = MemoryTracker(), time.perf_counter()
        final = run_trial(cfg, data, workdir / f"bits{bits}", tracker, RunSettings(threads=args.threads))
        last = {k: v[-1][1] for k, v in tracker.metrics.items()}
        run = {stage: {m: _num(last[f"{stage}_{m}"]) for m in SHOWN} for stage in STAGES}
        run["prune"].update({k.replace("prune_", ""): v for k, v in last.items() if k.startswith("prune_sparsity")})
        run.update(fp32_bytes=int(final["fp32_bytes"]), qat_epochs=cfg["qat_epochs"], wall_s=time.perf_counter() - t0)
        run["breakdown"] = packed.size_breakdown(workdir / f"bits{bits}" / "model" / packed.ARTIFACT_NAME)
        if bits == 8:  # the same file through torch's int8 dynamic kernels (LSTM + Linear)
            path = workdir / "bits8" / "model" / packed.ARTIFACT_NAME
            plain, enc, saved_cfg = packed.load_packed(path, runtime=False)
            dev_enc = encode_split(dev, enc, saved_cfg["max_length"])
            int8 = to_int8_dynamic(plain)
            run["int8_dynamic"] = {"accuracy": accuracy_percent(predict(int8, dev_enc), dev.labels),
                                   **inference_speed(int8, dev_enc, threads=args.threads)}
        results["runs"][bits] = run
        print(report(bits, run), flush=True)
    results["latency"] = latency_table(workdir, args.bits, dev, args.latency_threads, args.latency_rounds)
    accs = {run["distill"]["accuracy"] for run in results["runs"].values()}
    results["distillation_repeats_exactly"] = len(accs) == 1
    print(f"distillation repeated exactly across runs: {results['distillation_repeats_exactly']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    rows = [{"bits": b, "stage": stage, **run[stage]} for b, run in results["runs"].items() for stage in STAGES]
    metrics = {}
    for b, run in results["runs"].items():
        d, q = run["distill"], run["quantize"]
        metrics[f"bits{b}_size_fraction"] = q["size_bytes"] / d["size_bytes"]
        metrics[f"bits{b}_accuracy_change_pp"] = q["accuracy"] - d["accuracy"]
    metrics["wall_s"] = time.perf_counter() - started
    log_run("compress_sst2", args.tracking_uri, {k: v for k, v in vars(args).items()}, metrics,
            {"stages.csv": pd.DataFrame(rows)})
    print("SUMMARY: " + "; ".join(
        f"{b}-bit + 50% pruned: {metrics[f'bits{b}_size_fraction']:.1%} of the fp32 file, "
        f"{metrics[f'bits{b}_accuracy_change_pp']:+.2f} pp" for b in results["runs"])
        + f" ({args.train_rows:,} training rows, {args.epochs} epochs, {metrics['wall_s']:.0f} s)")
    return results


def latency_table(workdir: Path, bits: list[int], dev, threads: int, rounds: int) -> dict:
    """CPU speed of the saved students, measured in interleaved rounds; per model the best round
    (lowest median batch-1 latency, highest batch-256 throughput), so that load from other
    processes on a shared CPU inflates the numbers as little as possible."""
    from trainables.formats import load_student

    first = workdir / f"bits{bits[0]}"
    models = {"fp32 (dense file)": load_student(first / "stages" / "distill" / "student.safetensors")[0]}
    for b in bits:
        models[f"{b}-bit + 50% (packed, float32 compute)"] = load_student(first.parent / f"bits{b}" / "model" /
                                                                         packed.ARTIFACT_NAME)[0]
    plain = packed.load_packed(first.parent / f"bits{bits[0]}" / "model" / packed.ARTIFACT_NAME, runtime=False)[0]
    models[f"{bits[0]}-bit file, torch int8 dynamic"] = to_int8_dynamic(plain)
    enc, cfg = load_student(first / "stages" / "distill" / "student.safetensors")[1:]
    dev_enc = encode_split(dev, enc, cfg["max_length"])
    best: dict = {}
    for _ in range(rounds):
        for name, model in models.items():
            m = inference_speed(model, dev_enc, repeats=100, threads=threads)
            old = best.get(name)
            best[name] = m if old is None else {"latency_ms": min(old["latency_ms"], m["latency_ms"]),
                                                "throughput": max(old["throughput"], m["throughput"])}
    print(f"== CPU speed ({threads} threads; best of {rounds} interleaved rounds) ==")
    for name, m in best.items():
        print(f"{name:<44}{m['latency_ms']:>8.2f} ms (batch 1){m['throughput']:>9.0f} ex/s (batch 256)")
    return best


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def report(bits: int, run: dict) -> str:
    d, p, q = run["distill"], run["prune"], run["quantize"]
    lines = [f"== BiLSTM glove-100, 50% Top-V (local, every part) + {bits}-bit per-row affine"
             f" (QAT epochs {run['qat_epochs']}), {run['wall_s']:.0f} s =="]
    lines.append(f"{'stage':<10}{'acc %':>8}{'size B':>11}{'gzip B':>11}{'nonzero':>10}{'lat ms':>8}{'ex/s':>9}")
    for name, m in (("fp32", d), ("pruned", p), (f"{bits}-bit", q)):
        lines.append(f"{name:<10}{m['accuracy']:>8.2f}{m['size_bytes']:>11,}{m['gzip_bytes']:>11,}"
                     f"{m['nonzero_params']:>10,}{m['latency_ms']:>8.2f}{m['throughput']:>9.0f}")
    if "int8_dynamic" in run:
        r = run["int8_dynamic"]
        lines.append(f"{'int8 dyn':<10}{r['accuracy']:>8.2f}{'(same file)':>22}{'':>10}{r['latency_ms']:>8.2f}"
                     f"{r['throughput']:>9.0f}")
    lines.append(f"size: {q['size_bytes'] / d['size_bytes']:.1%} of the fp32 file ({d['size_bytes']:,} B), "
                 f"{q['size_bytes'] / run['fp32_bytes']:.1%} of 4 x params ({run['fp32_bytes']:,} B); "
                 f"accuracy change {q['accuracy'] - d['accuracy']:+.2f} pp "
                 f"(pruned {p['accuracy'] - d['accuracy']:+.2f})")
    lines.append(f"achieved sparsity: {', '.join(f'{k} {v:.3f}' for k, v in p.items() if k.startswith('sparsity'))}")
    lines.append("bytes of the compressed file: " + ", ".join(f"{k} {v:,}" for k, v in run["breakdown"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main_guard(main)
