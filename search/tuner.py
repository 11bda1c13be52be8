"""A multi-objective search: validate everything, then Ray Tune + OptunaSearch + MLflow.

Order matters: every check that can fail on user input (task, data folder, space file,
objectives, teacher, tracking store, Ray address) runs before any data is loaded or Ray starts,
so bad input costs seconds. Then the driver loads the data and teacher logits once, creates
the MLflow experiment and parent run, runs the Tuner, closes every run, and prints the Pareto
front of the finished trials (also logged as ``pareto_front.csv`` on the parent run).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spaces import DEFAULT_OBJECTIVES, ENERGY_OBJECTIVES, Space, load_space, parse_objectives
from trainables.config import ConfigError, check_value
from trainables.data import check_task, local_split_path

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "nsga2", "gp", "random")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
    overrides: dict[str, Any] = field(default_factory=dict)


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


def check_address(address: str | None, timeout_s: float = 3.0) -> None:
    """Fail fast on a Ray address nothing answers at.

    ``None``: a local Ray is started later. ``auto``: a running cluster must be recorded on
    this machine (``ray start``) or named by ``RAY_ADDRESS``. ``HOST:PORT`` / ``ray://HOST:PORT``:
    a TCP connection must open.

    Raises:
        ConfigError: nothing reachable at the address.
    """
    if address is None:
        return
    hint = "start one with `ray start --head` or leave --address unset for a local Ray"
    if address == "auto":
        env = os.environ.get("RAY_ADDRESS")
        if env and env != "auto":
            return check_address(env, timeout_s)
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        except Exception:
            raise ConfigError(f"--address auto: no running Ray cluster found on this machine; {hint}") from None
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r} must be auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise ConfigError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); {hint}") from None


def resolve_teacher(task: str, teacher: str | None, cache_dir: str | None) -> str:
    """The teacher to distil from: ``--teacher``, else the one ``run_search.py teacher`` cached.

    Raises:
        ConfigError: explicit folder invalid, or no cached teacher (says how to make one).
    """
    from trainables.teacher import check_teacher, default_teacher_dir

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

    task = check_task(opts.task)
    if opts.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {opts.sampler!r} is not allowed; allowed: {', '.join(SAMPLERS)}")
    for name in ("num_samples", "max_concurrent"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(opts, name)}")
    if opts.cpus_per_trial <= 0 or opts.gpus_per_trial < 0 or opts.max_failures < 0:
        raise ConfigError("--cpus-per-trial must be > 0, --gpus-per-trial and --max-failures >= 0")
    check_value("seed", opts.seed, "--seed")
    if opts.data_dir is not None:
        for split in ("train", "dev"):
            local_split_path(task, split, opts.data_dir)
    space = load_space(opts.space).with_fixed({**opts.overrides, "task": task, "seed": opts.seed})
    objectives = (parse_objectives(opts.objectives, "--objectives") if opts.objectives
                  else space.objectives or dict(DEFAULT_OBJECTIVES))
    teacher = resolve_teacher(task, opts.teacher, opts.cache_dir)
    tracking_uri, artifact_root = resolve_tracking_uri(opts.tracking_uri)
    check_tracking_uri(tracking_uri)
    check_address(opts.address)
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
                raise ConfigError("no objective left once energy is dropped; add e.g. accuracy:max")
    return Plan(opts, task, space, objectives, teacher, tracking_uri, artifact_root, dropped)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_sampler(name: str, seed: int) -> Any:
    """The Optuna sampler for ``--sampler`` (multi-objective capable), seeded."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def build_trial_data(task: str, data_dir: str | None, teacher: str, cache_dir: str | None = None) -> Any:
    """Load the splits of ``task`` and ``teacher``'s logits on them (searches and replays).

    Args:
        task: ``sst2``, ``qqp`` or ``mnli``.
        data_dir: local GLUE folder; ``None``: the Hugging Face hub.
        teacher: teacher folder or hub name.
        cache_dir: teacher-logit cache root (``None``: the user cache dir).

    Returns:
        A :class:`trainables.pipeline.TrialData`.

    Raises:
        ConfigError: missing data, teacher that cannot be loaded or does not fit the task.
    """
    from trainables.data import load_split
    from trainables.pipeline import TrialData
    from trainables.teacher import teacher_id, teacher_logits, teacher_size_bytes

    train = load_split(task, "train", data_dir)
    dev = load_split(task, "dev", data_dir)
    mismatched = None
    if task == "mnli":
        try:
            mismatched = load_split("mnli", "dev_mismatched", data_dir)
        except ConfigError:
            log.warning("mnli dev_mismatched is not available; reporting matched accuracy only")
    logits = [teacher_logits(teacher, s, cache_dir) for s in (train, dev)]
    return TrialData(train, dev, logits[0], logits[1], teacher_id(teacher), teacher_size_bytes(teacher), mismatched,
                     teacher_path=_local_or_name(teacher))


def load_trial_data(plan: Plan) -> Any:
    """Load the splits and teacher logits once, in the driver."""
    from trainables.augment import prepare_for_space  # + the augmented transfer sets the space can ask for

    data = build_trial_data(plan.task, plan.options.data_dir, plan.teacher, plan.options.cache_dir)
    return prepare_for_space(data, plan.space, plan.teacher, plan.options.cache_dir, plan.options.cpu_watts_per_core)


def _local_or_name(path_or_name: str) -> str:
    """An absolute path for an existing local folder (replays run elsewhere), else the name as is."""
    path = Path(path_or_name).expanduser()
    return str(path.resolve()) if path.exists() else path_or_name


