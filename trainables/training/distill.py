"""Knowledge distillation of a student from teacher logits, with early stopping on a validation split carved from the training data.

Loss (Featherweight thesis, section 5.2; Hinton et al. 2015; Tang et al. 2019):

    L = alpha * CE(student, label) + (1 - alpha) * D
    D = MSE(student logits, teacher logits)                         (distill_loss = "mse")
    D = T^2 * KL(softmax(teacher / T) || softmax(student / T))       (distill_loss = "kl")

The thesis found raw-logit MSE better for the BiLSTM and T = 3 softmax better for the FFN.
Training is deterministic for a given seed on CPU (seeded init, seeded shuffling,
deterministic kernels). The state returned is the best validation epoch's, not the last.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.training.encoded import Encoded, predict
from trainables.training.metrics import accuracy_percent


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, alpha: float,
                 kind: str = "mse", temperature: float = 1.0) -> torch.Tensor:
    """The distillation loss above.

    Args:
        student, teacher: logits of shape (batch, num_labels).
        labels: (batch,) int64.
        alpha: weight of the label cross-entropy, in [0, 1].
        kind: ``mse`` or ``kl``.
        temperature: T of the ``kl`` form (ignored by ``mse``).

    Returns:
        A scalar tensor (mean over the batch).

    Raises:
        ValueError: unknown kind.
    """
    ce = F.cross_entropy(student, labels) if alpha > 0 else student.new_zeros(())
    if alpha >= 1:
        return ce
    if kind == "mse":
        d = F.mse_loss(student, teacher)
    elif kind == "kl":
        t = temperature
        d = t * t * F.kl_div(F.log_softmax(student / t, -1), F.softmax(teacher / t, -1), reduction="batchmean")
    else:
        raise ValueError(f"unknown distill_loss {kind!r}; allowed: mse, kl")
    return alpha * ce + (1 - alpha) * d


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                            pool: int = 50) -> list[torch.Tensor]:
    """Shuffled batches of similar-length rows (fewer padded time steps for the recurrent students).

    Rows are shuffled, cut into pools of ``pool * batch_size`` rows, each pool sorted by length
    and cut into batches, and the batch order shuffled again; all draws come from ``generator``.

    Args:
        lengths: (n,) token counts.

    Returns:
        Index tensors covering every row exactly once.
    """
    order = torch.randperm(len(lengths), generator=generator)
    batches = []
    for s in range(0, len(order), pool * batch_size):
        chunk = order[s: s + pool * batch_size]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``adam``, ``adamw`` or ``sgd`` (momentum 0.9) over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; allowed: adam, adamw, sgd")


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        best_epoch: 1-based epoch whose weights were kept.
        best_accuracy: its validation accuracy, percent.
        history: one dict per epoch: ``epoch``, ``train_loss``, ``val_accuracy`` (validation split, percent), ``epoch_time_s``.
        stopped_at_epoch: the epoch after which ``on_epoch`` stopped training, else ``None``.
        train_time_s: wall time of all epochs, seconds (validation included; with ``resume``,
            the earlier attempt's epochs count too).
    """

    best_epoch: int
    best_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0
    stopped_at_epoch: int | None = None


