"""The checks a search runs on its input before anything starts (one pass, one-line errors).

:func:`search.tuner.plan_search` calls :func:`check_search_options` first (the command-line
values alone) and :func:`check_space` once the space and teacher are known (every cross-key
rule of the trial config, by the code the trial runs). ``resume`` rebuilds the options of a
stopped search from its parent run's tag with :func:`options_from_record`, which checks every
recorded value's type first. Nothing here writes anything or starts Ray; every failure is one
:class:`~trainables.errors.ConfigError`.

Example:
    >>> from search.tuner import SearchOptions
    >>> check_search_options(SearchOptions(cpus_per_trial=float("nan")))
    Traceback (most recent call last):
    ...
    trainables.errors.ConfigError: --cpus-per-trial must be a finite number above 0 and at most 1024, got nan
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from spaces import Space, check_trial_configs
from trainables.errors import ConfigError
from trainables.untrusted import check_location, check_output_folder, expand_path, short

__all__ = ["MAX_EXPERIMENT_NAME", "MAX_NUM_SAMPLES", "check_experiment_name", "check_search_options",
           "check_space", "options_from_record"]

#: Longest ``--experiment`` name (characters; MLflow stores names of up to 256).
MAX_EXPERIMENT_NAME = 200
#: Most trials one search may ask for.
MAX_NUM_SAMPLES = 1_000_000


def check_experiment_name(name: Any, option: str = "--experiment") -> str:
    """``name`` if it is a usable MLflow experiment name: non-blank printable text of at most
    :data:`MAX_EXPERIMENT_NAME` characters (folders derived from it are made safe with
    :func:`trainables.untrusted.safe_name`).

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{option} must be a non-empty name, got {short(name)}")
    if len(name) > MAX_EXPERIMENT_NAME or not name.isprintable():
        raise ConfigError(f"{option} must be printable text of at most {MAX_EXPERIMENT_NAME} characters, "
                          f"got {short(name)}")
    return name


def _finite(flag: str, value: Any, low: float, high: float, rule: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and low <= value <= high) or (rule.startswith("above") and value == low):
        raise ConfigError(f"{flag} must be a finite number {rule}, got {short(value)}")


def _integer(flag: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{flag} must be an integer from {low:,} to {high:,}, got {short(value)}")


def check_search_options(opts: Any) -> None:
    """Check the values of a :class:`search.tuner.SearchOptions` that need no file, store or network.

    Numbers are finite and in range (``--cpus-per-trial`` above 0 and at most 1,024,
    ``--gpus-per-trial`` 0 to 64, ``--num-samples`` 1 to :data:`MAX_NUM_SAMPLES`,
    ``--max-concurrent`` 1 to 10,000, ``--max-failures`` 0 to 1,000, ``--verbose`` 0 to 3),
    ``--experiment`` is a usable name (:func:`check_experiment_name`) and ``--cache-dir``, when
    given, is a folder that can be created (:func:`trainables.untrusted.check_output_folder`).

    Raises:
        ConfigError: the first value that is not allowed (one line naming its flag).
    """
    check_experiment_name(opts.experiment)
    _integer("--num-samples", opts.num_samples, 1, MAX_NUM_SAMPLES)
    _integer("--max-concurrent", opts.max_concurrent, 1, 10_000)
    _integer("--max-failures", opts.max_failures, 0, 1000)
    _integer("--verbose", opts.verbose, 0, 3)
    _finite("--cpus-per-trial", opts.cpus_per_trial, 0, 1024, "above 0 and at most 1024")
    _finite("--gpus-per-trial", opts.gpus_per_trial, 0, 64, "from 0 to 64")
    for flag, value in (("--space", opts.space), ("--task", opts.task), ("--sampler", opts.sampler)):
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ConfigError(f"{flag} must be non-empty text, got {short(value)}")
    for flag, value in (("--data-dir", opts.data_dir), ("--teacher", opts.teacher), ("--objectives", opts.objectives),
                        ("--address", opts.address), ("--storage-path", opts.storage_path),
                        ("--tracking-uri", opts.tracking_uri)):
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            raise ConfigError(f"{flag} must be text, got {short(value)}")
    for flag, value in (("--space", opts.space), ("--data-dir", opts.data_dir), ("--teacher", opts.teacher),
                        ("--cache-dir", opts.cache_dir), ("--storage-path", opts.storage_path)):
        if value is not None:
            (check_location if flag == "--storage-path" else expand_path)(value, flag)
    if opts.cache_dir is not None:
        check_output_folder(opts.cache_dir, "--cache-dir")


def check_space(space: Space, teacher: str | None = None, overrides: Mapping[str, Any] | None = None) -> int:
    """Check that every trial ``space`` can produce would pass the trial's own config checks.

    Runs :func:`spaces.check_trial_configs` (the trial config's cross-key rules over the space's
    fixed values, choices and range ends, and its initial points), the augmentation grid the
    driver must prepare (:func:`trainables.data.augment.augment_grid`) and, when ``student`` can
    be ``transformer``, ``transformer_layers`` against the teacher's layer count
    (:func:`trainables.models.transformer.check_teacher_layers`).

    Args:
        space: the space, with the ``--set`` values already fixed.
        teacher: the teacher folder or hub name.
        overrides: the ``--set`` values, named in errors.

    Returns:
        How many trial configs were resolved.

    Raises:
        ConfigError: the first config a trial would refuse (one line naming the combination).
    """
    from trainables.config import PARAMS
    from trainables.data.augment import augment_grid

    if overrides:
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
        space = replace(space, source=f"{space.source or 'search space'} with --set {shown}")
    resolved = check_trial_configs(space)
    augment_grid(space)
    grid = space.grid()
    if teacher and "transformer" in grid.get("student", [PARAMS["student"].default]):
        from trainables.models.transformer import check_teacher_layers

        layers = grid.get("transformer_layers", [PARAMS["transformer_layers"].default])
        check_teacher_layers(teacher, max(layers), where=space.source or "search space")
    return resolved


def _field_types(options_class: type) -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(options_class)
    out: dict[str, tuple[type, ...]] = {}
    for f in fields(options_class):
        hint = hints[f.name]
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        out[f.name] = tuple(typing.get_origin(m) or m for m in members)  # dict[str, Any] -> dict
    return out


def options_from_record(raw: Any, where: str, options_class: type) -> dict[str, Any]:
    """The ``options_class`` (:class:`search.tuner.SearchOptions`) values recorded as JSON on a
    search's parent run.

    Keys that are not options are dropped; every recorded value must have its option's type
    (an integer option may be recorded as an integral float). Values are checked again when
    the resumed search is planned.

    Args:
        raw: the tag's text.
        where: the run, for messages.
        options_class: the options dataclass whose fields and annotated types are read.

    Raises:
        ConfigError: not JSON, not a JSON object, or a value of the wrong type.
    """
    if not isinstance(raw, str):
        raise ConfigError(f"{where}: the recorded search options are missing")
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{where}: the recorded search options are not valid JSON ({type(e).__name__})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: the recorded search options are not a JSON object")
    out: dict[str, Any] = {}
    for name, kinds in _field_types(options_class).items():
        if name not in record:
            continue
        value = record[name]
        if int in kinds and isinstance(value, float) and value.is_integer() and float not in kinds:
            value = int(value)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            raise ConfigError(f"{where}: the recorded search option {name!r} = {short(value)} must be of type "
                              f"{' or '.join(k.__name__ for k in kinds)}")
        out[name] = value
    if "space" in out and not Path(out["space"]).name:
        raise ConfigError(f"{where}: the recorded search option 'space' = {short(out['space'])} is not a file")
    return out
