"""YAML search spaces: parsing, validation and mapping to Ray Tune / Optuna distributions.

A space file::

    description: what this space explores
    objectives: {accuracy: max, size_bytes: min, energy_j: min}   # optional
    params:
      student: {choice: [bilstm, rnn, ffn]}      # categorical
      lr: {loguniform: [1.0e-4, 1.0e-2]}         # log-uniform float, low > 0
      alpha: {uniform: [0.0, 1.0]}               # uniform float
      hidden_dim: {int: [50, 300]}               # uniform integer, both ends included
      vocab_size: {logint: [500, 20000]}         # log-uniform integer, both ends included
      epochs: 3                                  # a fixed value
    initial_points:                              # optional: configs evaluated first (Optuna
      - {student: ffn, lr: 0.003, ...}           # enqueue_trial), each naming every searched key

Every key must be a trial-config key (:data:`trainables.config.PARAMS`) and every value or
bound must be allowed for it. Errors are :class:`~trainables.config.ConfigError` with one line
naming the file, the key and what is allowed. Ray Tune domains are handed to ``OptunaSearch``,
which turns them into Optuna distributions.

Example:
    >>> space = parse_space({"params": {"lr": {"loguniform": [1e-4, 1e-2]}, "epochs": 2}}, "inline")
    >>> sorted(space.tune_space()), space.fixed["epochs"]
    (['lr'], 2)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainables.config import PARAMS, check_key, check_value, parse_stages
from trainables.errors import ConfigError

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int", "logint")
TOP_LEVEL_KEYS = ("description", "objectives", "params", "initial_points")
# metrics a search may optimise, with their natural direction
OBJECTIVE_METRICS = {
    "val_accuracy": "max", "accuracy": "max", "f1": "max", "accuracy_mismatched": "max", "accuracy_mean": "max",
    "size_bytes": "min", "gzip_bytes": "min", "num_params": "min", "nonzero_params": "min",
    "energy_j": "min", "energy_inference_j_per_1k": "min", "co2e_kg": "min",
    "latency_ms": "min", "throughput": "max", "train_time_s": "min",
}
#: ``val_accuracy`` is measured on the validation split carved from the training data: the
#: search selects on it, while ``accuracy`` (dev) stays the reported figure no decision saw.
DEFAULT_OBJECTIVES = {"val_accuracy": "max", "size_bytes": "min", "energy_j": "min"}
ENERGY_OBJECTIVES = ("energy_j", "energy_inference_j_per_1k", "co2e_kg")


@dataclass
class Dist:
    """One searched parameter: ``kind`` in :data:`DISTRIBUTIONS` and its ``args`` (bounds or choices)."""

    kind: str
    args: list[Any]

    def to_tune(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        low, high = self.args
        return {"uniform": lambda: tune.uniform(low, high), "loguniform": lambda: tune.loguniform(low, high),
                "int": lambda: tune.randint(low, high + 1), "logint": lambda: tune.lograndint(low, high + 1)}[self.kind]()


@dataclass
class Space:
    """A validated search space.

    Attributes:
        params: searched keys -> :class:`Dist`.
        fixed: keys held at one value in every trial.
        objectives: metric -> ``max``/``min`` (``None``: the space sets none).
        initial_points: full assignments of the searched keys to evaluate first (warm start).
        source: the file (or label) it came from, for messages.
    """

    params: dict[str, Dist] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    objectives: dict[str, str] | None = None
    description: str = ""
    source: str = ""
    initial_points: list[dict[str, Any]] = field(default_factory=list)

    def tune_space(self) -> dict[str, Any]:
        """Ray Tune ``param_space``: searched keys as Tune domains, fixed keys as constants."""
        return {**self.fixed, **{k: d.to_tune() for k, d in self.params.items()}}

    def with_fixed(self, values: Mapping[str, Any], where: str = "--set") -> "Space":
        """A copy where ``values`` (e.g. ``task``, ``seed`` from the CLI) are fixed, replacing searched keys."""
        params = {k: v for k, v in self.params.items() if k not in values}
        fixed = {**self.fixed, **{k: check_value(k, v, where) for k, v in values.items()}}
        points = [{k: v for k, v in p.items() if k in params} for p in self.initial_points]
        return Space(params, fixed, self.objectives, self.description, self.source, points)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: bounds must be finite numbers, got {value!r}")
    return value


def _parse_dist(key: str, spec: Mapping[str, Any], where: str) -> Dist:
    if len(spec) != 1:
        raise ConfigError(f"{where}: give exactly one distribution, one of: {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list):
        raise ConfigError(f"{where}: '{kind}' needs a list, got {args!r}")
    if kind == "choice":
        if not args:
            raise ConfigError(f"{where}: 'choice' is empty; give at least one value")
        values = [check_value(key, v, where) for v in args]
        if key == "stages":
            for v in values:
                parse_stages(v, where)
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}: 'choice' repeats a value: {args!r}")
        return Dist("choice", values)
    if len(args) != 2:
        raise ConfigError(f"{where}: '{kind}' needs [low, high], got {args!r}")
    low, high = (_number(a, where) for a in args)
    ptype = PARAMS[key].kind
    if ptype not in ("int", "float"):
        raise ConfigError(f"{where}: '{key}' is a {ptype}; use 'choice'")
    if kind in ("int", "logint"):
        if ptype != "int" or int(low) != low or int(high) != high:
            raise ConfigError(f"{where}: '{kind}' needs integer bounds on an integer key, got {args!r}")
        low, high = int(low), int(high)
    elif ptype == "int":
        raise ConfigError(f"{where}: '{key}' is an integer; use 'int', 'logint' or 'choice'")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got [{low}, {high}]")
    if kind in ("loguniform", "logint") and low <= 0:
        raise ConfigError(f"{where}: '{kind}' needs low > 0, got {low}")
    check_value(key, low, where)
    check_value(key, high, where)
    return Dist(kind, [low, high])


def parse_objectives(spec: Any, where: str) -> dict[str, str]:
    """Validate ``{metric: max|min}`` (or ``"accuracy:max,size_bytes:min"``).

    Raises:
        ConfigError: unknown metric, bad direction, or empty.
    """
    if isinstance(spec, str):
        pairs = [p.split(":", 1) if ":" in p else [p, ""] for p in spec.split(",") if p.strip()]
        spec = {k.strip(): (v.strip() or OBJECTIVE_METRICS.get(k.strip(), "")) for k, v in pairs}
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{where}: objectives must map metric names to max or min, got {spec!r}")
    out = {}
    for metric, mode in spec.items():
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(f"{where}: unknown objective {metric!r}; allowed: {', '.join(OBJECTIVE_METRICS)}")
        if mode not in ("max", "min"):
            raise ConfigError(f"{where}: objective {metric!r} direction must be max or min, got {mode!r}")
        out[metric] = mode
    return out


def parse_space(obj: Any, source: str) -> Space:
    """Validate a parsed YAML document and build a :class:`Space`.

    Raises:
        ConfigError: any structural or value error (one line naming ``source`` and the key).
    """
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{source}: a search space must be a mapping with a 'params' key")
    for key in obj:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{source}: unknown top-level key {key!r}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    params = obj.get("params")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{source}: 'params' must be a non-empty mapping of config keys")
    space = Space(description=str(obj.get("description", "")), source=source)
    for key, spec in params.items():
        where = f"{source}: params.{key}"
        check_key(str(key), f"{source}: params")
        if isinstance(spec, Mapping):
            space.params[key] = _parse_dist(key, spec, where)
        else:
            value = check_value(key, spec, where)
            if key == "stages":
                parse_stages(value, where)
            space.fixed[key] = value
    if obj.get("objectives") is not None:
        space.objectives = parse_objectives(obj["objectives"], f"{source}: objectives")
    points = obj.get("initial_points") or []
    if not isinstance(points, list):
        raise ConfigError(f"{source}: 'initial_points' must be a list of mappings")
    for i, point in enumerate(points):
        space.initial_points.append(_parse_point(point, space, f"{source}: initial_points[{i}]"))
    return space


def _parse_point(point: Any, space: Space, where: str) -> dict[str, Any]:
    if not isinstance(point, Mapping):
        raise ConfigError(f"{where}: must be a mapping of searched keys to values")
    extra = sorted(set(point) - set(space.params))
    missing = sorted(set(space.params) - set(point))
    if extra:
        raise ConfigError(f"{where}: {', '.join(map(repr, extra))} not searched; allowed: {', '.join(space.params)}")
    if missing:
        raise ConfigError(f"{where}: missing searched key(s) {', '.join(missing)}")
    out = {}
    for key, value in point.items():
        value = check_value(key, value, f"{where}.{key}")
        dist = space.params[key]
        inside = value in dist.args if dist.kind == "choice" else dist.args[0] <= value <= dist.args[1]
        if not inside:
            raise ConfigError(f"{where}.{key}: {value!r} is outside its distribution {dist.kind} {dist.args}")
        out[key] = value
    return out


def load_space(path: str | Path) -> Space:
    """Read and validate a YAML space file.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, or an invalid space.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search space file {str(path)!r} does not exist")
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{at}: {getattr(e, 'problem', None) or e}".splitlines()[0]) from None
    return parse_space(obj, str(path))
