"""``run_search.py replay``: re-run an exported trial config as a new MLflow run and compare.

:func:`replay` re-runs a file written by :func:`analysis.export.export_configs` with
:func:`trainables.trial.run_trial` as a new, top-level MLflow run in the source's experiment
(tags ``featherweight.role=replay``, ``source_run_id``, ``source_search_id``; deliberately *not*
a child of the search, so a replay never counts as one of its trials), with the data folder,
teacher and logit cache the source search recorded in its parent run's params. A CPU trial is
deterministic, so the replay's metrics should equal the source's (timings and energy excepted).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.export import PERCENT_METRICS, minimal_config
from analysis.runs import _final_metrics, _open_store
from analysis.store import ROLE_TAG, find_experiment
from search.mlflow_store import source_tags
from search.tuner import build_trial_data
from spaces import Space
from trainables.config import resolve_config
from trainables.data.augment import prepare_for_space
from trainables.errors import ConfigError
from trainables.tracking import MlflowTracker
from trainables.trial import RunSettings, run_trial
from trainables.untrusted import check_output_folder, expand_path, load_yaml_file, short

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _read_export(path: Path) -> dict[str, Any]:
    """The mapping in an exported YAML, checked for ``config`` and ``source_run_id``.

    Raises:
        ConfigError: missing file, a file that is not UTF-8 or above
            :data:`trainables.untrusted.MAX_YAML_BYTES`, bad YAML (aliases included), a missing
            key, or a ``source_run_id`` that is not a run id.
    """
    doc = load_yaml_file(path, "config file")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc.get("source_run_id"):
        raise ConfigError(f"{path}: not an exported trial (needs a 'config' mapping and 'source_run_id'); "
                          f"make one with `run_search.py export`")
    source = doc["source_run_id"]
    if not isinstance(source, str) or not _RUN_ID.match(source):
        raise ConfigError(f"{path}: 'source_run_id' must be an MLflow run id (letters, digits, '-', '_'), "
                          f"got {short(source)}")
    uri = doc.get("tracking_uri")
    if uri is not None and not isinstance(uri, str):
        raise ConfigError(f"{path}: 'tracking_uri' must be text, got {short(uri)}")
    return doc


def _param_or(params: Mapping[str, str], key: str, given: str | None) -> str | None:
    """``given`` if set, else the parent param ``key`` (``hub``/empty -> ``None``)."""
    if given is not None:
        return given
    value = params.get(key, "")
    return None if value in ("", "hub") else value


def _validation_params(params: Mapping[str, str]) -> tuple[float, int, int]:
    """``(val_fraction, val_size, seed)`` a search recorded on its parent run (defaults when absent)."""
    try:
        return (float(params.get("val_fraction", "0.05")), int(float(params.get("val_size", "0"))),
                int(float(params.get("seed", "0"))))
    except ValueError:
        raise ConfigError(f"the source search's val_fraction/val_size/seed params are not numbers: "
                          f"{[params.get(k) for k in ('val_fraction', 'val_size', 'seed')]}") from None


def _compare(new: Mapping[str, Any], old: Mapping[str, float]) -> dict[str, float]:
    """``new - old`` for every numeric metric both have (percent metrics: percentage points)."""
    return {k: float(new[k]) - float(old[k]) for k in sorted(new)
            if k in old and isinstance(new[k], (int, float)) and not isinstance(new[k], bool)}


def _print_comparison(source: str, run_id: str, new: Mapping[str, Any], old: Mapping[str, float],
                      diff: Mapping[str, float]) -> None:
    """Print a table of original, replayed and difference per metric."""
    print(f"replay {run_id} of {source}:")
    print(f"  {'metric':<28}{'original':>16}{'replay':>16}{'difference':>16}")
    for k, d in diff.items():
        unit = " pp" if k in PERCENT_METRICS else ""
        print(f"  {k:<28}{old[k]:>16.6g}{float(new[k]):>16.6g}{d:>+16.6g}{unit}")


def replay(
    config_yaml: str | os.PathLike,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data_dir: str | None = None,
    teacher: str | None = None,
    workdir: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Re-run an exported trial config as a new MLflow run and compare it with the original.

    Args:
        config_yaml: a file written by :func:`export_configs`.
        tracking_uri: the store; ``None``: the YAML's ``tracking_uri``.
        experiment: experiment name or id of the new run; ``None``: the source run's.
        data_dir: GLUE folder; ``None``: the source search's ``data_dir`` param (``hub``:
            the Hugging Face hub).
        teacher: teacher folder or hub name; ``None``: the source search's ``teacher`` param.
        workdir: the trial folder (kept); ``None``: a temporary folder, removed afterwards
            (the student is logged to the run either way).
        cache_dir: teacher-logit cache; ``None``: the source search's ``cache_dir`` param,
            else the user cache.
        threads: torch threads; ``None``: the source search's ``cpus_per_trial`` (as its
            trials used), else 1. Determinism holds for the same thread count.
        device: ``cpu`` or ``cuda`` for training; ``None``: ``cuda`` when the source search
            gave trials GPUs (``gpus_per_trial`` > 0) and CUDA is available, else ``cpu``.
            Only CPU trials are bit-for-bit repeatable.

    Returns:
        ``{"run_id", "source_run_id", "experiment_id", "metrics" (the replay's final metrics),
        "original" (the source's final metrics), "diff" (replay - original per shared numeric
        metric; percent metrics in percentage points), "accuracy_diff_pp" (or ``None``),
        "data_matches" (the train/dev data hashes equal the source's), "device"}``. The
        comparison is also printed.

    Raises:
        ConfigError: bad YAML or config, store/source run/experiment not found, no data folder
            or teacher known, or data/teacher that cannot be loaded.
    """
    from mlflow.exceptions import MlflowException

    path = Path(config_yaml)
    doc = _read_export(path)
    config = minimal_config(doc["config"], str(path))  # run_trial resolves it to the exported config
    task = resolve_config(config, str(path))["task"]
    source_id = str(doc["source_run_id"])
    uri_arg = tracking_uri or doc.get("tracking_uri")
    if not uri_arg:
        raise ConfigError(f"{path}: no tracking_uri in the file; pass --tracking-uri")
    if tracking_uri is None and ":***@" in uri_arg:
        raise ConfigError(f"{path}: the file's tracking_uri {uri_arg} has its password masked; pass --tracking-uri")
    if workdir is not None:
        check_output_folder(workdir, "--workdir")
    for option, value in (("--data-dir", data_dir), ("--teacher", teacher), ("--cache-dir", cache_dir)):
        if value is not None:
            expand_path(value, option)
    client, uri = _open_store(uri_arg)
    try:
        source = client.get_run(source_id)
    except MlflowException:
        raise ConfigError(f"source run {source_id} of {path} is not in {uri}; pass --tracking-uri of its store") from None
    parent_id = source.data.tags.get("mlflow.parentRunId")
    parent_params: Mapping[str, str] = client.get_run(parent_id).data.params if parent_id else {}
    data_dir = _param_or(parent_params, "data_dir", data_dir)
    teacher = _param_or(parent_params, "teacher", teacher)
    cache_dir = _param_or(parent_params, "cache_dir", cache_dir)
    if not teacher:
        raise ConfigError(f"source run {source_id} records no teacher (its search's 'teacher' param); pass --teacher")
    if threads is None:
        try:
            threads = max(1, int(float(parent_params.get("cpus_per_trial", "1"))))
        except ValueError:
            threads = 1
    if device is None:
        import torch

        try:
            gpus = float(parent_params.get("gpus_per_trial", "0"))
        except ValueError:
            gpus = 0.0
        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got {device!r}")
    exp_id = find_experiment(client, experiment, uri).experiment_id if experiment else source.info.experiment_id

    val = _validation_params(parent_params)  # the source search's validation split
    data = build_trial_data(task, data_dir, teacher, cache_dir, *val)
    # the augmented transfer set the trial trained on (cached by the search: same key, same rows)
    data = prepare_for_space(data, Space(fixed=dict(config)), teacher, cache_dir)
    src_tags = source.data.tags
    data_matches = (src_tags.get("data_hash") in (None, data.train.data_hash)
                    and src_tags.get("val_data_hash") in (None, data.val.data_hash)
                    and src_tags.get("dev_data_hash") in (None, data.dev.data_hash))
    if not data_matches:
        log.warning("replay data differs from the source trial's (data_hash/dev_data_hash); metrics will differ")
    settings = RunSettings(threads=threads, device=device, tags={
        ROLE_TAG: "replay", "source_run_id": source_id,
        "source_search_id": src_tags.get("search_id", ""), "source_trial_id": src_tags.get("trial_id", ""),
        "source_experiment_id": source.info.experiment_id, **source_tags()})
    tracker = MlflowTracker(uri, exp_id, parent_run_id=None)
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="featherweight-replay-")
    try:
        final = run_trial(config, data, workdir or tmp, tracker, settings, run_name=f"replay-{source_id[:8]}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    original = _final_metrics(source)
    diff = _compare(final, original)
    _print_comparison(source_id, tracker.run_id or "", final, original, diff)
    metric = next((m for m in PERCENT_METRICS if m in diff), None)
    return {"run_id": tracker.run_id, "source_run_id": source_id, "experiment_id": exp_id,
            "metrics": {k: v for k, v in final.items()}, "original": original, "diff": diff,
            "accuracy_diff_pp": diff.get("accuracy", diff.get(metric) if metric else None),
            "data_matches": data_matches, "device": device}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``replay`` on ``run_search.py``'s subparsers."""
    p = subparsers.add_parser("replay", help="re-run an exported config as a new MLflow run and compare")
    p.add_argument("config", metavar="CONFIG.yaml", help="a file written by `run_search.py export`")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: the one named in the file)")
    p.add_argument("--experiment", default=None, help="experiment of the new run (default: the source run's)")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: the one the source search used)")
    p.add_argument("--teacher", default=None, help="teacher folder or hub name (default: the source search's)")
    p.add_argument("--cache-dir", default=None, help="teacher-logit cache (default: the source search's)")
    p.add_argument("--workdir", default=None, help="keep the trial folder here (default: a temporary one)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="training device (default: cuda when the source search used GPUs and one is here)")
    p.add_argument("--max-diff-pp", type=float, default=None,
                   help="exit 1 when |accuracy difference| exceeds this many percentage points")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    result = replay(args.config, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    data_dir=args.data_dir, teacher=args.teacher, workdir=args.workdir, cache_dir=args.cache_dir,
                    device=args.device)
    diff = result["accuracy_diff_pp"]
    if args.max_diff_pp is not None and (diff is None or abs(diff) > args.max_diff_pp):
        print(f"replay differs from the source by {diff} pp (allowed {args.max_diff_pp})")
        return 1
    return 0
