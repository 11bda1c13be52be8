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

from trainables.config import PARAMS, check_key, check_value, parse_stages
from trainables.errors import ConfigError
from trainables.untrusted import load_yaml_file, short

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


#: Integer ranges with fewer values than this are checked at every value by :meth:`Space.grid`.
GRID_INT_SPAN = 64


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

    def grid(self) -> dict[str, list[Any]]:
        """Key -> the values the cross-key checks try (:func:`check_trial_configs`): a fixed value;
        every value of a ``choice``; every integer of an ``int``/``logint`` range of at most
        :data:`GRID_INT_SPAN` values, else its two ends; the two ends of a float range."""
        out: dict[str, list[Any]] = {k: [v] for k, v in self.fixed.items()}
        for key, dist in self.params.items():
            if dist.kind == "choice":
                out[key] = list(dist.args)
            elif dist.kind in ("int", "logint") and dist.args[1] - dist.args[0] < GRID_INT_SPAN:
                out[key] = list(range(dist.args[0], dist.args[1] + 1))
            else:
                out[key] = list(dist.args)
        return out

    def with_fixed(self, values: Mapping[str, Any], where: str = "--set") -> "Space":
        """A copy where ``values`` (e.g. ``task``, ``seed`` from the CLI) are fixed, replacing searched keys."""
        params = {k: v for k, v in self.params.items() if k not in values}
        fixed = {**self.fixed, **{k: check_value(k, v, where) for k, v in values.items()}}
        points = [{k: v for k, v in p.items() if k in params} for p in self.initial_points]
        return Space(params, fixed, self.objectives, self.description, self.source, points)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: bounds must be finite numbers, got {short(value)}")
    return value


def _parse_dist(key: str, spec: Mapping[str, Any], where: str) -> Dist:
    if len(spec) != 1:
        raise ConfigError(f"{where}: give exactly one distribution, one of: {', '.join(DISTRIBUTIONS)}")
    kind, args = next(iter(spec.items()))
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}; allowed: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list):
        raise ConfigError(f"{where}: '{kind}' needs a list, got {short(args)}")
    if kind == "choice":
        if not args:
            raise ConfigError(f"{where}: 'choice' is empty; give at least one value")
        values = [check_value(key, v, where) for v in args]
        if key == "stages":
            for v in values:
                parse_stages(v, where)
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{where}: 'choice' repeats a value: {short(args)}")
        return Dist("choice", values)
    if len(args) != 2:
        raise ConfigError(f"{where}: '{kind}' needs [low, high], got {short(args)}")
    low, high = (_number(a, where) for a in args)
    ptype = PARAMS[key].kind
    if ptype not in ("int", "float"):
        raise ConfigError(f"{where}: '{key}' is a {ptype}; use 'choice'")
    if kind in ("int", "logint"):
        if ptype != "int" or int(low) != low or int(high) != high:
            raise ConfigError(f"{where}: '{kind}' needs integer bounds on an integer key, got {short(args)}")
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
        ConfigError: unknown metric, bad direction, a metric given twice, or empty.
    """
    if isinstance(spec, str):
        pairs = [p.split(":", 1) if ":" in p else [p, ""] for p in spec.split(",") if p.strip()]
        names = [k.strip() for k, _ in pairs]
        repeated = sorted({k for k in names if names.count(k) > 1})
        if repeated:
            raise ConfigError(f"{where}: objective {repeated[0]!r} is given more than once")
        spec = {k.strip(): (v.strip() or OBJECTIVE_METRICS.get(k.strip(), "")) for k, v in pairs}
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{where}: objectives must map metric names to max or min, got {short(spec)}")
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
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{source}: 'description' must be text, got a {type(description).__name__}")
    space = Space(description=description or "", source=source)
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


def check_trial_configs(space: Space) -> int:
    """Check, before any trial runs, that every trial of ``space`` passes the trial config's rules.

    The same code a trial calls first (:func:`trainables.config.resolve_config`) resolves every
    combination of the space's fixed values, choices and range ends that the cross-key rules
    can tell apart (:func:`trainables.config.check_config_grid` over :meth:`Space.grid`), and
    each initial point with the fixed values.

    Returns:
        How many configs were resolved.

    Raises:
        ConfigError: one line naming the file, the combination and the rule, e.g.
            ``space.yaml: a trial with student=ffn, hidden_dim=0: 'hidden_dim' = 0 is below its
            minimum 1 for student=ffn``.
    """
    from trainables.config import check_config_grid, resolve_config

    where = space.source or "search space"
    resolved = check_config_grid(space.grid(), where, shown=list(space.params) + list(space.fixed))
    for i, point in enumerate(space.initial_points):
        resolve_config({**space.fixed, **point}, f"{where}: initial_points[{i}]")
    return resolved + len(space.initial_points)


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
            raise ConfigError(f"{where}.{key}: {short(value)} is outside its distribution {dist.kind} {dist.args}")
        out[key] = value
    return out


def load_space(path: str | Path) -> Space:
    """Read and validate a YAML space file.

    Raises:
        ConfigError: missing or unreadable file, a file above
            :data:`trainables.untrusted.MAX_YAML_BYTES`, invalid YAML (aliases and repeated keys
            included, see :func:`trainables.untrusted.load_yaml_text`), or an invalid space.
    """
    path = Path(path)
    return parse_space(load_yaml_file(path, "search space file"), str(path))
