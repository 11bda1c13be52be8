"""One trial, from config to measured, saved, tracked student, as a flat sequence of stages.

:func:`run_trial` is plain Python (used by replays, benchmarks, tests and the Ray Tune
trainable of :mod:`trainables.trial.trainable`). It reads top to bottom:

1. ``resolve``: the config (and the student of ``init_run_id``, when set);
2. :func:`prepare`: fit the token encoder on the training rows, build the student, encode
   the transfer set and the dev split;
3. ``restore``: continue after an epoch checkpoint, when given one
   (:mod:`trainables.trial.checkpoint`);
4. :func:`distill_stage`: distillation with early stopping, energy metered per epoch, an epoch
   checkpoint and a report after each epoch;
5. :func:`compress_stage` for ``prune`` and ``quantize`` (:mod:`trainables.compression`);
6. after each stage :func:`save_and_evaluate`: save its student (dense after distil, packed after
   prune/quantize), evaluate the *saved file* on dev, measure size and speed (logged as
   ``<stage>_<metric>`` when there are several stages); the last stage's file is the trial's
   ``model/`` and its metrics the unprefixed ones;
7. :func:`finish`: inference energy, the final metrics one step after the last epoch, the model
   artifact and the MLflow model (:mod:`trainables.trial.records`).

All of a trial's mutable state is one :class:`TrialState`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainables import energy
from trainables.compression.prune import prune_student
from trainables.compression.quantize import quantize_student
from trainables.config import ARCHITECTURE_KEYS, parse_stages, resolve_config, upgrade_config
from trainables.data import augment
from trainables.formats import (
    ARTIFACT_NAME,
    PACKED_NAME,
    load_packed,
    load_student,
    read_metadata,
    save_packed,
    save_student,
)
from trainables.models import transformer as transformer_model
from trainables.models.embeddings import build_encoder
from trainables.models.students import build_student, count_params
from trainables.models.transformer import TransformerStudent
from trainables.tracking import MemoryTracker, Tracker, environment_tags
from trainables.training.distill import TrainState, cpu_copy, train
from trainables.training.encoded import encode_split, predict
from trainables.training.metrics import accuracy_percent, inference_speed, task_metrics
from trainables.trial.checkpoint import (
    TrialCheckpoint,
    continued_energy,
    usable_checkpoint,
    write_progress,
    write_rewind,
)
from trainables.trial.records import log_student_model, model_tags, trial_datasets
from trainables.trial.state import RunSettings, TrialData, seed_everything, with_validation

log = logging.getLogger(__name__)

#: ``report(metrics, checkpoint folder)`` after each epoch, ``report(final metrics, None)`` at the end.
#: An epoch's call returns a reason (e.g. ``"scheduler"``, ``"time_budget"``) to stop distillation
#: after that epoch: the trial then finishes as usual from its best epoch, tagged ``early_stopped``,
#: ``stopped_at_epoch`` and ``stop_reason``; ``None`` (or ``""``) continues.
ReportFn = Callable[[dict[str, Any], "Path | None"], "str | None"]


@dataclass
class Prepared:
    """A trial's student and encoded data, ready for :func:`trainables.training.distill.train`.

    Attributes:
        encoder: the text encoder (tokenizer + vocabulary) of the student.
        model: the student, on the requested device.
        train_enc, val_enc, dev_enc: the encoded transfer set (with teacher logits), validation
            split (what selects: early stopping, best epoch, scheduler, objective) and dev split
            (what is reported as ``accuracy``).
        aux_loss: an extra loss term for :func:`trainables.training.distill.train` (Patient KD), or ``None``.
        metrics, tags: what the preparation measured (augmentation cost, Patient KD set-up),
            for the trial's run.
    """

    encoder: Any
    model: torch.nn.Module
    train_enc: Any
    val_enc: Any
    dev_enc: Any
    aux_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class TrialState:
    """Everything a trial's stages read and write (one per :func:`run_trial` call).

    Attributes:
        cfg: the resolved config; data, workdir, tracker, settings, report: as given to :func:`run_trial`.
        prep: the student and its encoded data (:func:`prepare`).
        meter: the training energy meter; readings: its windows so far (epochs, compression stages).
        rows: the per-epoch metrics logged so far (kept in the checkpoint for a resumed run).
        rewind: ``prune_schedule=imp``: ``{"epoch", "state"}``, the weights pruning rewinds to.
        train_time_s, best_epoch: of the training stages (seconds; ``None`` without distillation).
        stopped_at_epoch: the epoch after which ``report`` or ``halt`` stopped distillation, else ``None``.
        halt: as given to :func:`run_trial`.
        final, saved: the last stage's metrics and the model loaded from its saved file.
    """

    cfg: dict[str, Any]
    data: TrialData
    workdir: Path
    tracker: Tracker
    settings: RunSettings
    report: ReportFn | None
    prep: Prepared
    meter: energy.EnergyMeter
    readings: list[energy.EnergyReading] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)
    rewind: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "state": None})
    train_time_s: float = 0.0
    best_epoch: int | None = None
    stopped_at_epoch: int | None = None
    final: dict[str, Any] = field(default_factory=dict)
    saved: torch.nn.Module | None = None
    halt: Callable[[], bool] | None = None

    @property
    def checkpoint_dir(self) -> Path:
        """Where the epoch checkpoint is written (``<workdir>/checkpoint``)."""
        return self.workdir / "checkpoint"

    @property
    def imp(self) -> bool:
        """See :func:`uses_imp`."""
        return uses_imp(self.cfg)


def uses_imp(cfg: Mapping[str, Any]) -> bool:
    """Iterative magnitude pruning: surviving weights are reset to those after epoch ``rewind_epoch``
    (0: before training); the rewind point travels with the epoch checkpoints."""
    return "prune" in parse_stages(cfg["stages"]) and cfg["prune_schedule"] == "imp"


def run_trial(config: Mapping[str, Any], data: TrialData, workdir: str | Path, tracker: Tracker | None = None,
              settings: RunSettings | None = None, report: ReportFn | None = None,
              run_name: str = "trial", resume_from: str | Path | None = None,
              halt: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run one distillation trial and return its final metrics.

    Args:
        config: a (partial) trial config, resolved with :func:`trainables.config.resolve_config`.
        data: the splits and teacher logits.
        workdir: the trial's own folder (epoch checkpoints and the final ``model/``).
        tracker: where params, metrics, tags and the model go (default: in memory).
        report: called after each epoch with its metrics and checkpoint folder, and once at the
            end with the final metrics and ``None``.
        resume_from: a checkpoint folder an earlier attempt of this trial reported (see
            :func:`trainables.trial.checkpoint.load_checkpoint`): distillation continues after its
            epoch, exactly as if uninterrupted on CPU; the earlier epochs' metrics are logged again
            to this run (tag ``resumed_from_epoch``) and their measured energy counts towards
            ``energy_j``. A folder that cannot be resumed from is skipped with a warning (tag
            ``resume_skipped``).
        halt: asked after every distillation batch (:func:`trainables.training.distill.train`):
            ``True`` ends the epoch there and distillation after it (e.g. a spent time budget;
            tags ``early_stopped``, ``stopped_at_epoch``, ``stop_reason`` = ``halt`` unless
            ``report`` gave a reason).

    Returns:
        Final metrics: ``accuracy`` (dev, percent; ``f1`` for QQP), ``val_accuracy`` (the
        validation split carved from train, percent; what the search selects on), ``num_params``,
        ``nonzero_params``, ``size_bytes``, ``gzip_bytes``, ``weights_bytes``, ``fp32_bytes``,
        ``compression_ratio``, ``train_time_s``, ``latency_ms``, ``throughput``, ``best_epoch``,
        the energy metrics when measured, and ``energy_method`` (also a tag).

    Raises:
        ConfigError: invalid config. Any training error is re-raised after the run is marked FAILED.
    """
    settings = settings or RunSettings()
    tracker = tracker or MemoryTracker()
    workdir = Path(workdir)
    if data.val is None:  # nothing that selects may see dev: hold out the default validation split
        data = with_validation(data)
    cfg, init, settings = _resolve(config, tracker, workdir, settings)
    torch.set_num_threads(settings.threads or 1)
    seed_everything(cfg["seed"])
    tags = {**settings.tags, **environment_tags(), "seed": str(cfg["seed"]), "data_hash": data.train.data_hash,
            "val_data_hash": data.val.data_hash, "dev_data_hash": data.dev.data_hash, "teacher_id": data.teacher_id,
            "task": data.train.task}
    tracker.start(run_name, params=cfg, tags=tags)
    try:
        tracker.log_datasets(trial_datasets(data))
        final = _stages(cfg, data, workdir, tracker, settings, report, init, resume_from, halt)
    except BaseException as e:
        tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:4000]})
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return final


