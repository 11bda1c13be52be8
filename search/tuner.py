"""A multi-objective search: validate everything, then Ray Tune + OptunaSearch + MLflow.

Order matters: every check that can fail on user input (task, data folder, space file,
objectives, teacher, tracking store, Ray address) runs before any data is loaded or Ray starts,
so bad input costs seconds. Then the driver loads the data and teacher logits once, creates
the MLflow experiment and parent run, runs the Tuner, closes every run, and prints the Pareto
front of the finished trials (also logged as ``pareto_front.csv`` on the parent run).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shlex
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from search import optuna_store
from search.cluster import check_launch, connect, experiment_path, joins_cluster, ray_address, resolve_storage_path
from search.validate import check_search_options, check_space
from spaces import DEFAULT_OBJECTIVES, ENERGY_OBJECTIVES, Space, load_space, parse_objectives
from trainables.config import check_value, parse_stages
from trainables.data.glue import check_task, check_validation_options, local_split_path
from trainables.errors import ConfigError
from trainables.untrusted import mask_credentials, safe_name

if TYPE_CHECKING:  # Ray is imported only once a search runs
    from search.budget import TrialStopper

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "gp", "random")
SCHEDULERS = ("fifo", "moasha")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


#: Epoch checkpoints Tune keeps per trial (a retry or resume reads the latest).
CHECKPOINTS_KEPT = 2


@dataclass
class SearchOptions:
    """What ``run_search.py search`` accepts (see ``--help`` for each)."""

    task: str = "sst2"
    space: str = str(PROJECT_ROOT / "spaces" / "distill.yaml")
    data_dir: str | None = None
    teacher: str | None = None
    num_samples: int = 12
    max_concurrent: int = 2
    experiment: str = "featherweight"
    tracking_uri: str | None = None
    seed: int = 0
    sampler: str = "tpe"
    objectives: str | None = None
    address: str | None = None
    runtime_env: dict[str, Any] | None = None
    ray_dashboard: bool = False
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    storage_path: str | None = None
    max_failures: int = 0
    cache_dir: str | None = None
    require_energy: bool = False
    cpu_watts_per_core: float | None = None
    pue: float = 1.59
    kg_per_kwh: float = 0.430
    verbose: int = 1
    val_fraction: float = 0.05
    val_size: int = 0
    scheduler: str = "fifo"
    reduction_factor: float = 3.0
    grace_period: int = 1
    time_budget_s: float | None = None
    hv_reference: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    optuna_storage: str | None = None
    system_metrics: bool = True


@dataclass
class Plan:
    """The validated search: what :func:`run_search` executes."""

    options: SearchOptions
    task: str
    space: Space
    objectives: dict[str, str]
    teacher: str
    tracking_uri: str
    artifact_root: str | None
    dropped_objectives: list[str] = field(default_factory=list)
    storage_path: str | None = None
    notes: list[str] = field(default_factory=list)


def resolve_teacher(task: str, teacher: str | None, cache_dir: str | None) -> str:
    """The teacher to distil from: ``--teacher``, else the one ``run_search.py teacher`` cached.

    Raises:
        ConfigError: explicit folder invalid, or no cached teacher (says how to make one).
    """
    from trainables.data.teacher import check_teacher, default_teacher_dir

    if teacher:
        check_teacher(teacher)
        return teacher
    cached = default_teacher_dir(task, cache_dir)
    if (cached / "config.json").is_file():
        return str(cached)
    minutes = {"sst2": 25, "qqp": 10, "mnli": 15}[task]
    raise ConfigError(f"no teacher for {task}: pass --teacher DIR_OR_HUB_NAME, or make one with `python run_search.py "
                      f"teacher --task {task} --data-dir DIR` (about {minutes} minutes on 2 CPU cores)")


def plan_search(opts: SearchOptions) -> Plan:
    """Validate every option (cheap checks only; nothing is loaded or started).

    Raises:
        ConfigError: the first invalid option, with a one-line message naming it.
    """
    from search.mlflow_store import check_tracking_uri, resolve_tracking_uri
    from trainables import energy

    check_search_options(opts)
    task = check_task(opts.task)
    if opts.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {opts.sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    check_value("seed", opts.seed, "--seed")
    check_validation_options(opts.val_fraction, opts.val_size)
    if opts.scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {opts.scheduler!r} is not allowed; allowed: {', '.join(SCHEDULERS)}")
    if not (isinstance(opts.reduction_factor, (int, float)) and math.isfinite(opts.reduction_factor)
            and opts.reduction_factor > 1):
        raise ConfigError(f"--reduction-factor must be a number above 1, got {opts.reduction_factor}")
    if not (isinstance(opts.grace_period, int) and opts.grace_period >= 1):
        raise ConfigError(f"--grace-period must be a whole number of epochs >= 1, got {opts.grace_period}")
    if opts.time_budget_s is not None and not (math.isfinite(opts.time_budget_s) and opts.time_budget_s > 0):
        raise ConfigError(f"--time-budget-s must be a number of seconds above 0, got {opts.time_budget_s}")
    for flag, value, ok, rule in (("--pue", opts.pue, lambda v: v >= 1, "at least 1"),
                                  ("--kg-per-kwh", opts.kg_per_kwh, lambda v: v >= 0, "at least 0"),
                                  ("--cpu-watts-per-core", opts.cpu_watts_per_core, lambda v: v > 0, "above 0")):
        if value is not None and not (math.isfinite(value) and ok(value)):
            raise ConfigError(f"{flag} must be a finite number {rule}, got {value}")
    if opts.data_dir is not None:
        for split in ("train", "dev"):
            local_split_path(task, split, opts.data_dir)
    space = _load_space(opts.space).with_fixed({**opts.overrides, "task": task, "seed": opts.seed})
    if "stages" in opts.overrides:  # the space file's own stages are checked when it is parsed
        parse_stages(opts.overrides["stages"], "--set stages")
    objectives = (parse_objectives(opts.objectives, "--objectives") if opts.objectives
                  else space.objectives or dict(DEFAULT_OBJECTIVES))
    teacher = resolve_teacher(task, opts.teacher, opts.cache_dir)
    check_space(space, teacher, opts.overrides)  # every cross-key rule of the trial config, before any trial runs
    tracking_uri, artifact_root = resolve_tracking_uri(opts.tracking_uri)
    storage_path = resolve_storage_path(opts.storage_path)
    check_tracking_uri(tracking_uri)
    check_launch(opts.address, opts.runtime_env, opts.ray_dashboard)
    notes = []
    if joins_cluster(opts.address) and (storage_path is None or storage_path.startswith("/")):
        notes.append(f"Tune's storage {storage_path or '~/ray_results'} must be a folder every node can write "
                     f"(e.g. NFS; pass --storage-path) or a URI such as s3://bucket/dir, else trials on other "
                     f"machines fail")
    if joins_cluster(opts.address) and not tracking_uri.startswith(("http://", "https://")):
        notes.append(f"trials on other machines write to {mask_credentials(tracking_uri)} and {artifact_root}: that "
                     f"works only when "
                     f"every node sees these paths; else start `python run_search.py server` and pass "
                     f"--tracking-uri http://...")
    dropped = []
    energy_objectives = [m for m in objectives if m in ENERGY_OBJECTIVES]
    if energy_objectives:  # probe the meter the trials will use (NVML only for GPU trials)
        meter = energy.make_meter(gpu_indices=None if opts.gpus_per_trial > 0 else [],
                                  cpu_watts_per_core=opts.cpu_watts_per_core)
        if not meter.available:
            if opts.require_energy:
                raise ConfigError(f"objective(s) {', '.join(energy_objectives)} need an energy meter, and none "
                                  f"works here (no NVML, no readable RAPL); drop --require-energy or pass "
                                  f"--cpu-watts-per-core W for a labelled estimate")
            dropped = energy_objectives
            objectives = {k: v for k, v in objectives.items() if k not in dropped}
            if not objectives:
                raise ConfigError("no objective left once energy is dropped; add e.g. val_accuracy:max")
    if opts.hv_reference is not None:
        parse_reference(opts.hv_reference, objectives)
    if opts.optuna_storage is not None:  # an absolute URL: a resume may run elsewhere
        opts = replace(opts, optuna_storage=optuna_store.check_storage_url(opts.optuna_storage))
    plan = Plan(opts, task, space, objectives, teacher, tracking_uri, artifact_root, dropped, storage_path, notes)
    if opts.scheduler == "moasha":
        scheduler_objectives(plan)
        if max_epochs(space) < 2:
            plan.notes.append("every trial runs 1 epoch: the scheduler has no rung to stop a trial at")
    return plan


def _load_space(path: str) -> Space:
    """:func:`spaces.load_space`, with any unexpected failure on a malformed file turned into a ConfigError."""
    try:
        return load_space(path)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{path}: invalid search space ({type(e).__name__}: {first})") from None


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_sampler(name: str, seed: int, num_samples: int | None = None) -> Any:
    """The Optuna sampler for ``--sampler`` (multi-objective capable), seeded.

    NSGA-II's population is sized to the budget, ``clip(num_samples // 4, 4, 50)``: with Optuna's
    default of 50, a search of 50 trials or fewer never leaves its random first generation.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        population = 50 if num_samples is None else min(50, max(4, num_samples // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def build_trial_data(task: str, data_dir: str | None, teacher: str, cache_dir: str | None = None,
                     val_fraction: float = 0.05, val_size: int = 0, val_seed: int = 0) -> Any:
    """Load the splits of ``task`` and ``teacher``'s logits on them (searches and replays), and
    carve the validation split from the training split.

    Args:
        task: ``sst2``, ``qqp`` or ``mnli``.
        data_dir: local GLUE folder; ``None``: the Hugging Face hub.
        teacher: teacher folder or hub name.
        cache_dir: teacher-logit cache root (``None``: the user cache dir).
        val_fraction, val_size, val_seed: the validation split
            (:func:`trainables.data.glue.validation_rows`).

    Returns:
        A :class:`trainables.trial.TrialData`.

    Raises:
        ConfigError: missing data, teacher that cannot be loaded or does not fit the task.
    """
    from trainables.data.glue import load_split
    from trainables.data.teacher import teacher_id, teacher_logits, teacher_size_bytes
    from trainables.trial import TrialData
    from trainables.trial.state import with_validation

    train = load_split(task, "train", data_dir)
    dev = load_split(task, "dev", data_dir)
    mismatched = None
    if task == "mnli":
        try:
            mismatched = load_split("mnli", "dev_mismatched", data_dir)
        except ConfigError:
            log.warning("mnli dev_mismatched is not available; reporting matched accuracy only")
    logits = [teacher_logits(teacher, s, cache_dir) for s in (train, dev)]
    data = TrialData(train, dev, logits[0], logits[1], teacher_id(teacher), teacher_size_bytes(teacher), mismatched,
                     teacher_path=_local_or_name(teacher))
    return with_validation(data, val_fraction, val_size, val_seed)


def load_trial_data(plan: Plan) -> Any:
    """Load the splits and teacher logits once, in the driver."""
    from trainables.data.augment import prepare_for_space  # + the augmented transfer sets the space can ask for

    opts = plan.options
    data = build_trial_data(plan.task, opts.data_dir, plan.teacher, opts.cache_dir, opts.val_fraction, opts.val_size,
                            opts.seed)
    return prepare_for_space(data, plan.space, plan.teacher, plan.options.cache_dir, plan.options.cpu_watts_per_core)


def _local_or_name(path_or_name: str) -> str:
    """An absolute path for an existing local folder (replays run elsewhere), else the name as is."""
    path = Path(path_or_name).expanduser()
    return str(path.resolve()) if path.exists() else path_or_name


#: Metrics every epoch report carries, so the scheduler can rank trials at a rung on them.
EPOCH_METRICS = ("val_accuracy", "size_bytes", "gzip_bytes", "energy_j")


def max_epochs(space: Space) -> int:
    """The most distillation epochs a trial of ``space`` can run (the scheduler's ``max_t``)."""
    from trainables.config import PARAMS

    if "epochs" in space.fixed:
        return int(space.fixed["epochs"])
    dist = space.params.get("epochs")
    if dist is None:
        return int(PARAMS["epochs"].default)
    if dist.kind == "choice":
        return max(int(v) for v in dist.args)
    return int(dist.args[1])


def scheduler_objectives(plan: Plan) -> dict[str, str]:
    """The search objectives the multi-objective scheduler ranks a rung on (those in every epoch report).

    Raises:
        ConfigError: ``--scheduler moasha`` with no objective reported per epoch.
    """
    objs = {k: v for k, v in plan.objectives.items() if k in EPOCH_METRICS}
    if not objs:
        raise ConfigError(f"--scheduler moasha ranks trials on objectives reported every epoch "
                          f"({', '.join(EPOCH_METRICS)}); the search's are {', '.join(plan.objectives)}")
    return objs


def make_scheduler(plan: Plan, board: str) -> Any:
    """The Tune scheduler of ``--scheduler``: ``None`` (FIFO: every trial runs all its epochs) or
    :class:`search.moasha.MOASHAScheduler` in graceful mode (decisions published to ``board``)."""
    if plan.options.scheduler == "fifo":
        return None
    from search.moasha import MOASHAScheduler

    objs = scheduler_objectives(plan)
    return MOASHAScheduler(list(objs), list(objs.values()), time_attr="epoch", max_t=max_epochs(plan.space),
                           grace_period=plan.options.grace_period, reduction_factor=plan.options.reduction_factor,
                           decision_board=board)


def make_stopper(plan: Plan, board: str) -> TrialStopper:
    """The trainable's ``should_stop`` (:class:`search.budget.TrialStopper`): the scheduler's
    decisions (``--scheduler moasha``) and the deadline of ``--time-budget-s``."""
    from search.budget import TrialStopper
    from search.moasha import RungDecisionClient

    opts = plan.options
    client = RungDecisionClient(board) if opts.scheduler == "moasha" else None
    deadline = time.time() + opts.time_budget_s if opts.time_budget_s else None
    return TrialStopper(client, deadline)


def hv_reference(plan: Plan, data: Any) -> list[float]:
    """The search's hypervolume reference point on :func:`analysis.pareto.hv_scale`: ``--hv-reference``,
    else the fixed point of the task (:func:`analysis.pareto.task_reference`: the dev set's
    majority-class accuracy, the teacher's float32 size...).

    Raises:
        ConfigError: a ``--hv-reference`` that is not one number per objective.
    """
    from analysis.pareto import task_reference

    if plan.options.hv_reference:
        return parse_reference(plan.options.hv_reference, plan.objectives)
    labels = np.asarray(data.dev.labels)
    counts = np.bincount(labels, minlength=data.dev.num_labels)
    majority = int(counts.argmax())
    share = counts[majority] / max(len(labels), 1)
    f1 = 100.0 * 2 * share / (1 + share) if majority == 1 else 0.0
    return task_reference(plan.objectives, 100.0 * share, data.teacher_bytes, f1)


def parse_reference(text: str, objectives: dict[str, str]) -> list[float]:
    """``"50.9,8"`` -> ``[50.9, 8.0]``, one finite number per objective (sizes on log10 bytes).

    Raises:
        ConfigError: not comma-separated finite numbers, or not one per objective.
    """
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ConfigError(f"--hv-reference {text!r} must be comma-separated numbers, one per objective "
                          f"({', '.join(objectives)}; sizes on log10 bytes)") from None
    if len(values) != len(objectives) or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--hv-reference needs {len(objectives)} finite numbers, one per objective "
                          f"({', '.join(objectives)}), got {text!r}")
    return values


