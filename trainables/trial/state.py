"""What a trial reads and how it is measured: :class:`TrialData` and :class:`RunSettings`.

Both are built once by the driver and shared by every trial (``tune.with_parameters`` puts
them in Ray's object store).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from trainables.data.glue import DEFAULT_VAL_FRACTION, Split, validation_rows
from trainables.energy import DEFAULT_KG_PER_KWH, DEFAULT_PUE
from trainables.errors import ConfigError


@dataclass
class TrialData:
    """Everything a trial reads, computed once by the driver (shared through Ray's object store).

    Attributes:
        train, dev: the task's splits; ``dev_mismatched`` for MNLI when available.
        train_logits, dev_logits: teacher logits, float32 (n, num_labels).
        teacher_id: see :func:`trainables.data.teacher.teacher_id`.
        teacher_bytes: the teacher's fp32 parameter bytes (for ``compression_ratio``), or ``None``.
        teacher_path: the teacher folder or hub name (``student: transformer`` starts from it).
        augmented: ``(augment_n, augment_p)`` -> :class:`trainables.data.augment.AugmentedSet`, the
            teacher-labelled synthetic rows the driver made (:func:`trainables.data.augment.prepare_for_space`).
        val: the validation split carved from the training data (:func:`with_validation`); early
            stopping, the best epoch, the scheduler and the search objective (``val_accuracy``)
            use it, never ``dev``. ``None`` until carved (:func:`trainables.trial.run_trial` carves
            the default one).
    """

    train: Split
    dev: Split
    train_logits: np.ndarray
    dev_logits: np.ndarray
    teacher_id: str
    teacher_bytes: int | None = None
    dev_mismatched: Split | None = None
    teacher_path: str | None = None
    augmented: dict[tuple[int, float], Any] = field(default_factory=dict)
    val: Split | None = None


def with_validation(data: TrialData, fraction: float = DEFAULT_VAL_FRACTION, size: int = 0, seed: int = 0
                    ) -> TrialData:
    """``data`` with a validation split carved from its training split (:func:`trainables.data.glue.validation_rows`).

    The training split (and its teacher logits) keep the other rows, in order; augmented sets
    must be made afterwards, from the reduced training split.

    Raises:
        ConfigError: bad ``fraction``/``size``, a split that already has one, or augmented sets
            made from the full training split.
    """
    if data.val is not None:
        raise ConfigError("the trial data already has a validation split")
    if data.augmented:
        raise ConfigError("carve the validation split before making augmented transfer sets")
    if len(data.train_logits) != len(data.train):
        raise ConfigError(f"teacher logits have {len(data.train_logits)} rows, the training split {len(data.train)}")
    train_rows, val_rows = validation_rows(len(data.train), fraction, size, seed)
    return replace(data, train=data.train.subset(train_rows, "train"), train_logits=data.train_logits[train_rows],
                   val=data.train.subset(val_rows, "validation"), augmented={})


@dataclass
class RunSettings:
    """Search-level settings that shape measurement, not the model.

    Attributes:
        cpu_watts_per_core: enables the labelled CPU-time energy ``estimate`` (watts per core).
        pue, kg_per_kwh: CO2e factors (Best Way to Squeeze thesis, section 3.4).
        threads: torch intra-op threads (default: CPUs Ray assigned, else 1).
        tags: extra tags for every trial run (``search_id``, ``git_commit``...).
        device: where to train (``cpu`` or ``cuda``); evaluation and speed are measured on CPU.
    """

    cpu_watts_per_core: float | None = None
    pue: float = DEFAULT_PUE
    kg_per_kwh: float = DEFAULT_KG_PER_KWH
    threads: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