def _stages(cfg: dict[str, Any], data: TrialData, workdir: Path, tracker: Tracker, settings: RunSettings,
            report: ReportFn | None, init: tuple[Any, torch.nn.Module] | None,
            resume_from: str | Path | None, halt: Callable[[], bool] | None = None) -> dict[str, Any]:
    ckpt = usable_checkpoint(resume_from, uses_imp(cfg), tracker) if resume_from is not None else None
    if ckpt is not None and init is None and cfg["student"] != "transformer":
        # the checkpoint's own encoder (a vocabulary learnt from text is not rebuilt); weights come from its state
        model, encoder, _ = load_student(ckpt.folder / ARTIFACT_NAME)
        init = (encoder, model)
    prep = prepare(cfg, data, settings.device, init)
    if prep.metrics:
        tracker.log_metrics(prep.metrics)
    if prep.tags:
        tracker.set_tags(prep.tags)
    # the GPUs this trial trains on (none on CPU: an idle GPU's draw is not this trial's)
    meter = energy.make_meter(gpu_indices=None if settings.device == "cuda" else [],
                              cpu_watts_per_core=settings.cpu_watts_per_core)
    state = TrialState(cfg, data, workdir, tracker, settings, report, prep, meter, halt=halt)
    restore(state, ckpt)
    stages = parse_stages(cfg["stages"])
    if "distill" in stages:
        distill_stage(state, ckpt.state if ckpt is not None else None)
    if getattr(prep.model, "keep_layers", ()):  # Patient KD is a distillation loss: later stages skip its hidden states
        prep.model.keep_layers = ()
    for i, stage in enumerate(stages):
        folder = workdir / "model" if i == len(stages) - 1 else workdir / "stages" / stage
        if stage == "distill":
            path = folder / ARTIFACT_NAME
            sizes = save_student(prep.model, cfg, prep.encoder, data.train.num_labels, data.train.is_pair, path)
            extra: dict[str, float] = {}
        else:
            path, sizes, extra = compress_stage(state, stage, folder)
        save_and_evaluate(state, stage, folder, path, sizes, extra, several=len(stages) > 1)
    return finish(state)


