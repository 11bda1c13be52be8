"""Task metrics (accuracy, F1) and CPU inference speed of students.

GLUE conventions (Wang et al. 2019): SST-2 accuracy; QQP accuracy and F1 of the positive
(duplicate) class; MNLI matched accuracy (and mismatched, and their mean, when available).
All metrics are in percent.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from trainables.training.encoded import Encoded


def accuracy_percent(logits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy in percent of argmax(logits) (n, C) against labels (n,)."""
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean() * 100.0)


def f1_percent(logits: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 in percent of class ``positive``; 0 when there are no true or predicted positives."""
    pred = np.asarray(logits).argmax(-1) == positive
    gold = np.asarray(labels) == positive
    tp = float((pred & gold).sum())
    denom = float(pred.sum() + gold.sum())
    return 200.0 * tp / denom if denom else 0.0


def task_metrics(task: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``accuracy`` for every task, plus ``f1`` for QQP (percent)."""
    out = {"accuracy": accuracy_percent(logits, labels)}
    if task == "qqp":
        out["f1"] = f1_percent(logits, labels)
    return out


@torch.no_grad()
def inference_speed(model: nn.Module, data: Encoded, repeats: int = 50, batch: int = 256,
                    threads: int | None = None) -> dict[str, float]:
    """CPU inference speed of ``model`` on rows of ``data``.

    Args:
        repeats: single-example forward passes timed for the latency (after 5 warm-ups).
        batch: batch size of the throughput measurement (at least 3 timed batches).
        threads: torch intra-op threads while measuring (default: as set).

    Returns:
        ``latency_ms`` (median over ``repeats`` batch-1 calls, milliseconds) and ``throughput``
        (examples per second at batch ``batch``).
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    model.eval()
    n = len(data)
    try:
        times = []
        for i in range(repeats + 5):
            row = slice(i % n, i % n + 1)
            t0 = time.perf_counter()
            model(*data.inputs(row))
            if i >= 5:
                times.append(time.perf_counter() - t0)
        done, t0 = 0, time.perf_counter()
        while done < 3 * batch or time.perf_counter() - t0 < 0.2:
            s = (done // batch * batch) % max(n - batch, 1)
            model(*data.inputs(slice(s, s + batch)))
            done += min(batch, n)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    return {"latency_ms": float(np.median(times) * 1000.0), "throughput": done / elapsed}
