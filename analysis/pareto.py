"""Pareto ranks, Pareto fronts and the hypervolume indicator of a set of trials.

Every function takes objective values as an ``(n, m)`` array (``n`` trials, ``m`` objectives,
in the units of their MLflow metrics, e.g. ``accuracy`` in percent and ``size_bytes`` in
bytes) plus one direction per objective, ``"max"`` or ``"min"``. Maximised objectives are
negated internally so that the library code only ever minimises.

Rows holding a NaN or an infinity (failed or unfinished trials) are *excluded*: they get rank
``-1``, never dominate or are dominated, and add nothing to a hypervolume.

Non-dominated sorting and the hypervolume come from `moocore
<https://multi-objective.github.io/moocore/python/>`_ (Lopez-Ibanez et al.): ranks as in
NSGA-II's fast non-dominated sort (Deb et al. 2002, "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 6(2)), hypervolume with the dimension-sweep algorithm of
Fonseca, Paquete & Lopez-Ibanez 2006 ("An improved dimension-sweep algorithm for the
hypervolume indicator", IEEE CEC).

Example:
    >>> import numpy as np
    >>> acc_size = np.array([[90.0, 400.0], [85.0, 100.0], [80.0, 300.0], [90.0, 400.0]])
    >>> pareto_ranks(acc_size, ["max", "min"]).tolist()
    [0, 0, 1, 0]
    >>> hypervolume(acc_size, ["max", "min"], reference=[70.0, 500.0])
    6500.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import moocore
import numpy as np
import pandas as pd

from trainables.errors import ConfigError

__all__ = [
    "DIRECTIONS",
    "pareto_ranks",
    "pareto_front",
    "default_reference",
    "hypervolume",
    "hypervolume_history",
]

DIRECTIONS = ("max", "min")
"""The accepted objective directions."""

_REFERENCE_PAD = 0.1  # fraction of the observed range added beyond the worst value


def _as_values(values: object, directions: Sequence[str]) -> np.ndarray:
    """Validate ``values`` (n, m) and ``directions`` (m,); return a float (n, m) copy.

    Raises:
        ConfigError: ``values`` is not numeric or not 2-D, or ``directions`` has the wrong
            length or a word other than ``"max"``/``"min"``.
    """
    if isinstance(directions, str):
        raise ConfigError(f"directions must be a list of 'max'/'min', one per objective, not the string {directions!r}")
    directions = list(directions)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ConfigError(f"objective direction {bad[0]!r} is not one of {DIRECTIONS}")
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"objective values must be numeric: {exc}") from None
    if arr.ndim == 1 and len(directions) == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ConfigError(f"objective values must be a 2-D (trials, objectives) array, got shape {arr.shape}")
    if arr.shape[1] != len(directions) or not directions:
        raise ConfigError(
            f"got {arr.shape[1]} objective columns but {len(directions)} directions; give one 'max'/'min' per column"
        )
    return arr


def _to_minimisation(arr: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Negate the maximised columns of ``arr`` (n, m) so every objective is minimised."""
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return arr * sign


def _finite_rows(arr: np.ndarray) -> np.ndarray:
    """Boolean mask (n,) of the rows of ``arr`` with no NaN and no infinity."""
    return np.isfinite(arr).all(axis=1)