def _resolve(config: Mapping[str, Any], tracker: Tracker, workdir: Path, settings: RunSettings
             ) -> tuple[dict[str, Any], tuple[Any, torch.nn.Module] | None, RunSettings]:
    """Stage 1: the resolved config, and the ``(encoder, model)`` of ``init_run_id`` when set."""
    cfg = resolve_config(config)
    if not cfg["init_run_id"]:
        return cfg, None, settings
    # further compression of an earlier run's student: its architecture, its weights
    model, encoder, source_cfg = load_student(tracker.fetch_student(cfg["init_run_id"], workdir / "init"))
    source_cfg = upgrade_config(source_cfg)
    # resolved again so that student-dependent defaults and checks follow the source student
    cfg = resolve_config({**config, **{k: source_cfg[k] for k in ARCHITECTURE_KEYS if k in source_cfg}})
    settings = replace(settings, tags={**settings.tags, "source_run_id": cfg["init_run_id"]})
    return cfg, (encoder, model), settings


def _build_from_teacher(cfg: dict[str, Any], data: TrialData, split: Any, rows: np.ndarray | None,
                        texts: list[str]) -> tuple[Any, torch.nn.Module, Any, dict[str, float]]:
    """``student: transformer``: the teacher's tokenizer and first k layers (+ Patient KD)."""
    return transformer_model.prepare(data.teacher_path, cfg, split, rows, split.num_labels, split.is_pair)


def _build_from_embedding(cfg: dict[str, Any], data: TrialData, split: Any, rows: np.ndarray | None,
                          texts: list[str]) -> tuple[Any, torch.nn.Module, Any, dict[str, float]]:
    """BiLSTM, RNN and FFN students: an encoder fitted on the training texts, then the student."""
    encoder = build_encoder(cfg["embedding"], texts, cfg["vocab_size"])
    return encoder, build_student(cfg, encoder, split.num_labels, split.is_pair), None, {}


#: ``student`` -> how a new student and its encoder are made (default: :func:`_build_from_embedding`).
STUDENT_FACTORIES = {"transformer": _build_from_teacher}


