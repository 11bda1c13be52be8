"""The compression trainable: one trial from config to measured, saved, tracked student.

:func:`run_trial` is plain Python (used by replays, benchmarks and tests);
:func:`tune_trainable` wraps it as a Ray Tune function trainable that reports every epoch
with ``ray.tune.report`` (with a checkpoint) and logs to one MLflow child run.

Steps: resolve config -> fit the token encoder on the training split -> encode train/dev
-> build the student -> the config's ``stages`` in order: distil with early stopping (energy
metered per epoch), prune (:mod:`trainables.prune`), quantize (:mod:`trainables.quantize`)
-> after each stage, save its student (dense :mod:`trainables.artifact` after distil, packed
:mod:`trainables.packed` after prune/quantize), evaluate it from the saved file and measure
size and speed (logged as ``<stage>_<metric>`` when there are several stages) -> the last
stage's file is the trial's ``model/`` and its metrics the unprefixed ones -> inference energy
-> log everything.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import yaml

from trainables import artifact, augment, energy, packed, transformer_student
from trainables.config import ARCHITECTURE_KEYS, ConfigError, parse_stages, resolve_config
from trainables.data import Split
from trainables.distill import TrainState, cpu_copy, encode_split, predict, train
from trainables.embeddings import build_encoder
from trainables.metrics import inference_speed, task_metrics
from trainables.prune import prune_student
from trainables.quantize import quantize_student
from trainables.students import build_student, count_params
from trainables.tracking import MemoryTracker, Tracker, environment_tags

log = logging.getLogger(__name__)

#: Files of an epoch checkpoint besides the student (see :func:`load_checkpoint`).
STATE_FILE = "train_state.pt"  # trainables.distill.TrainState
PROGRESS_FILE = "progress.json"  # {"energy": training energy so far, "rows": the per-epoch metrics logged}
REWIND_FILE = "rewind_state.pt"  # prune_schedule=imp: {"epoch": int, "state": state dict}

ReportFn = Callable[[dict[str, Any], "Path | None"], None]


@dataclass
class TrialData:
    """Everything a trial reads, computed once by the driver (shared through Ray's object store).

    Attributes:
        train, dev: the task's splits; ``dev_mismatched`` for MNLI when available.
        train_logits, dev_logits: teacher logits, float32 (n, num_labels).
        teacher_id: see :func:`trainables.teacher.teacher_id`.
        teacher_bytes: the teacher's fp32 parameter bytes (for ``compression_ratio``), or ``None``.
        teacher_path: the teacher folder or hub name (``student: transformer`` starts from it).
        augmented: ``(augment_n, augment_p)`` -> :class:`trainables.augment.AugmentedSet`, the
            teacher-labelled synthetic rows the driver made (:func:`trainables.augment.prepare_for_space`).
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


@dataclass
class RunSettings:
    """Search-level settings that shape measurement, not the model.

    Attributes:
        cpu_watts_per_core: enables the labelled CPU-time energy ``estimate`` (watts per core).
        pue, kg_per_kwh: CO2e factors (Best Way to Squeeze thesis, section 3.4).
        threads: torch intra-op threads (default: CPUs Ray assigned, else 1).
        device: where to train (``cpu`` or ``cuda``); evaluation and speed are measured on CPU.
        tags: extra tags for every trial run (``search_id``, ``git_commit``...).
    """

    cpu_watts_per_core: float | None = None
    pue: float = energy.DEFAULT_PUE
    kg_per_kwh: float = energy.DEFAULT_KG_PER_KWH
    threads: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_trial(config: Mapping[str, Any], data: TrialData, workdir: str | Path, tracker: Tracker | None = None,
              settings: RunSettings | None = None, report: ReportFn | None = None,
              run_name: str = "trial", resume_from: str | Path | None = None) -> dict[str, Any]:
    """Run one distillation trial and return its final metrics.

    Args:
        config: a (partial) trial config, resolved with :func:`trainables.config.resolve_config`.
        data: the splits and teacher logits.
        workdir: the trial's own folder (epoch checkpoints and the final ``model/``).
        tracker: where params, metrics, tags and the model go (default: in memory).
        report: called after each epoch with its metrics and checkpoint folder, and once at the
            end with the final metrics and ``None``.
        resume_from: a checkpoint folder an earlier attempt of this trial reported (see
            :func:`load_checkpoint`): distillation continues after its epoch, exactly as if
            uninterrupted on CPU; the earlier epochs' metrics are logged again to this run (tag
            ``resumed_from_epoch``) and their measured energy counts towards ``energy_j``. A
            folder that cannot be resumed from is skipped with a warning (tag ``resume_skipped``).

    Returns:
        Final metrics: ``accuracy`` (dev, percent; ``f1`` for QQP), ``num_params``,
        ``nonzero_params``, ``size_bytes``, ``gzip_bytes``, ``weights_bytes``, ``fp32_bytes``,
        ``compression_ratio``, ``train_time_s``, ``latency_ms``, ``throughput``, ``best_epoch``,
        the energy metrics when measured, and ``energy_method`` (also a tag).

    Raises:
        ConfigError: invalid config. Any training error is re-raised after the run is marked FAILED.
    """
    settings = settings or RunSettings()
    tracker = tracker or MemoryTracker()
    cfg = resolve_config(config)
    workdir = Path(workdir)
    init = None
    if cfg["init_run_id"]:  # further compression of an earlier run's student: its architecture, its weights
        model, encoder, source_cfg = artifact.load_student(tracker.fetch_student(cfg["init_run_id"], workdir / "init"))
        # resolved again so that student-dependent defaults and checks follow the source student
        cfg = resolve_config({**config, **{k: source_cfg[k] for k in ARCHITECTURE_KEYS if k in source_cfg}})
        settings = replace(settings, tags={**settings.tags, "source_run_id": cfg["init_run_id"]})
        init = (encoder, model)
    torch.set_num_threads(settings.threads or 1)
    seed_everything(cfg["seed"])
    tags = {**settings.tags, **environment_tags(), "seed": str(cfg["seed"]), "data_hash": data.train.data_hash,
            "dev_data_hash": data.dev.data_hash, "teacher_id": data.teacher_id, "task": data.train.task}
    tracker.start(run_name, params=cfg, tags=tags)
    try:
        final = _run(cfg, data, workdir, tracker, settings, report, init, resume_from)
    except BaseException as e:
        tracker.set_tags({"error": f"{type(e).__name__}: {e}"[:4000]})
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return final


@dataclass
class Prepared:
    """A trial's student and encoded data, ready for :func:`trainables.distill.train`.

    Attributes:
        encoder: the text encoder (tokenizer + vocabulary) of the student.
        model: the student, on the requested device.
        train_enc, dev_enc: the encoded transfer set (with teacher logits) and dev split.
        aux_loss: an extra loss term for :func:`trainables.distill.train` (Patient KD), or ``None``.
        metrics, tags: what the preparation measured (augmentation cost, Patient KD set-up),
            for the trial's run.
    """

    encoder: Any
    model: torch.nn.Module
    train_enc: Any
    dev_enc: Any
    aux_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def prepare(cfg: dict[str, Any], data: TrialData, device: str = "cpu",
            init: tuple[Any, torch.nn.Module] | None = None) -> Prepared:
    """Build a trial's student and its encoded transfer set from a resolved config.

    The transfer set is the trial's training rows (the first ``max_train_examples`` of a
    seeded shuffle; all when 0) plus the driver's teacher-labelled augmentation rows.

    Args:
        cfg: a resolved config (:func:`trainables.config.resolve_config`).
        data: the splits and teacher logits.
        device: where the student goes (``cpu`` or ``cuda``).
        init: ``(encoder, model)`` to start from instead of a new student (``init_run_id``).

    Raises:
        ConfigError: a config the data cannot serve (e.g. augmentation the driver did not prepare).
    """
    train_split = data.train
    rows = None
    if cfg["max_train_examples"] and cfg["max_train_examples"] < len(train_split):
        rows = np.random.default_rng(cfg["seed"]).permutation(len(train_split))[: cfg["max_train_examples"]]
    # the transfer set: the trial's rows plus the driver's teacher-labelled synthetic rows made from them
    train_split, train_logits, rows, aug_metrics, aug_tags = augment.transfer_set(data, cfg, rows)
    metrics, tags = dict(aug_metrics or {}), dict(aug_tags or {})
    texts = train_split.texts() if rows is None else [train_split.text_a[i] for i in rows] + (
        [train_split.text_b[i] for i in rows] if train_split.is_pair else [])
    num_labels, pair = train_split.num_labels, train_split.is_pair
    aux_loss = None
    if init is not None:  # (encoder, model) of the student named by init_run_id (or of a checkpoint)
        encoder, model = init
        if cfg["student"] == "transformer":
            aux_loss, pkd_metrics = transformer_student.patient_kd(data.teacher_path, cfg, model, train_split, rows)
            metrics.update(pkd_metrics)
    elif cfg["student"] == "transformer":  # the teacher's tokenizer and first k layers (+ Patient KD)
        encoder, model, aux_loss, pkd_metrics = transformer_student.prepare(
            data.teacher_path, cfg, train_split, rows, num_labels, pair)
        metrics.update(pkd_metrics or {})
    else:
        encoder = build_encoder(cfg["embedding"], texts, cfg["vocab_size"], cfg["hash_token_space"])
        model = build_student(cfg, encoder, num_labels, pair)
    return Prepared(encoder, model.to(device), encode_split(train_split, encoder, cfg["max_length"], train_logits, rows),
                    encode_split(data.dev, encoder, cfg["max_length"]), aux_loss, metrics, tags)


def _run(cfg: dict[str, Any], data: TrialData, workdir: Path, tracker: Tracker, settings: RunSettings,
         report: ReportFn | None, init: tuple[Any, torch.nn.Module] | None = None,
         resume_from: str | Path | None = None) -> dict[str, Any]:
    stages = parse_stages(cfg["stages"])
    # iterative magnitude pruning resets surviving weights to those after epoch `rewind_epoch`
    # (0: before training); the rewind point travels with the epoch checkpoints
    imp = "prune" in stages and cfg["prune_schedule"] == "imp"
    ckpt = _usable_checkpoint(resume_from, imp, tracker) if resume_from is not None else None
    resume = ckpt.state if ckpt is not None else None
    if ckpt is not None and init is None and cfg["student"] != "transformer":
        # the checkpoint's own encoder (a vocabulary learnt from text is not rebuilt); weights come from `resume`
        model, encoder, _ = artifact.load_student(ckpt.folder / artifact.ARTIFACT_NAME)
        init = (encoder, model)
    prep = prepare(cfg, data, settings.device, init)
    if prep.metrics:
        tracker.log_metrics(prep.metrics)
    if prep.tags:
        tracker.set_tags(prep.tags)
    encoder, model, train_enc, dev_enc, aux_loss = prep.encoder, prep.model, prep.train_enc, prep.dev_enc, prep.aux_loss
    num_labels, pair = data.train.num_labels, data.train.is_pair

    # the GPUs this trial trains on (none on CPU: an idle GPU's draw is not this trial's)
    meter = energy.make_meter(gpu_indices=None if settings.device == "cuda" else [],
                              cpu_watts_per_core=settings.cpu_watts_per_core)
    readings: list[energy.EnergyReading] = []
    ckpt_dir = workdir / "checkpoint"
    # the per-epoch metrics logged (kept in the checkpoint for a resumed run; the final metrics go one step later)
    logged_rows: list[dict[str, float]] = []
    pending: list[TrainState] = []  # the state train() hands over before each on_epoch
    rewind: dict[str, Any] = {"epoch": None, "state": None}

    def keep_rewind_point(epoch: int, state: dict[str, torch.Tensor] | None = None) -> None:
        rewind.update(epoch=epoch, state=cpu_copy(model.state_dict()) if state is None else state)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.save(rewind, ckpt_dir / REWIND_FILE)

    if imp and ckpt is not None:
        keep_rewind_point(ckpt.rewind["epoch"], ckpt.rewind["state"])
    elif imp and cfg["rewind_epoch"] == 0:
        keep_rewind_point(0)
    if ckpt is not None:
        readings.append(_continued_energy(ckpt.energy, meter.method))
        tracker.set_tags({"resumed_from_epoch": str(ckpt.state.epoch)})
        for row in ckpt.rows:  # the earlier attempt's curve, so that this run's is whole
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
            logged_rows.append(row)

    def on_epoch(row: dict[str, float]) -> None:
        readings.append(meter.stop())
        metrics = dict(row)
        so_far = energy.sum_readings(readings)
        if so_far.joules is not None:
            metrics["energy_j"] = so_far.joules
        sizes = artifact.save_student(model, cfg, encoder, num_labels, pair, ckpt_dir / artifact.ARTIFACT_NAME)
        metrics.update(size_bytes=sizes["size_bytes"], gzip_bytes=sizes["gzip_bytes"])
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=int(row["epoch"]))
        # the rest of the checkpoint, written outside the metered window like the student
        logged_rows.append(metrics)
        pending.pop().save(ckpt_dir / STATE_FILE)
        (ckpt_dir / PROGRESS_FILE).write_text(json.dumps({"energy": asdict(so_far), "rows": logged_rows}))
        if imp and row["epoch"] <= cfg["rewind_epoch"]:  # overwritten up to epoch `rewind_epoch` (or an early stop)
            keep_rewind_point(int(row["epoch"]))
        if report is not None:
            report(metrics, ckpt_dir)
        meter.start()

    train_time_s, best_epoch = 0.0, None
    if "distill" in stages:
        meter.start()
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        result = train(model, train_enc, dev_enc, cfg, on_epoch, aux_loss, resume, on_state=pending.append)
        meter.stop()  # the window after the last epoch (early-stopping bookkeeping) is not training
        train_time_s, best_epoch = result.train_time_s, result.best_epoch

    if getattr(model, "keep_layers", ()):  # Patient KD is a distillation loss: later stages skip its hidden states
        model.keep_layers = ()
    # each stage saves its student and is measured from that file; the last stage's is the trial's
    model_dir = workdir / "model"
    for i, stage in enumerate(stages):
        folder = model_dir if i == len(stages) - 1 else workdir / "stages" / stage
        extra: dict[str, float] = {}
        if stage == "distill":
            path = folder / artifact.ARTIFACT_NAME
            sizes = artifact.save_student(model, cfg, encoder, num_labels, pair, path)
        else:
            meter.start()
            if stage == "prune":
                out = prune_student(model, cfg, train_enc, dev_enc, _stage_logger(tracker, stage), rewind["state"])
                quantized, runtime, extra = None, "float32", out.sparsity
                if imp:
                    tracker.log_metrics({"prune_rewind_epoch": rewind["epoch"]})
                    if rewind["epoch"] != cfg["rewind_epoch"]:
                        log.warning("early stopping ended distillation at epoch %s, before rewind_epoch=%s; "
                                    "rewound to epoch %s", rewind["epoch"], cfg["rewind_epoch"], rewind["epoch"])
            else:
                out = quantize_student(model, cfg, train_enc, dev_enc, _stage_logger(tracker, stage))
                quantized, runtime = out.tensors, out.runtime
            readings.append(meter.stop())
            train_time_s += out.train_time_s
            path = folder / packed.ARTIFACT_NAME
            sizes = packed.save_packed(model, cfg, encoder, num_labels, pair, path, quantized, runtime)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
        final, saved = _evaluate_saved(path, sizes, data, dev_enc, cfg, settings.threads or 1)
        final.update(extra)
        if len(stages) > 1:
            tracker.log_metrics({f"{stage}_{k}": v for k, v in final.items()})

    inference_meter = energy.make_meter(gpu_indices=[], cpu_watts_per_core=settings.cpu_watts_per_core)  # CPU inference
    inference_meter.start()
    predict(saved, dev_enc)
    inference = inference_meter.stop()
    energy_values, energy_tags = energy.energy_metrics(energy.sum_readings(readings), inference, len(dev_enc),
                                                       settings.pue, settings.kg_per_kwh)
    final.update(energy_values)
    final["train_time_s"] = train_time_s
    if best_epoch is not None:
        final["best_epoch"] = best_epoch
    # MLflow shows a metric's value at its highest step: log the saved student's final values one
    # step after the last epoch so that `accuracy`, `size_bytes`... read as the trial's result
    tracker.log_metrics(final, step=len(logged_rows) + 1)
    tracker.set_tags(energy_tags)
    tracker.log_artifact(model_dir, "model")
    final["energy_method"] = energy_tags["energy_method"]
    if report is not None:
        report(final, None)
    return final