def run_search(opts: SearchOptions) -> pd.DataFrame:
    """Run a search end to end and return its Pareto front (one row per non-dominated trial).

    Raises:
        ConfigError: invalid input, raised before Ray starts (or when the cluster refuses the connection).
    """
    plan = plan_search(opts)
    print_notes(plan)
    if joins_cluster(opts.address):  # joining can still fail (authentication, runtime_env): before loading anything
        connect(opts.address, opts.runtime_env, opts.ray_dashboard)
    data = load_trial_data(plan)
    reference = hv_reference(plan, data)

    from mlflow.tracking import MlflowClient
    from ray import tune

    from search import mlflow_store
    from search.progress import HypervolumeLogger

    client = MlflowClient(plan.tracking_uri)
    experiment_id = mlflow_store.get_or_create_experiment(client, opts.experiment, plan.artifact_root)
    search_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    tune_name = f"{safe_name(opts.experiment)}-{search_id}"  # a folder name: no '/' or '..' from the user
    tune_path = experiment_path(plan.storage_path, tune_name)
    optuna_url = plan.options.optuna_storage or optuna_store.default_storage_url(tune_path)
    parent_id = mlflow_store.start_parent_run(
        client, experiment_id, f"search-{search_id}",
        params={"task": plan.task, "space": opts.space, "num_samples": opts.num_samples,
                "max_concurrent": opts.max_concurrent, "sampler": opts.sampler, "seed": opts.seed,
                "objectives": ",".join(f"{k}:{v}" for k, v in plan.objectives.items()),
                "teacher": _local_or_name(plan.teacher),
                "data_dir": _local_or_name(opts.data_dir) if opts.data_dir else "hub",
                "cache_dir": _local_or_name(opts.cache_dir) if opts.cache_dir else "",
                "cpus_per_trial": opts.cpus_per_trial,
                "gpus_per_trial": opts.gpus_per_trial, "max_failures": opts.max_failures,
                "address": ray_address(opts.address), "tune_experiment_path": tune_path,
                "val_fraction": opts.val_fraction, "val_size": opts.val_size, "val_rows": len(data.val),
                "scheduler": opts.scheduler, "reduction_factor": opts.reduction_factor,
                "grace_period": opts.grace_period, "time_budget_s": opts.time_budget_s or "",
                "hypervolume_reference": ",".join(f"{v:.6g}" for v in reference),
                "study_name": tune_name, "optuna_storage": mask_credentials(optuna_url)},
        tags={"search_id": search_id, "git_commit": _git_commit(), "data_hash": data.train.data_hash,
              "val_data_hash": data.val.data_hash,
              "teacher_id": data.teacher_id, "sampler": opts.sampler,
              "random_search": str(opts.sampler == "random").lower(),
              mlflow_store.OPTIONS_TAG: json.dumps(recorded_options(plan)), **mlflow_store.source_tags()})
    try:
        client.log_artifact(parent_id, opts.space, "space")
        storage = optuna_store.prepare_search_study(
            optuna_url, tune_name, plan.objectives,
            {"mlflow_tracking_uri": mask_credentials(plan.tracking_uri), "mlflow_experiment_id": experiment_id,
             "mlflow_parent_run_id": parent_id, "search_id": search_id})
    except Exception:
        mlflow_store.close_search(client, experiment_id, parent_id, "FAILED", {})
        raise
    uri = mask_credentials(plan.tracking_uri)
    print(f"MLflow: experiment {opts.experiment!r} (id {experiment_id}), parent run {parent_id} in {uri}", flush=True)
    print(f"Optuna: study {tune_name!r} in {mask_credentials(optuna_url)} (optuna-dashboard "
          f"{mask_credentials(optuna_url)})", flush=True)
    print(f"Ray Tune: experiment state in {tune_path} (resume with: python run_search.py resume --experiment "
          f"{shlex.quote(opts.experiment)} --tracking-uri {shlex.quote(uri)} --storage-path "
          f"{shlex.quote(str(Path(tune_path).parent))})", flush=True)

    board = decision_board(tune_name)

    def build(trainable: Any) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        from search.budget import DeadlineSearcher

        searcher = OptunaSearch(metric=list(plan.objectives), mode=list(plan.objectives.values()),
                                sampler=make_sampler(opts.sampler, opts.seed, opts.num_samples), study_name=tune_name,
                                points_to_evaluate=_initial_points(plan), storage=storage)
        if opts.time_budget_s:
            searcher = DeadlineSearcher(searcher, opts.time_budget_s)
        scheduler = make_scheduler(plan, board)
        callbacks = [HypervolumeLogger(plan.tracking_uri, parent_id, plan.objectives, reference)]
        if scheduler is not None:
            callbacks.append(scheduler.state_callback())  # the rung records survive a killed driver
        return tune.Tuner(
            trainable,
            param_space=plan.space.tune_space(),
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=opts.num_samples,
                                        max_concurrent_trials=opts.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=tune_name, storage_path=plan.storage_path, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                                      # a retry or resume needs only a trial's latest epoch checkpoint
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                                      verbose=opts.verbose),
        )

    return execute_search(plan, data, client, experiment_id, parent_id, search_id, build, make_stopper(plan, board))