def pareto_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Non-dominated sorting: the Pareto rank of every trial.

    Point ``a`` dominates ``b`` when it is at least as good in every objective and strictly
    better in one. Rank 0 is the first front (dominated by no trial), rank 1 the front of what
    remains once rank 0 is removed, and so on (Deb et al. 2002, NSGA-II). Identical points
    do not dominate each other and so share a rank.

    Args:
        values: objective values, shape ``(n, m)``, in the metrics' own units. A 1-D array is
            accepted when ``m == 1``.
        directions: ``m`` words, ``"max"`` or ``"min"``, one per column.

    Returns:
        int64 array of shape ``(n,)``; ``-1`` for rows with a NaN or infinite value, which
        take no part in the sorting.

    Raises:
        ConfigError: bad shape, non-numeric values or an unknown direction.

    Example:
        >>> pareto_ranks([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0], [float("nan"), 3.0]], ["max", "max"]).tolist()
        [0, 0, 1, -1]
    """
    arr = _as_values(values, directions)
    ranks = np.full(arr.shape[0], -1, dtype=np.int64)
    ok = _finite_rows(arr)
    if ok.any():
        ranks[ok] = moocore.pareto_rank(_to_minimisation(arr[ok], directions))
    return ranks


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str]) -> pd.DataFrame:
    """The rows of ``df`` on the first Pareto front (rank 0), sorted by the first objective.

    Args:
        df: one row per trial; must hold a numeric column per objective.
        objectives: ``{column: "max" | "min"}`` in the order that matters: the result is
            sorted ascending by the first column (ties keep their order in ``df``).

    Returns:
        A copy of the rank-0 rows of ``df`` (all columns, original index). Rows with a
        missing objective value are never on the front.

    Raises:
        ConfigError: no objectives, a column missing from ``df`` or not numeric, or a bad
            direction.

    Example:
        >>> df = pd.DataFrame({"accuracy": [90.0, 85.0, 80.0], "size_bytes": [400, 100, 300]})
        >>> pareto_front(df, {"size_bytes": "min", "accuracy": "max"})["size_bytes"].tolist()
        [100, 400]
    """
    cols = _objective_columns(df, objectives)
    ranks = pareto_ranks(df[cols].to_numpy(dtype=float), [objectives[c] for c in cols])
    front = df.loc[ranks == 0]
    return front.sort_values(cols[0], kind="mergesort").copy()


def _objective_columns(df: pd.DataFrame, objectives: Mapping[str, str]) -> list[str]:
    """Check that every objective is a numeric column of ``df``; return the column names.

    Raises:
        ConfigError: no objectives, a missing column, or a non-numeric column.
    """
    cols = list(objectives)
    if not cols:
        raise ConfigError("give at least one objective, e.g. {'accuracy': 'max', 'size_bytes': 'min'}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"objective column {missing[0]!r} is not in the trials table (columns: {list(df.columns)})")
    for c in cols:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise ConfigError(f"objective column {c!r} must be numeric, it has dtype {df[c].dtype}")
    return cols


def default_reference(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """The reference point used when the user gives none: the padded nadir point.

    Per objective, the worst observed value (the minimum of a ``"max"`` objective, the maximum
    of a ``"min"`` one) moved a further 10% of the observed range in the worse direction, so
    that the extreme points of the front still add volume. When all values of an objective
    are equal the pad is 10% of its absolute value, or 1.0 if that is 0. This follows the
    common "slightly worse than the nadir" advice (Ishibuchi et al. 2018, "How to specify a
    reference point in hypervolume calculation for fair performance comparison", Evolutionary
    Computation 26(3)). Hypervolumes are comparable only under the same reference point: fix
    one explicitly when comparing searches.

    Args:
        values: objective values, shape ``(n, m)``; rows with NaN/inf are ignored.
        directions: ``m`` words, ``"max"`` or ``"min"``.

    Returns:
        float array of shape ``(m,)`` in the objectives' own units and directions.

    Raises:
        ConfigError: bad input, or no row without a NaN/inf.

    Example:
        >>> default_reference([[90.0, 400.0], [80.0, 100.0]], ["max", "min"]).tolist()
        [79.0, 430.0]
    """
    arr = _as_values(values, directions)
    arr = arr[_finite_rows(arr)]
    if arr.shape[0] == 0:
        raise ConfigError("no trial has finite values for every objective; cannot choose a hypervolume reference point")
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    span = hi - lo
    pad = np.where(span > 0, span, np.where(lo != 0, np.abs(lo), 1.0)) * _REFERENCE_PAD
    is_max = np.array([d == "max" for d in directions])
    return np.where(is_max, lo - pad, hi + pad)


def _reference_min(values: np.ndarray, directions: Sequence[str], reference: object) -> np.ndarray:
    """The reference point (m,) in minimisation space; the default one when ``reference`` is None.

    Raises:
        ConfigError: the reference has the wrong length or is not finite.
    """
    if reference is None:
        ref = default_reference(values, directions)
    else:
        try:
            ref = np.array(reference, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise ConfigError(f"hypervolume reference must be numbers, got {reference!r}") from None
        if ref.shape[0] != len(directions):
            raise ConfigError(f"hypervolume reference has {ref.shape[0]} values, need one per objective ({len(directions)})")
        if not np.isfinite(ref).all():
            raise ConfigError(f"hypervolume reference must be finite, got {ref.tolist()}")
    return _to_minimisation(ref.reshape(1, -1), directions)[0]


def hypervolume(values: np.ndarray, directions: Sequence[str], reference: Sequence[float] | None = None) -> float:
    """The hypervolume indicator of a set of trials (Zitzler & Thiele 1998).

    The volume of objective space dominated by the trials and bounded by ``reference``
    (a point worse than the interesting trials in every objective). Trials that do not strictly
    beat the reference in every objective add nothing, nor do rows with NaN/inf. Computed by
    ``moocore.hypervolume`` (Fonseca, Paquete & Lopez-Ibanez 2006) after negating the
    maximised objectives.

    Args:
        values: objective values, shape ``(n, m)``, in the metrics' units.
        directions: ``m`` words, ``"max"`` or ``"min"``.
        reference: ``m`` values in the same units and directions as ``values``;
            ``None``: :func:`default_reference`.

    Returns:
        The hypervolume, in the product of the objectives' units (e.g. percent x bytes);
        ``0.0`` when no trial beats the reference. Log-transform an objective (e.g. pass
        ``log10(size_bytes)``) to weigh orders of magnitude equally.

    Raises:
        ConfigError: bad values, directions or reference.

    Example:
        >>> hypervolume([[2.0, 1.0], [1.0, 2.0]], ["max", "max"], reference=[0.0, 0.0])
        3.0
    """
    arr = _as_values(values, directions)
    ref = _reference_min(arr, directions, reference)
    pts = _to_minimisation(arr[_finite_rows(arr)], directions)
    pts = pts[(pts < ref).all(axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    return float(moocore.hypervolume(pts, ref=ref))


def hypervolume_history(
    values: np.ndarray, directions: Sequence[str], reference: Sequence[float] | None = None
) -> np.ndarray:
    """Hypervolume of the first ``i`` trials, for ``i = 1..n``, in the given (trial) order.

    The curve is non-decreasing; it shows how fast a search improves its Pareto front. The
    reference point is the same for every prefix: the given one, or :func:`default_reference`
    over *all* ``n`` trials. A trial that is dominated by the front so far (or is NaN/inf, or
    does not beat the reference) leaves the value unchanged, so only front updates call the
    library.

    Args:
        values: objective values, shape ``(n, m)``, rows in trial order.
        directions: ``m`` words, ``"max"`` or ``"min"``.
        reference: as in :func:`hypervolume`.

    Returns:
        float array of shape ``(n,)`` (units as :func:`hypervolume`); ``hist[-1]`` equals
        ``hypervolume(values, directions, reference)``.

    Raises:
        ConfigError: bad values, directions or reference.

    Example:
        >>> hypervolume_history([[1.0, 1.0], [0.5, 0.5], [2.0, 1.0]], ["max", "max"], [0.0, 0.0]).tolist()
        [1.0, 1.0, 2.0]
    """
    arr = _as_values(values, directions)
    ref = _reference_min(arr, directions, reference)
    pts = _to_minimisation(arr, directions)
    history = np.zeros(arr.shape[0], dtype=float)
    front = np.empty((0, arr.shape[1]), dtype=float)
    current = 0.0
    for i, p in enumerate(pts):
        if np.isfinite(p).all() and (p < ref).all() and not (front <= p).all(axis=1).any():
            front = np.vstack([front[~(p <= front).all(axis=1)], p])
            current = float(moocore.hypervolume(front, ref=ref))
        history[i] = current
    return history


#: Objectives whose hypervolume is taken on ``log10`` of their value, so that every order of
#: magnitude of size weighs the same (a student 10x smaller gains as much at 1 MB as at 10 kB).
LOG_SCALE_OBJECTIVES = frozenset({"size_bytes", "gzip_bytes", "fp32_bytes", "weights_bytes", "num_params",
                                  "nonzero_params"})
_ACCURACY_OBJECTIVES = frozenset({"val_accuracy", "accuracy", "accuracy_mismatched", "accuracy_mean"})
#: Fixed reference values of objectives no task property bounds (in their own units): a bound
#: no student trial of this service reaches, so every trial that measured them adds volume.
_FIXED_REFERENCE = {"energy_j": 3.6e6, "co2e_kg": 1.59 * 0.430, "energy_inference_j_per_1k": 1000.0,
                    "latency_ms": 1000.0, "throughput": 0.0, "train_time_s": 86400.0}


def hv_scale(values: object, objectives: Mapping[str, str]) -> np.ndarray:
    """Objective values on the hypervolume scale: ``log10`` for :data:`LOG_SCALE_OBJECTIVES`, as is otherwise.

    Args:
        values: shape ``(n, m)``, columns in the order of ``objectives``.
        objectives: ``{metric: "max"|"min"}``.

    Returns:
        float array ``(n, m)``; a non-positive size becomes NaN (ignored by :func:`hypervolume`).
    """
    arr = np.array(values, dtype=float).reshape(-1, len(objectives))
    for j, name in enumerate(objectives):
        if name in LOG_SCALE_OBJECTIVES:
            with np.errstate(divide="ignore", invalid="ignore"):
                arr[:, j] = np.where(arr[:, j] > 0, np.log10(np.where(arr[:, j] > 0, arr[:, j], 1.0)), np.nan)
    return arr


def task_reference(objectives: Mapping[str, str], majority_accuracy: float, teacher_bytes: float | None,
                   f1_of_majority: float = 0.0) -> list[float]:
    """The fixed hypervolume reference point of a task and its objectives, on :func:`hv_scale`.

    Two searches of the same task and objectives get the same point, so their hypervolumes
    compare. Per objective:

    - accuracies (``val_accuracy``, ``accuracy``, ...): the majority-class accuracy of the dev
      set (percent): a student must beat the constant classifier to add volume;
    - ``f1``: the F1 of the majority-class classifier (percent; 0 when the majority is negative);
    - sizes (bytes): ``log10`` of the teacher's float32 parameter bytes; parameter counts:
      ``log10`` of the teacher's parameters (bytes / 4): a student must be smaller than the teacher;
    - energy and speed objectives: the fixed bounds of ``_FIXED_REFERENCE`` (1 kWh of training
      energy, its CO2e at PUE 1.59 and 0.430 kg/kWh, 1000 J per 1k inferences, 1 s latency,
      0 examples/s, one day of training).

    Raises:
        ConfigError: a size objective without the teacher's size, or an objective with no rule.

    Example:
        >>> task_reference({"val_accuracy": "max", "size_bytes": "min"}, 50.92, 1e8)
        [50.92, 8.0]
    """
    out = []
    for name in objectives:
        if name in _ACCURACY_OBJECTIVES:
            out.append(float(majority_accuracy))
        elif name == "f1":
            out.append(float(f1_of_majority))
        elif name in LOG_SCALE_OBJECTIVES:
            if not teacher_bytes:
                raise ConfigError(f"objective {name!r} needs the teacher's size for its hypervolume reference; "
                                  f"pass --hv-reference")
            out.append(float(np.log10(teacher_bytes / (4.0 if "params" in name else 1.0))))
        elif name in _FIXED_REFERENCE:
            out.append(float(_FIXED_REFERENCE[name]))
        else:
            raise ConfigError(f"no fixed hypervolume reference for objective {name!r}; pass --hv-reference")
    return out