def prepare(cfg: dict[str, Any], data: TrialData, device: str = "cpu",
            init: tuple[Any, torch.nn.Module] | None = None) -> Prepared:
    """Stage 2: build a trial's student and its encoded transfer set from a resolved config.

    The transfer set is the trial's training rows (the first ``max_train_examples`` of a
    seeded shuffle; all when 0) plus the driver's teacher-labelled augmentation rows. Data
    without a validation split gets the default one (:func:`trainables.trial.state.with_validation`).

    Args:
        cfg: a resolved config (:func:`trainables.config.resolve_config`).
        data: the splits and teacher logits.
        device: where the student goes (``cpu`` or ``cuda``).
        init: ``(encoder, model)`` to start from instead of a new student (``init_run_id``).

    Raises:
        ConfigError: a config the data cannot serve (e.g. augmentation the driver did not prepare).
    """
    if data.val is None:
        data = with_validation(data)
    rows = None
    if cfg["max_train_examples"] and cfg["max_train_examples"] < len(data.train):
        rows = np.random.default_rng(cfg["seed"]).permutation(len(data.train))[: cfg["max_train_examples"]]
    # the transfer set: the trial's rows plus the driver's teacher-labelled synthetic rows made from them
    split, logits, rows, aug_metrics, aug_tags = augment.transfer_set(data, cfg, rows)
    metrics, tags = dict(aug_metrics or {}), dict(aug_tags or {})
    texts = split.texts() if rows is None else [split.text_a[i] for i in rows] + (
        [split.text_b[i] for i in rows] if split.is_pair else [])
    aux_loss = None
    if init is not None:  # (encoder, model) of the student named by init_run_id (or of a checkpoint)
        encoder, model = init
        if isinstance(model, TransformerStudent):
            aux_loss, pkd_metrics = transformer_model.patient_kd(data.teacher_path, cfg, model, split, rows)
            metrics.update(pkd_metrics)
    else:
        factory = STUDENT_FACTORIES.get(cfg["student"], _build_from_embedding)
        encoder, model, aux_loss, built_metrics = factory(cfg, data, split, rows, texts)
        metrics.update(built_metrics or {})
    return Prepared(encoder, model.to(device), encode_split(split, encoder, cfg["max_length"], logits, rows),
                    encode_split(data.val, encoder, cfg["max_length"]), encode_split(data.dev, encoder, cfg["max_length"]),
                    aux_loss, metrics, tags)


def restore(state: TrialState, ckpt: TrialCheckpoint | None) -> None:
    """Stage 3: the rewind point, energy and logged curve of an earlier attempt (or the rewind
    point of epoch 0 for a fresh ``imp`` trial)."""
    if state.imp and ckpt is not None:
        _keep_rewind_point(state, ckpt.rewind["epoch"], ckpt.rewind["state"])
    elif state.imp and state.cfg["rewind_epoch"] == 0:
        _keep_rewind_point(state, 0)
    if ckpt is None:
        return
    state.readings.append(continued_energy(ckpt.energy, state.meter.method))
    state.tracker.set_tags({"resumed_from_epoch": str(ckpt.state.epoch)})
    for row in ckpt.rows:  # the earlier attempt's curve, so that this run's is whole
        state.tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        state.rows.append(row)


def _keep_rewind_point(state: TrialState, epoch: int, weights: dict[str, torch.Tensor] | None = None) -> None:
    weights = cpu_copy(state.prep.model.state_dict()) if weights is None else weights
    state.rewind.update(epoch=epoch, state=weights)
    write_rewind(state.checkpoint_dir, epoch, weights)