def run_search(opts: SearchOptions) -> pd.DataFrame:
    """Run a search end to end and return its Pareto front (one row per non-dominated trial).

    Raises:
        ConfigError: invalid input, raised before Ray starts.
    """
    plan = plan_search(opts)
    if plan.dropped_objectives:
        print(f"note: no energy meter works here (energy_method=unavailable); searching on "
              f"{', '.join(plan.objectives)} without {', '.join(plan.dropped_objectives)}", flush=True)
    data = load_trial_data(plan)

    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from analysis.pareto import pareto_ranks
    from search import mlflow_store
    from trainables.pipeline import RunSettings, tune_trainable

    client = MlflowClient(plan.tracking_uri)
    experiment_id = mlflow_store.get_or_create_experiment(client, opts.experiment, plan.artifact_root)
    search_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    git_commit = _git_commit()
    parent_id = mlflow_store.start_parent_run(
        client, experiment_id, f"search-{search_id}",
        params={"task": plan.task, "space": opts.space, "num_samples": opts.num_samples,
                "max_concurrent": opts.max_concurrent, "sampler": opts.sampler, "seed": opts.seed,
                "objectives": ",".join(f"{k}:{v}" for k, v in plan.objectives.items()),
                "teacher": _local_or_name(plan.teacher),
                "data_dir": _local_or_name(opts.data_dir) if opts.data_dir else "hub",
                "cache_dir": _local_or_name(opts.cache_dir) if opts.cache_dir else "", "cpus_per_trial": opts.cpus_per_trial,
                "gpus_per_trial": opts.gpus_per_trial},
        tags={"search_id": search_id, "git_commit": git_commit, "data_hash": data.train.data_hash,
              "teacher_id": data.teacher_id, "sampler": opts.sampler,
              "random_search": str(opts.sampler == "random").lower()})
    client.log_artifact(parent_id, opts.space, "space")
    print(f"MLflow: experiment {opts.experiment!r} (id {experiment_id}), parent run {parent_id} in {plan.tracking_uri}",
          flush=True)

    settings = RunSettings(opts.cpu_watts_per_core, opts.pue, opts.kg_per_kwh, None,
                           {"search_id": search_id, "git_commit": git_commit, "featherweight.role": "trial"})
    tracking = {"tracking_uri": plan.tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent_id,
                "settings": settings}
    status = "FAILED"
    try:
        if not ray.is_initialized():
            ray.init(address=opts.address, include_dashboard=False, logging_level=logging.WARNING,
                     runtime_env=_runtime_env(opts.address))
        trainable = tune.with_resources(tune.with_parameters(tune_trainable, data=data, tracking=tracking),
                                        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})
        searcher = OptunaSearch(metric=list(plan.objectives), mode=list(plan.objectives.values()),
                                sampler=make_sampler(opts.sampler, opts.seed), study_name=f"{opts.experiment}-{search_id}",
                                points_to_evaluate=_initial_points(plan))
        tuner = tune.Tuner(
            trainable,
            param_space=plan.space.tune_space(),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=opts.num_samples,
                                        max_concurrent_trials=opts.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name=f"{opts.experiment}-{search_id}", storage_path=opts.storage_path,
                                      failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                                      verbose=opts.verbose),
        )
        tuner.fit()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        marked = mlflow_store.close_search(client, experiment_id, parent_id, status)
        if marked:
            print(f"marked {marked} unfinished trial run(s) FAILED", flush=True)
    return _pareto_report(client, experiment_id, parent_id, plan.objectives, pareto_ranks)


def _initial_points(plan: Plan) -> list[dict[str, Any]] | None:
    """The space's warm-start points, except for random search (its draws must stay i.i.d.)."""
    if plan.options.sampler == "random" or not plan.space.initial_points:
        return None
    return plan.space.initial_points[: plan.options.num_samples]


def _runtime_env(address: str | None) -> dict[str, Any] | None:
    """Ship the project to remote workers when joining an existing cluster."""
    if address is None:
        return None
    return {"working_dir": str(PROJECT_ROOT),
            "excludes": [".git", "mlartifacts", "mlflow.db", "reports", "exports", "*.egg-info", "__pycache__"]}


def trials_frame(client: Any, experiment_id: str, parent_id: str) -> pd.DataFrame:
    """Finished child runs of a search as rows: run id, trial id, student, embedding, and metrics."""
    from search.mlflow_store import child_runs

    rows = []
    for run in child_runs(client, experiment_id, parent_id):
        if run.info.status != "FINISHED":
            continue
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        rows.append({"run_id": run.info.run_id, "trial_id": t.get("trial_id", ""), "student": p.get("student"),
                     "embedding": p.get("embedding"), "embedding_dim": p.get("embedding_dim"),
                     "energy_method": t.get("energy_method", ""), **m})
    return pd.DataFrame(rows)


def _pareto_report(client: Any, experiment_id: str, parent_id: str, objectives: dict[str, str],
                   pareto_ranks: Any) -> pd.DataFrame:
    df = trials_frame(client, experiment_id, parent_id)
    if df.empty:
        print("no trial finished; no Pareto front", flush=True)
        return df
    ranks = pareto_ranks(df[list(objectives)].to_numpy(dtype=float), list(objectives.values()))
    df["pareto_rank"] = ranks
    front = df[df["pareto_rank"] == 0].sort_values(list(objectives)[0], ascending=False)
    cols = ["trial_id", "student", "embedding", "embedding_dim", "accuracy", "size_bytes", "gzip_bytes",
            "energy_j", "energy_method", "run_id"]
    front = front[[c for c in cols if c in front.columns]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pareto_front.csv"
        front.to_csv(path, index=False)
        client.log_artifact(parent_id, str(path))
    print(f"\nPareto front over {', '.join(f'{k} ({v})' for k, v in objectives.items())}: "
          f"{len(front)} of {len(df)} finished trials", flush=True)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(front.to_string(index=False), flush=True)
    return front