def decision_board(tune_name: str) -> str:
    """The name of the Ray actor through which the scheduler tells trials to stop (one per search)."""
    return f"featherweight-moasha-{tune_name}"


def print_notes(plan: Plan) -> None:
    """Say once what the search does differently from what was asked (dropped objectives, cluster caveats)."""
    if plan.dropped_objectives:
        print(f"note: no energy meter works here (energy_method=unavailable); searching on "
              f"{', '.join(plan.objectives)} without {', '.join(plan.dropped_objectives)}", flush=True)
    for note in plan.notes:
        print(f"note: {note}", flush=True)


def recorded_options(plan: Plan) -> dict[str, Any]:
    """The search's options as JSON-able values, with paths made absolute (a resume may run elsewhere)."""
    opts = asdict(plan.options)
    opts.update(space=str(Path(plan.options.space).expanduser().absolute()),
                tracking_uri=mask_credentials(plan.tracking_uri),
                storage_path=plan.storage_path, teacher=_local_or_name(plan.teacher))
    for key in ("data_dir", "cache_dir"):
        if opts[key]:
            opts[key] = str(Path(opts[key]).expanduser().absolute())
    if opts.get("optuna_storage"):  # a tag anyone with the store can read: no database password in it
        opts["optuna_storage"] = mask_credentials(opts["optuna_storage"])
    return opts