class _EpochCheckpointer:
    """After each distillation epoch: meter, save the epoch's student and checkpoint, log, report.

    :func:`trainables.training.distill.train` hands over the resumable state (``on_state``)
    just before the epoch's row (``on_epoch``).
    """

    def __init__(self, state: TrialState):
        self.state = state
        self.train_state: TrainState | None = None
        self.stop_reason: str | None = None

    def on_state(self, train_state: TrainState) -> None:
        self.train_state = train_state

    def on_epoch(self, row: dict[str, float]) -> bool:
        s = self.state
        s.readings.append(s.meter.stop())
        metrics = dict(row)
        so_far = energy.sum_readings(s.readings)
        if so_far.joules is not None:
            metrics["energy_j"] = so_far.joules
        sizes = save_student(s.prep.model, s.cfg, s.prep.encoder, s.data.train.num_labels, s.data.train.is_pair,
                             s.checkpoint_dir / ARTIFACT_NAME)
        metrics.update(size_bytes=sizes["size_bytes"], gzip_bytes=sizes["gzip_bytes"])
        s.tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=int(row["epoch"]))
        s.rows.append(metrics)
        # the rest of the checkpoint, written outside the metered window like the student
        write_progress(s.checkpoint_dir, self.train_state, so_far, s.rows)
        if s.imp and row["epoch"] <= s.cfg["rewind_epoch"]:  # overwritten up to `rewind_epoch` (or an early stop)
            _keep_rewind_point(s, int(row["epoch"]))
        self.stop_reason = (s.report(metrics, s.checkpoint_dir) or None) if s.report is not None else None
        s.meter.start()
        return self.stop_reason is not None


def distill_stage(state: TrialState, resume: TrainState | None = None) -> None:
    """Stage 4: distil the student (energy metered per epoch; each epoch checkpointed and reported)."""
    state.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    epochs = _EpochCheckpointer(state)
    state.meter.start()
    result = train(state.prep.model, state.prep.train_enc, state.prep.val_enc, state.cfg, epochs.on_epoch,
                   state.prep.aux_loss, resume, on_state=epochs.on_state, halt=state.halt)
    state.meter.stop()  # the window after the last epoch (early-stopping bookkeeping) is not training
    state.train_time_s, state.best_epoch = result.train_time_s, result.best_epoch
    state.stopped_at_epoch = result.stopped_at_epoch
    if result.stopped_at_epoch is not None:
        state.tracker.set_tags({"early_stopped": "true", "stopped_at_epoch": str(result.stopped_at_epoch),
                                "stop_reason": str(epochs.stop_reason or "halt")})


def _stage_logger(tracker: Tracker, stage: str) -> Callable[[dict[str, float]], None]:
    """Per-epoch logger of a compression stage's fine-tuning: ``<stage>_train_loss``,
    ``<stage>_epoch_val_accuracy`` (validation split, percent) and ``<stage>_epoch_time_s`` at ``step=epoch``."""

    def log_row(row: dict[str, float]) -> None:
        tracker.log_metrics({f"{stage}_train_loss": row["train_loss"], f"{stage}_epoch_val_accuracy": row["val_accuracy"],
                             f"{stage}_epoch_time_s": row["epoch_time_s"]}, step=int(row["epoch"]))

    return log_row


def compress_stage(state: TrialState, stage: str, folder: Path) -> tuple[Path, dict[str, int], dict[str, float]]:
    """Stage 5: prune or quantize the student in place (metered), and save it packed in ``folder``.

    Returns:
        ``(path, sizes, extra metrics)``: the packed file, its sizes (bytes) and, for ``prune``,
        the sparsity achieved per part.
    """
    s, model = state, state.prep.model
    s.meter.start()
    if stage == "prune":
        out = prune_student(model, s.cfg, s.prep.train_enc, s.prep.val_enc, _stage_logger(s.tracker, stage),
                            s.rewind["state"])
        quantized, runtime, extra = None, "float32", out.sparsity
        if s.imp:
            s.tracker.log_metrics({"prune_rewind_epoch": s.rewind["epoch"]})
            if s.rewind["epoch"] != s.cfg["rewind_epoch"]:
                log.warning("early stopping ended distillation at epoch %s, before rewind_epoch=%s; "
                            "rewound to epoch %s", s.rewind["epoch"], s.cfg["rewind_epoch"], s.rewind["epoch"])
    else:
        out = quantize_student(model, s.cfg, s.prep.train_enc, s.prep.val_enc, _stage_logger(s.tracker, stage))
        quantized, runtime, extra = out.tensors, out.runtime, {}
    s.readings.append(s.meter.stop())
    s.train_time_s += out.train_time_s
    path = folder / PACKED_NAME
    sizes = save_packed(model, s.cfg, s.prep.encoder, s.data.train.num_labels, s.data.train.is_pair, path,
                        quantized, runtime)
    return path, sizes, extra


