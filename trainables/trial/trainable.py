"""The Ray Tune function trainable: :func:`trainables.trial.stages.run_trial` with one MLflow
child run per trial, a report and a checkpoint after every epoch.

A retried trial (or an unfinished trial of a resumed search) continues after the last epoch
it reported a checkpoint for (``tune.get_checkpoint``; see :mod:`trainables.trial.checkpoint`),
and reproduces the uninterrupted student on CPU. Each attempt is its own MLflow run (tags
``attempt``, ``retry_of``, ``resumed_from_epoch``; ``ray_node_id`` says where it ran).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from trainables.tracking import MlflowTracker
from trainables.trial.stages import run_trial
from trainables.trial.state import RunSettings, TrialData


def report_epoch(metrics: Mapping[str, Any], checkpoint_dir: Path) -> None:
    """Report an epoch's numeric metrics to Tune with the epoch checkpoint folder."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    tune.report(numeric, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


def tune_trainable(config: dict[str, Any], data: TrialData, tracking: Mapping[str, Any]) -> None:
    """Ray Tune function trainable (pass ``data`` and ``tracking`` with ``tune.with_parameters``).

    Args:
        config: the sampled trial config (Tune passes it).
        data: the splits and teacher logits, shared through Ray's object store.
        tracking: ``tracking_uri``, ``experiment_id``, ``parent_run_id`` and ``settings``
            (a :class:`trainables.trial.state.RunSettings`) from the driver; optional ``system_metrics``
            (record MLflow's system metrics on the trial's run); optional
            ``earlier_attempts(client, trial_id)``: settles the runs of earlier attempts of this
            trial (retries, resumed searches) and returns the metrics of one that finished (then
            reported as this trial's result, nothing retrained) and tags for the new run; optional
            ``should_stop(trial_id, epoch) -> reason | None``, asked after each epoch's report:
            a reason (a scheduler's rung decision, a spent time budget) stops distillation after
            that epoch, and the trial finishes from its best epoch (tags ``early_stopped``,
            ``stopped_at_epoch``, ``stop_reason``); optional ``halt() -> bool``, asked after every
            distillation batch: ``True`` ends the epoch there and distillation after it (a spent
            time budget; see :func:`trainables.trial.stages.run_trial`).
    """
    ctx = tune.get_context()
    tracker = MlflowTracker(tracking["tracking_uri"], tracking["experiment_id"], tracking["parent_run_id"],
                            system_metrics=tracking.get("system_metrics", False))
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

    should_stop = tracking.get("should_stop")

    def report(metrics: dict[str, Any], ckpt: Path | None) -> str | None:
        if ckpt is not None:
            report_epoch(metrics, ckpt)
            return should_stop(ctx.get_trial_id(), int(metrics["epoch"])) if should_stop is not None else None
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        tune.report({**numeric, "mlflow_run_id": tracker.run_id, "energy_method": metrics.get("energy_method")})
        return None

    workdir = ctx.get_trial_dir() or tempfile.mkdtemp(prefix="featherweight-trial-")
    os.makedirs(workdir, exist_ok=True)
    resume_from = None
    checkpoint = tune.get_checkpoint()  # a retry, or a trial of a resumed search: the last epoch it reported
    if checkpoint is not None:
        resume_from = Path(tempfile.mkdtemp(prefix="resume-", dir=workdir))
        checkpoint.to_directory(str(resume_from))
    try:
        run_trial(config, data, workdir, tracker, settings, report, run_name=ctx.get_trial_name(),
                  resume_from=resume_from, halt=tracking.get("halt"))
    finally:
        if resume_from is not None:
            shutil.rmtree(resume_from, ignore_errors=True)