@dataclass
class TrainState:
    """Everything :func:`train` needs to continue after a completed epoch, exactly as if it had
    not stopped (a retried Ray Tune trial resumes from it).

    Attributes:
        epoch: the last completed epoch (1-based).
        model: the student's ``state_dict`` after that epoch.
        optimizer: the optimizer's ``state_dict``.
        best: the best epoch's ``state_dict``, or ``None`` when it is ``model`` (the last epoch was best).
        best_epoch, best_accuracy: the best epoch so far and its validation accuracy (percent).
        stale: epochs since the best one (early stopping).
        stopped: early stopping ended training at ``epoch``.
        shuffle_rng, torch_rng: the batch-order generator's and torch's global RNG states
            (uint8 tensors): dropout and shuffling continue as in an uninterrupted run.
        history: the epochs' rows so far.
        train_time_s: seconds spent in those epochs.
        cuda_rng: the CUDA generator's state of the training device (uint8 tensor), or ``None``
            when training ran on the CPU.
    """

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best: dict[str, torch.Tensor] | None
    best_epoch: int
    best_accuracy: float
    stale: int
    stopped: bool
    shuffle_rng: torch.Tensor
    torch_rng: torch.Tensor
    history: list[dict[str, float]]
    train_time_s: float
    cuda_rng: torch.Tensor | None = None

    def save(self, path: str | Path) -> None:
        """Write the state with ``torch.save`` (tensors, numbers and strings only)."""
        torch.save(self.__dict__, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainState:
        """Read a state written by :meth:`save`, with ``torch.load(weights_only=True)`` (no code runs).

        Raises:
            FileNotFoundError: no file at ``path``.
            pickle.UnpicklingError: the file holds objects other than tensors and plain containers.
        """
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


def train(model: nn.Module, train_data: Encoded, val_data: Encoded, config: Mapping[str, Any],
          on_epoch: Callable[[dict[str, float]], None] | None = None,
          aux_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
          resume: TrainState | None = None,
          on_state: Callable[[TrainState], None] | None = None,
          halt: Callable[[], bool] | None = None) -> TrainResult:
    """Distil ``model`` on ``train_data`` and leave it holding the best validation epoch's weights.

    ``val_data`` is the validation split (carved from the training data, never dev): early
    stopping and the best epoch are chosen on it.

    Trains on the device ``model`` is on (CPU or CUDA); data moves there batch by batch.

    Uses config keys ``seed, optimizer, lr, weight_decay, batch_size, epochs, patience, alpha,
    distill_loss, temperature`` and ``max_grad_norm`` (gradient clipping by global L2 norm,
    Pascanu et al. 2013; 0 or absent: none). ``train_data.teacher`` must hold the teacher logits.

    Args:
        on_epoch: called after each epoch with that epoch's history row (e.g. to report to Tune).
            It runs while the model holds the epoch's (not the best) weights. When it returns
            ``True`` training stops after that epoch (a scheduler's decision), keeping the best
            epoch's weights as usual, and ``TrainResult.stopped_at_epoch`` says when.
        aux_loss: called after each forward pass with the batch's row indices (int64 tensor);
            the scalar it returns is added to the loss (e.g. Patient KD,
            :func:`trainables.models.transformer.prepare`).
        resume: continue after the epoch this state was taken at (same model, data and config);
            on CPU the result equals an uninterrupted run's exactly.
        on_state: called after each epoch, before ``on_epoch``, with the state to resume from
            (e.g. to save it with the epoch's checkpoint). The state is a CPU copy of the
            weights, the optimizer's moments and, when the epoch is not the best one, the best
            weights; without ``on_state`` no copy is made.
        halt: asked after every batch (e.g. whether a time budget is spent). When it returns
            ``True`` the epoch ends there: it is validated and reported like any other (its
            row has ``partial_epoch`` 1.0), and training stops after it
            (``TrainResult.stopped_at_epoch``); a resume from its state trains no further.

    Raises:
        ValueError: no teacher logits, unknown optimizer/loss, or ``resume`` from a longer run
            than ``config["epochs"]``.
    """
    if train_data.teacher is None:
        raise ValueError("train_data has no teacher logits")
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(config["seed"]))
    opt = make_optimizer(config["optimizer"], model.parameters(), float(config["lr"]), float(config["weight_decay"]))
    bs, patience, epochs = int(config["batch_size"]), int(config["patience"]), int(config["epochs"])
    alpha, kind, temp = float(config["alpha"]), config["distill_loss"], float(config["temperature"])
    clip = float(config.get("max_grad_norm", 0.0))
    result = TrainResult(best_epoch=0, best_accuracy=-1.0)
    best_state, stale, stopped, first, earlier_s = None, 0, False, 1, 0.0
    if resume is not None:
        if resume.epoch > epochs:
            raise ValueError(f"cannot resume after epoch {resume.epoch} of a {epochs}-epoch training")
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        gen.set_state(resume.shuffle_rng)
        torch.set_rng_state(resume.torch_rng)
        if resume.cuda_rng is not None and device.type == "cuda":
            torch.cuda.set_rng_state(resume.cuda_rng, device)
        best_state = copy.deepcopy(resume.best if resume.best is not None else resume.model)
        result.best_epoch, result.best_accuracy = resume.best_epoch, resume.best_accuracy
        result.history = [dict(row) for row in resume.history]
        stale, stopped, first, earlier_s = resume.stale, resume.stopped, resume.epoch + 1, resume.train_time_s
    start = time.perf_counter()
    for epoch in range(first, epochs + 1):
        if stopped:
            break
        t0 = time.perf_counter()
        model.train()
        total, batches, halted = 0.0, 0, False
        for idx in length_bucketed_batches(train_data.len_a, bs, gen):
            loss = distill_loss(model(*train_data.inputs(idx, device)), train_data.teacher[idx].to(device),
                                train_data.labels[idx].to(device), alpha, kind, temp)
            if aux_loss is not None:
                loss = loss + aux_loss(idx)
            opt.zero_grad()
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            total, batches = total + loss.item(), batches + 1
            if halt is not None and halt():
                halted = True
                break
        acc = accuracy_percent(predict(model, val_data), val_data.labels.numpy())
        row = {"epoch": epoch, "train_loss": total / max(batches, 1), "val_accuracy": acc,
               "epoch_time_s": time.perf_counter() - t0}
        if halted:
            row["partial_epoch"] = 1.0
        result.history.append(row)
        if acc > result.best_accuracy:
            result.best_epoch, result.best_accuracy, stale = epoch, acc, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        stopped = bool(patience and stale >= patience) or halted
        if on_state is not None:
            on_state(TrainState(
                epoch=epoch, model=cpu_copy(model.state_dict()), optimizer=cpu_copy(opt.state_dict()),
                best=None if result.best_epoch == epoch else cpu_copy(best_state), best_epoch=result.best_epoch,
                best_accuracy=result.best_accuracy, stale=stale, stopped=stopped, shuffle_rng=gen.get_state(),
                torch_rng=torch.get_rng_state(), history=[dict(r) for r in result.history],
                train_time_s=earlier_s + time.perf_counter() - start,
                cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None))
        told_to_stop = on_epoch is not None and on_epoch(row)  # the caller stops training here
        if (told_to_stop or halted) and epoch < epochs:
            result.stopped_at_epoch = epoch
            break
    model.load_state_dict(best_state)
    model.eval()
    result.train_time_s = earlier_s + time.perf_counter() - start
    return result


def cpu_copy(state: Any) -> Any:
    """A detached CPU copy of a (nested) state dict: tensors copied, containers rebuilt, other values kept."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(v) for v in state)
    return state
