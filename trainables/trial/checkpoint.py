"""The epoch checkpoint of a trial: what it reports to Ray Tune after each epoch.

A checkpoint folder holds (no pickle: tensors are read with ``weights_only=True``):

- ``student.safetensors``: the epoch's student (:mod:`trainables.formats.dense`);
- ``train_state.pt``: :class:`trainables.training.distill.TrainState` (optimizer, best weights,
  early-stopping counters, RNG states);
- ``progress.json``: ``{"energy": training energy so far, "rows": the per-epoch metrics logged}``;
- ``rewind_state.pt`` (``prune_schedule=imp`` only): ``{"epoch": int, "state": state dict}``, the
  weights iterative magnitude pruning rewinds to.

A retried trial, or an unfinished trial of a resumed search, continues after the last epoch
it reported, and on CPU ends with the same student, byte for byte, as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.energy import EnergyReading
from trainables.errors import ConfigError
from trainables.formats import ARTIFACT_NAME
from trainables.tracking import Tracker
from trainables.training.distill import TrainState

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
PROGRESS_FILE = "progress.json"
REWIND_FILE = "rewind_state.pt"


@dataclass
class TrialCheckpoint:
    """An epoch checkpoint of a trial (see the module docstring for its files).

    Attributes:
        folder: where it was read from; it holds the epoch's student (``student.safetensors``).
        state: the training state (``train_state.pt``).
        energy: the training energy measured up to that epoch (``progress.json``).
        rows: the per-epoch metrics logged to MLflow so far, each with its ``epoch`` (``progress.json``).
        rewind: ``prune_schedule=imp``: ``{"epoch": int, "state": state dict}``, the rewind point
            (``rewind_state.pt``); ``None`` when the folder has none.
    """

    folder: Path
    state: TrainState
    energy: EnergyReading
    rows: list[dict[str, float]]
    rewind: dict[str, Any] | None = None


def write_progress(folder: Path, state: TrainState, energy: EnergyReading, rows: list[dict[str, float]]) -> None:
    """Write the checkpoint files besides the student: ``train_state.pt`` and ``progress.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    state.save(folder / STATE_FILE)
    (folder / PROGRESS_FILE).write_text(json.dumps({"energy": asdict(energy), "rows": rows}))


def write_rewind(folder: Path, epoch: int, state: dict[str, torch.Tensor]) -> None:
    """Write the rewind point of iterative magnitude pruning (``rewind_state.pt``)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, "state": state}, folder / REWIND_FILE)


def load_checkpoint(folder: str | Path) -> TrialCheckpoint:
    """Read an epoch checkpoint that a trial wrote (tensors with ``weights_only=True``).

    Raises:
        ConfigError: the folder is not such a checkpoint (a file is missing or unreadable).
    """
    folder = Path(folder)
    missing = [n for n in (ARTIFACT_NAME, STATE_FILE, PROGRESS_FILE) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a trial checkpoint: {', '.join(missing)} missing")
    try:
        state = TrainState.load(folder / STATE_FILE)
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        e = progress["energy"]
        reading = EnergyReading(e["joules"], e["method"], tuple(e["devices"]), e["seconds"])
        rewind = None
        if (folder / REWIND_FILE).is_file():
            rewind = torch.load(folder / REWIND_FILE, map_location="cpu", weights_only=True)
        return TrialCheckpoint(folder, state, reading, list(progress["rows"]), rewind)
    except Exception as err:  # a truncated or foreign file: say which, not a pickle traceback
        raise ConfigError(f"cannot read the trial checkpoint in {folder}: {type(err).__name__}: {err}") from err


def usable_checkpoint(folder: str | Path, imp: bool, tracker: Tracker) -> TrialCheckpoint | None:
    """:func:`load_checkpoint`, or ``None`` when the folder cannot be resumed from (written by an
    earlier version, damaged, or an ``imp`` trial's without its rewind point): then the trial
    trains from its first epoch, says why in a warning, and tags its run ``resume_skipped``."""
    try:
        ckpt = load_checkpoint(folder)
        if not imp or ckpt.rewind is not None:
            return ckpt
        reason = f"{folder} has no rewind point ({REWIND_FILE}) for prune_schedule=imp"
    except ConfigError as err:
        reason = str(err)
    log.warning("not resuming; training from the first epoch: %s", reason)
    tracker.set_tags({"resume_skipped": reason[:4000]})
    return None


def continued_energy(earlier: EnergyReading, method: str) -> EnergyReading:
    """The earlier attempt's training energy, if it can be added to this attempt's (same method);
    otherwise an unmeasured window, so that the trial's ``energy_j`` is absent rather than partial."""
    if earlier.joules is None or earlier.method == method:
        return earlier
    log.warning("the resumed trial's earlier epochs were measured by %s, this attempt by %s; "
                "its training energy is not reported", earlier.method, method)
    return EnergyReading(None, "unavailable", (), earlier.seconds)
