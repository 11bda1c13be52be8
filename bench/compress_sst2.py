"""Benchmark: does compression keep a BiLSTM SST-2 student's accuracy at a fraction of its size?

Acceptance (issue 3): a BiLSTM student pruned to 50% and quantized to 8 bits has ``size_bytes``
at most 30% of its float32 artifact and dev accuracy within 1 pp of the uncompressed student;
the same at 4 bits within 2 pp.

Each run is one :func:`trainables.pipeline.run_trial` with stages ``distill,prune,quantize``
(50% Top-V, local, every part; then 8 or 4 bits on every part), so the uncompressed (``distill_``),
pruned (``prune_``) and quantized (``quantize_``, final) students are each evaluated from their
saved files. The distillation is seeded and repeats exactly in both runs (checked). The 8-bit
file is also run through torch's int8 dynamic kernels for a latency comparison.

Usage:
    python bench/compress_sst2.py [--train-rows 20000] [--epochs 2] [--threads 2] [--json out.json]

Teacher: /work/shared/teachers/minilm-l6-sst2 (logits shipped), data: /work/shared/data/glue.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainables import packed  # noqa: E402
from trainables.data import load_split  # noqa: E402
from trainables.distill import encode_split, predict  # noqa: E402
from trainables.metrics import accuracy_percent, inference_speed  # noqa: E402
from trainables.pipeline import RunSettings, TrialData, run_trial  # noqa: E402
from trainables.quantize import to_int8_dynamic  # noqa: E402
from trainables.teacher import teacher_id, teacher_logits, teacher_size_bytes  # noqa: E402
from trainables.tracking import MemoryTracker  # noqa: E402

SHARED = ROOT.parent / "shared"
STAGES = ("distill", "prune", "quantize")
SHOWN = ("accuracy", "size_bytes", "gzip_bytes", "nonzero_params", "latency_ms", "throughput")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(SHARED / "data" / "glue"))
    ap.add_argument("--teacher", default=str(SHARED / "teachers" / "minilm-l6-sst2"))
    ap.add_argument("--train-rows", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--finetune-epochs", type=int, default=1, help="distillation epochs after pruning")
    ap.add_argument("--qat-epochs", type=int, default=1, help="quantization-aware epochs of the 4-bit run")
    ap.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

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
        run["fp32_bytes"], run["qat_epochs"], run["wall_s"] = int(final["fp32_bytes"]), cfg["qat_epochs"], time.perf_counter() - t0
        run["breakdown"] = packed.size_breakdown(workdir / f"bits{bits}" / "model" / packed.ARTIFACT_NAME)
        if bits == 8:  # the same file through torch's int8 dynamic kernels (LSTM + Linear)
            plain, enc, saved_cfg = packed.load_packed(workdir / "bits8" / "model" / packed.ARTIFACT_NAME, runtime=False)
            dev_enc = encode_split(dev, enc, saved_cfg["max_length"])
            int8 = to_int8_dynamic(plain)
            run["int8_dynamic"] = {"accuracy": accuracy_percent(predict(int8, dev_enc), dev.labels),
                                   **inference_speed(int8, dev_enc, threads=args.threads)}
        results["runs"][bits] = run
        print(report(bits, run), flush=True)
    accs = {run["distill"]["accuracy"] for run in results["runs"].values()}
    results["distillation_repeats_exactly"] = len(accs) == 1
    print(f"distillation repeated exactly across runs: {results['distillation_repeats_exactly']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


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
                 f"accuracy change {q['accuracy'] - d['accuracy']:+.2f} pp (pruned {p['accuracy'] - d['accuracy']:+.2f})")
    lines.append(f"achieved sparsity: {', '.join(f'{k} {v:.3f}' for k, v in p.items() if k.startswith('sparsity'))}")
    lines.append("bytes of the compressed file: " + ", ".join(f"{k} {v:,}" for k, v in run["breakdown"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