def save_and_evaluate(state: TrialState, stage: str, folder: Path, path: Path, sizes: dict[str, int],
                      extra: Mapping[str, float], several: bool) -> None:
    """Stage 6: write the stage's ``config.yaml`` beside its student file, and measure the student
    loaded from that file (:func:`evaluate_saved`); with ``several`` stages, log them prefixed."""
    (folder / "config.yaml").write_text(yaml.safe_dump(state.cfg, sort_keys=True))
    state.final, state.saved = evaluate_saved(path, sizes, state.data, state.prep.dev_enc, state.cfg,
                                              state.settings.threads or 1, state.prep.val_enc)
    state.final.update(extra)
    if several:
        state.tracker.log_metrics({f"{stage}_{k}": v for k, v in state.final.items()})


def evaluate_saved(path: Path, sizes: dict[str, int], data: TrialData, dev_enc: Any, cfg: dict[str, Any],
                   threads: int, val_enc: Any = None) -> tuple[dict[str, Any], torch.nn.Module]:
    """Metrics of the student saved at ``path``, measured on the model loaded from that file.

    Returns:
        ``(metrics, loaded model)``: task metrics on dev (percent), ``val_accuracy`` (percent, when
        ``val_enc`` is given), ``sizes``, ``latency_ms``, ``throughput``,
        ``num_params``, ``nonzero_params``, ``fp32_bytes`` (4 x num_params) and ``compression_ratio``.
    """
    saved, saved_encoder, _ = load_student(path)
    metrics: dict[str, Any] = task_metrics(data.train.task, predict(saved, dev_enc), data.dev.labels)
    if val_enc is not None:
        metrics["val_accuracy"] = accuracy_percent(predict(saved, val_enc), val_enc.labels.numpy())
    if data.dev_mismatched is not None:
        mm = encode_split(data.dev_mismatched, saved_encoder, cfg["max_length"])
        mm_metrics = task_metrics("mnli", predict(saved, mm), data.dev_mismatched.labels)
        metrics["accuracy_mismatched"] = mm_metrics["accuracy"]
        metrics["accuracy_mean"] = (metrics["accuracy"] + metrics["accuracy_mismatched"]) / 2
    # torch int8 modules hide their weights from parameters(): count on the float32 decoding
    int8 = read_metadata(path).get("runtime") == "int8_dynamic"
    plain = load_packed(path, runtime=False)[0] if int8 else saved
    num_params, nonzero = count_params(plain)
    metrics.update(sizes)
    metrics.update(inference_speed(saved, dev_enc, threads=threads))
    metrics.update(num_params=num_params, nonzero_params=nonzero, fp32_bytes=4 * num_params)
    if data.teacher_bytes:
        metrics["compression_ratio"] = data.teacher_bytes / sizes["size_bytes"]
    return metrics, saved


def finish(state: TrialState) -> dict[str, Any]:
    """Stage 7: CPU inference energy, the final metrics and tags, the model artifact and MLflow model, the last report.

    MLflow shows a metric's value at its highest step, so the saved student's final values are
    logged one step after the last epoch: ``accuracy``, ``size_bytes``... read as the trial's result.
    """
    s = state
    inference_meter = energy.make_meter(gpu_indices=[], cpu_watts_per_core=s.settings.cpu_watts_per_core)
    inference_meter.start()
    predict(s.saved, s.prep.dev_enc)
    inference = inference_meter.stop()
    values, tags = energy.energy_metrics(energy.sum_readings(s.readings), inference, len(s.prep.dev_enc),
                                         s.settings.pue, s.settings.kg_per_kwh)
    final = {**s.final, **values, "train_time_s": s.train_time_s}
    if s.best_epoch is not None:
        final["best_epoch"] = s.best_epoch
    step = len(s.rows) + 1
    s.tracker.log_artifact(s.workdir / "model", "model")
    model_id = log_student_model(s.tracker, s.workdir / "model", s.cfg, model_tags(s.data, s.cfg, s.settings), step)
    s.tracker.log_metrics(final, step=step, model_id=model_id)  # also the logged model's metrics
    s.tracker.set_tags(tags)
    final["energy_method"] = tags["energy_method"]
    final["early_stopped"] = s.stopped_at_epoch is not None  # also a tag (with stopped_at_epoch) when true
    if s.report is not None:
        s.report(final, None)
    return final


__all__ = ["Prepared", "ReportFn", "STUDENT_FACTORIES", "TrialState", "compress_stage",
           "distill_stage", "evaluate_saved", "finish", "prepare", "restore", "run_trial", "save_and_evaluate", "uses_imp"]