@dataclass
class TrialCheckpoint:
    """An epoch checkpoint of a trial: what :func:`run_trial` reports to Tune after each epoch.

    Attributes:
        folder: where it was read from; it holds the epoch's student (``student.safetensors``).
        state: the training state (:class:`trainables.distill.TrainState`, ``train_state.pt``).
        energy: the training energy measured up to that epoch (``progress.json``).
        rows: the per-epoch metrics logged to MLflow so far, each with its ``epoch`` (``progress.json``).
        rewind: ``prune_schedule=imp``: ``{"epoch": int, "state": state dict}``, the rewind point
            (``rewind_state.pt``); ``None`` when the folder has none.
    """

    folder: Path
    state: TrainState
    energy: energy.EnergyReading
    rows: list[dict[str, float]]
    rewind: dict[str, Any] | None = None


def load_checkpoint(folder: str | Path) -> TrialCheckpoint:
    """Read an epoch checkpoint that :func:`run_trial` wrote (tensors with ``weights_only=True``).

    Raises:
        ConfigError: the folder is not such a checkpoint (a file is missing or unreadable).
    """
    folder = Path(folder)
    missing = [n for n in (artifact.ARTIFACT_NAME, STATE_FILE, PROGRESS_FILE) if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a trial checkpoint: {', '.join(missing)} missing")
    try:
        state = TrainState.load(folder / STATE_FILE)
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        e = progress["energy"]
        reading = energy.EnergyReading(e["joules"], e["method"], tuple(e["devices"]), e["seconds"])
        rewind = None
        if (folder / REWIND_FILE).is_file():
            rewind = torch.load(folder / REWIND_FILE, map_location="cpu", weights_only=True)
        return TrialCheckpoint(folder, state, reading, list(progress["rows"]), rewind)
    except Exception as err:  # a truncated or foreign file: say which, not a pickle traceback
        raise ConfigError(f"cannot read the trial checkpoint in {folder}: {type(err).__name__}: {err}") from err


def _usable_checkpoint(folder: str | Path, imp: bool, tracker: Tracker) -> TrialCheckpoint | None:
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


def _continued_energy(earlier: energy.EnergyReading, method: str) -> energy.EnergyReading:
    """The earlier attempt's training energy, if it can be added to this attempt's (same method);
    otherwise an unmeasured window, so that the trial's ``energy_j`` is absent rather than partial."""
    if earlier.joules is None or earlier.method == method:
        return earlier
    log.warning("the resumed trial's earlier epochs were measured by %s, this attempt by %s; "
                "its training energy is not reported", earlier.method, method)
    return energy.EnergyReading(None, "unavailable", (), earlier.seconds)


def _stage_logger(tracker: Tracker, stage: str) -> Callable[[dict[str, float]], None]:
    """Per-epoch logger of a compression stage's fine-tuning: ``<stage>_train_loss``,
    ``<stage>_epoch_accuracy`` (dev, percent) and ``<stage>_epoch_time_s`` at ``step=epoch``."""

    def log(row: dict[str, float]) -> None:
        tracker.log_metrics({f"{stage}_train_loss": row["train_loss"], f"{stage}_epoch_accuracy": row["accuracy"],
                             f"{stage}_epoch_time_s": row["epoch_time_s"]}, step=int(row["epoch"]))

    return log


def _evaluate_saved(path: Path, sizes: dict[str, int], data: TrialData, dev_enc: Any, cfg: dict[str, Any],
                    threads: int) -> tuple[dict[str, Any], torch.nn.Module]:
    """Metrics of the student saved at ``path``, measured on the model loaded from that file.

    Returns:
        ``(metrics, loaded model)``: task metrics (percent), ``sizes``, ``latency_ms``, ``throughput``,
        ``num_params``, ``nonzero_params``, ``fp32_bytes`` (4 x num_params) and ``compression_ratio``.
    """
    saved, saved_encoder, _ = artifact.load_student(path)
    metrics: dict[str, Any] = task_metrics(data.train.task, predict(saved, dev_enc), data.dev.labels)
    if data.dev_mismatched is not None:
        mm = encode_split(data.dev_mismatched, saved_encoder, cfg["max_length"])
        mm_metrics = task_metrics("mnli", predict(saved, mm), data.dev_mismatched.labels)
        metrics["accuracy_mismatched"] = mm_metrics["accuracy"]
        metrics["accuracy_mean"] = (metrics["accuracy"] + metrics["accuracy_mismatched"]) / 2
    # torch int8 modules hide their weights from parameters(): count on the float32 decoding
    int8 = artifact.read_metadata(path).get("runtime") == "int8_dynamic"
    plain = packed.load_packed(path, runtime=False)[0] if int8 else saved
    num_params, nonzero = count_params(plain)
    metrics.update(sizes)
    metrics.update(inference_speed(saved, dev_enc, threads=threads))
    metrics.update(num_params=num_params, nonzero_params=nonzero, fp32_bytes=4 * num_params)
    if data.teacher_bytes:
        metrics["compression_ratio"] = data.teacher_bytes / sizes["size_bytes"]
    return metrics, saved


def tune_trainable(config: dict[str, Any], data: TrialData, tracking: Mapping[str, Any]) -> None:
    """Ray Tune function trainable: :func:`run_trial` with one MLflow child run per trial.

    Args:
        config: the sampled trial config (Tune passes it).
        data: shared through ``tune.with_parameters``.
        tracking: ``tracking_uri``, ``experiment_id``, ``parent_run_id`` and ``settings``
            (a :class:`RunSettings`) from the driver; optional ``earlier_attempts(client, trial_id)``
            (:func:`search.mlflow_store.close_earlier_attempts`): settles the runs of earlier
            attempts of this trial (retries, resumed searches) and returns the metrics of one that
            finished (then reported as this trial's result, nothing retrained) and tags for the new run.

    A retried trial (or an unfinished trial of a resumed search) continues after the last epoch
    it reported a checkpoint for (``tune.get_checkpoint``; see :func:`load_checkpoint`), and
    reproduces the uninterrupted student on CPU. Each attempt is its own MLflow run (tags
    ``attempt``, ``retry_of``, ``resumed_from_epoch``; ``ray_node_id`` says where it ran).
    Test-only hook: with env ``FEATHERWEIGHT_TEST_CRASH_ONCE=FILE`` set on the workers, the first
    trial to finish an epoch while ``FILE`` exists deletes it and dies (``os._exit``), or raises
    when the file holds ``raise``; see ``tests/search/test_cluster.py``.
    """
    import ray
    from ray import tune

    from trainables.tracking import MlflowTracker

    ctx = tune.get_context()
    tracker = MlflowTracker(tracking["tracking_uri"], tracking["experiment_id"], tracking["parent_run_id"])
    attempt_tags: dict[str, str] = {}
    if tracking.get("earlier_attempts") is not None:
        finished, attempt_tags = tracking["earlier_attempts"](tracker.client, ctx.get_trial_id())
        if finished is not None:  # this trial already finished in an earlier attempt: report, don't retrain
            tune.report(finished)
            return
    settings: RunSettings = tracking["settings"]
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    settings = RunSettings(settings.cpu_watts_per_core, settings.pue, settings.kg_per_kwh,
                           settings.threads or max(1, int(cpus)),
                           {**settings.tags, **attempt_tags, "trial_id": ctx.get_trial_id(),
                            "ray_node_id": ray.get_runtime_context().get_node_id()},
                           device="cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")

    def report(metrics: dict[str, Any], ckpt: Path | None) -> None:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if ckpt is None:
            tune.report({**numeric, "mlflow_run_id": tracker.run_id, "energy_method": metrics.get("energy_method")})
        else:
            tune.report(numeric, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
            _test_crash_once()

    workdir = ctx.get_trial_dir() or tempfile.mkdtemp(prefix="featherweight-trial-")
    os.makedirs(workdir, exist_ok=True)
    resume_from = None
    checkpoint = tune.get_checkpoint()  # a retry, or a trial of a resumed search: the last epoch it reported
    if checkpoint is not None:
        resume_from = Path(tempfile.mkdtemp(prefix="resume-", dir=workdir))
        checkpoint.to_directory(str(resume_from))
    try:
        run_trial(config, data, workdir, tracker, settings, report, run_name=ctx.get_trial_name(),
                  resume_from=resume_from)
    finally:
        if resume_from is not None:
            shutil.rmtree(resume_from, ignore_errors=True)


def _test_crash_once() -> None:
    """Test-only failure injection (see :func:`tune_trainable`); a no-op unless the env var is set."""
    marker = os.environ.get("FEATHERWEIGHT_TEST_CRASH_ONCE")
    if not marker:
        return
    try:
        mode = Path(marker).read_text().strip()
        os.unlink(marker)  # only one trial wins the unlink
    except OSError:
        return
    if mode == "raise":
        raise RuntimeError("FEATHERWEIGHT_TEST_CRASH_ONCE: injected trial failure")
    os._exit(3)