def execute_search(plan: Plan, data: Any, client: Any, experiment_id: str, parent_id: str, search_id: str,
                   build: Callable[[Any], Any], should_stop: TrialStopper | None = None) -> pd.DataFrame:
    """Run the Tuner that ``build(trainable)`` returns (new or restored), then close the search's runs.

    Trials that fail (after ``--max-failures`` retries) do not stop the search: Tune returns them
    in its ResultGrid; they are reported here, their runs are ``FAILED`` with an ``error`` tag,
    and the parent run counts them (tag ``failed_trials``).

    Returns:
        The Pareto front of the search's finished trials (empty when none finished); its
        ``attrs["status"]`` is the parent run's status (``KILLED`` when Tune was interrupted).
    """
    from ray import tune

    from analysis.pareto import pareto_ranks
    from search import mlflow_store
    from trainables.trial.state import RunSettings
    from trainables.trial.trainable import tune_trainable

    opts = plan.options
    settings = RunSettings(opts.cpu_watts_per_core, opts.pue, opts.kg_per_kwh, None,
                           {"search_id": search_id, "git_commit": _git_commit(), "featherweight.role": "trial",
                            **mlflow_store.source_tags()})
    tracking = {"tracking_uri": plan.tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent_id,
                "settings": settings, "system_metrics": opts.system_metrics,
                "earlier_attempts": functools.partial(mlflow_store.close_earlier_attempts,
                                                      experiment_id=experiment_id, parent_run_id=parent_id),
                "should_stop": should_stop,
                # the time budget also ends an epoch in progress
                "halt": should_stop.deadline_passed if should_stop is not None else None}
    # Tune saves its experiment state (trials, searcher) every TUNE_GLOBAL_CHECKPOINT_S; "auto" means >= 10 s,
    # and a trial created after the last save is unknown to a resume. 1 s keeps that window far below a trial.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # with CheckpointConfig(num_to_keep), Tune also saves it every num_to_keep checkpoints of a trial
    # (so that it never names a deleted checkpoint) and warns when saves come within 5 s, which
    # short epochs do; the state is a few small files, so the warning is noise here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # an epoch's report carries the per-epoch metrics (val_accuracy, size_bytes...), the final one every
    # objective; objectives measured only on the saved student (accuracy on dev, latency_ms...) are not in
    # the epoch reports, which the multi-objective searcher ignores anyway (it reads the final result)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    status, errors = "FAILED", {}
    try:
        connect(opts.address, opts.runtime_env, opts.ray_dashboard)
        trainable = tune.with_resources(tune.with_parameters(tune_trainable, data=data, tracking=tracking),
                                        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
        results = build(trainable).fit()
        errors = trial_errors(results)
        status = "KILLED" if interrupted(results, opts.num_samples, bool(opts.time_budget_s)) else "FINISHED"
        if opts.time_budget_s and status == "FINISHED" and len(results) < opts.num_samples:
            print(f"\nthe time budget of {opts.time_budget_s:g} s is spent: {len(results)} of {opts.num_samples} "
                  f"trials ran", flush=True)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        marked = mlflow_store.close_search(client, experiment_id, parent_id, status, errors)
        if marked:
            print(f"marked {marked} unfinished trial run(s) FAILED", flush=True)
    client.set_tag(parent_id, "failed_trials", str(len(errors)))
    if status == "FINISHED":
        optuna_store.fail_orphans(client.get_run(parent_id))
    if status == "KILLED":
        print(f"\nthe search was interrupted; finish it with: python run_search.py resume --experiment "
              f"{shlex.quote(opts.experiment)} --tracking-uri {shlex.quote(mask_credentials(plan.tracking_uri))}",
              flush=True)
    if errors:
        retries = f"{opts.max_failures} retr{'y' if opts.max_failures == 1 else 'ies'}"
        print(f"\n{len(errors)} trial(s) failed after {retries} "
              f"(their runs are FAILED with an 'error' tag; `run_search.py resume` retries them):", flush=True)
        for trial_id, error in errors.items():
            print(f"  {trial_id}: {_error_line(error)}", flush=True)
    front = _pareto_report(client, experiment_id, parent_id, plan.objectives, pareto_ranks)
    front.attrs["status"] = status  # KILLED: interrupted (Ctrl-C), resumable
    return front


def interrupted(results: Any, num_samples: int, time_budget: bool = False) -> bool:
    """Whether Tune returned before every trial ended (Ctrl-C: Tune saves its state and returns).

    ``results`` is a ``tune.ResultGrid``: its ``num_terminated`` and ``num_errors`` count the
    trials that ended. With a time budget, a search that started fewer than ``num_samples``
    trials and ended them all finished (its budget was spent), it was not interrupted.
    """
    ended = results.num_terminated + results.num_errors
    return ended < (len(results) if time_budget else num_samples)


def trial_errors(results: Any) -> dict[str, str]:
    """Trial id -> error text of the trials a Tune ``ResultGrid`` holds as errored (the id is the
    ``trial_id`` the trial reported, else its folder name)."""
    out = {}
    for result in results:
        if result.error is None:
            continue
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        out[str(trial_id)] = f"{type(result.error).__name__}: {result.error}".strip()
    return out


def _error_line(error: str) -> str:
    """The most telling line of a (Ray-wrapped, multi-line) error: the last ``SomeError: ...`` line, else the first."""
    lines = [ln.strip() for ln in error.splitlines() if ln.strip()]
    named = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception", "Exit"))]
    return (named[-1] if named else lines[0] if lines else "unknown error")[:300]


def _initial_points(plan: Plan) -> list[dict[str, Any]] | None:
    """The space's warm-start points, except for random search (its draws must stay i.i.d.)."""
    if plan.options.sampler == "random" or not plan.space.initial_points:
        return None
    return plan.space.initial_points[: plan.options.num_samples]


def trials_frame(tracking_uri: str, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """Finished trial runs of a search (:func:`analysis.runs.load_trials`), with the columns the
    Pareto table shows under short names: ``trial_id``, ``student``, ``embedding``,
    ``embedding_dim``, ``stages``, ``energy_method``, then the metrics."""
    from analysis.runs import PARAM_PREFIX, TAG_PREFIX, load_trials

    df = load_trials(tracking_uri, experiment_id, search_id=parent_id)
    short = {f"{TAG_PREFIX}trial_id": "trial_id", f"{TAG_PREFIX}energy_method": "energy_method",
             **{f"{PARAM_PREFIX}{k}": k for k in ("student", "embedding", "embedding_dim", "stages")}}
    return df.rename(columns=short)


def _pareto_report(client: Any, experiment_id: str, parent_id: str, objectives: dict[str, str],
                   pareto_ranks: Any) -> pd.DataFrame:
    df = trials_frame(client.tracking_uri, experiment_id, parent_id)
    if df.empty:
        print("no trial finished; no Pareto front", flush=True)
        return df
    ranks = pareto_ranks(df[list(objectives)].to_numpy(dtype=float), list(objectives.values()))
    df["pareto_rank"] = ranks
    front = df[df["pareto_rank"] == 0].sort_values(list(objectives)[0], ascending=False)
    cols = ["trial_id", "student", "embedding", "embedding_dim", "stages", *objectives, "accuracy", "size_bytes",
            "gzip_bytes", "energy_j", "energy_method", "early_stopped", "run_id"]
    cols = list(dict.fromkeys(cols))
    front = front[[c for c in cols if c in front.columns]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pareto_front.csv"
        front.to_csv(path, index=False)
        client.log_artifact(parent_id, str(path))
    print(f"\nPareto front over {', '.join(f'{k} ({v})' for k, v in objectives.items())}: "
          f"{len(front)} of {len(df)} finished trials (selected on those objectives; 'accuracy' is dev, "
          f"which no selection saw)", flush=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(front.to_string(index=False), flush=True)
    return front
