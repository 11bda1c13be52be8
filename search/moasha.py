"""MO-ASHA: multi-objective asynchronous successive halving, as a Ray Tune trial scheduler.

References:
    Schmucker, Donini, Zafar, Rawal & Archambeau 2021, "Multi-objective multi-fidelity
    hyperparameter optimization with application to fairness" (MO-ASHA: ASHA whose rung
    selection is a multi-objective ranking, Sec. 3). Li et al. 2020, "A system for massively
    parallel hyperparameter tuning" (ASHA, MLSys; Algorithm 2). Deb, Pratap, Agarwal & Meyarivan
    2002, "A fast and elitist multiobjective genetic algorithm: NSGA-II", IEEE TEVC 6(2)
    (non-dominated sorting, Sec. III-A; crowding distance, Sec. III-B).

The rules, exactly (:class:`MOASHACore` applies them; it needs no Ray):

* **Rungs.** The rung levels are ``grace_period * reduction_factor**k`` for ``k = 0, 1, ...``
  while the level is ``<= max_t``, in the units of the time attribute (epochs, iterations,
  seconds). ``grace_period=1, reduction_factor=3, max_t=27`` gives ``1, 3, 9, 27``;
  ``max_t=10`` gives ``1, 3, 9``.
* **Recording.** A result of a trial at time ``t`` is recorded at ``L``, the highest rung level
  ``<= t``, unless the trial already has a record at ``L`` or above. So a trial is recorded when
  it reaches a rung, or when it first passes it (a trial that jumps from below ``L1`` to beyond
  ``L2`` is recorded at ``L2`` only). The record is the vector of the result's objective values.
  Records are never removed, also not those of trials that were stopped or failed later.
* **Decision** (asynchronous, as in ASHA: nobody waits for a rung to fill). Let ``n`` be the
  number of records at ``L`` including the new one. The trial continues if and only if its
  1-based rank among those ``n`` records is ``<= ceil(n / reduction_factor)``, else it is
  stopped. ASHA's promotion rule takes the top ``floor(n / eta)`` because a trial that is not
  promoted yet can still be promoted once more records arrive; a stop is final, so this
  stopping variant (like Ray's ``ASHAScheduler``) rounds up. The first trial at a rung always
  continues, and the share that continues tends to ``1 / reduction_factor``.
* **Budget.** A result with ``t >= max_t`` stops its trial (``stop_last_trials=True``, the
  default) after being recorded; the trial has had its full budget, this is not an early stop.
* **Ranking** (the total order of the records of one rung, best first):

  1. records whose values are all finite numbers come first; a record with a NaN, an infinity
     or a non-numeric value (``None``) ranks after all of them (such a trial has diverged or
     reports nonsense, so it counts as worst);
  2. non-dominated sorting (NSGA-II, Deb et al. 2002, Sec. III-A, via ``moocore.pareto_rank``)
     with every ``"max"`` objective negated: front 0 first, then front 1, ...; identical
     vectors do not dominate each other and share a front;
  3. inside a front, the NSGA-II crowding distance (Sec. III-B), larger first, computed on the
     front's *distinct* vectors (identical vectors share one value, so duplicates neither gain
     nor lose by being duplicated), each objective's gaps divided by its range over the front;
     the extremes of each objective get infinity, an objective with range 0 adds nothing, and a
     front with at most two distinct vectors is all infinity. The paper also offers an
     epsilon-net (Salinas et al. 2021) for this step; crowding distance is used here because it
     is scale-free per objective (size in bytes and accuracy in percent would make a Euclidean
     epsilon-net follow the bytes alone) and needs no random or arbitrary seed point;
  4. a record whose vector equals an earlier record's at the same rung ranks after every
     first occurrence of its front (a repeat adds no diversity: it is what the NSGA-II crowded
     comparison would give if the repeat were absent), then among repeats by crowding distance;
  5. remaining ties (same front, same crowding distance, e.g. two boundary points) go to the
     earlier record at that rung: first recorded, first ranked.

  All of it is deterministic: the same records in the same order give the same decisions.
* **Missing values.** A result without the time attribute, or without any one of the
  objectives, is not recorded and decides nothing (the trial continues unless it was stopped
  before), like Ray's ``ASHAScheduler``. A stopped trial is never recorded again.

Graceful stop (for a trainable that finalizes a stopped trial itself)
---------------------------------------------------------------------
With ``decision_board="NAME"`` the scheduler never returns ``STOP``: it returns ``CONTINUE``
and publishes every decision to a small named Ray actor (:class:`DecisionBoard`, 0 CPUs, owned
by the driver and placed anywhere in the cluster). The trainable receives a
:class:`RungDecisionClient` (a picklable callable; pass it with ``tune.with_parameters``, so the
trainable never imports this module) and, after each ``tune.report`` whose time value is ``t``,
calls ``client(trial_id, t, timeout_s)``:

* ``True``: continue training;
* ``False``: the scheduler stopped the trial at ``t`` or earlier (at a rung, or at ``max_t``):
  the trainable stops training, saves and evaluates what it has, reports a final result (e.g.
  ``early_stopped=1``, ``stopped_at_epoch=t``) and returns normally, so the trial ends
  ``TERMINATED``;
* ``None``: no decision arrived within ``timeout_s`` seconds (driver busy, no board): continue;
  a stop decided meanwhile is answered at the next call (a stop at ``t0`` answers every
  ``t >= t0``).

``tune.report`` in a function trainable can return before the driver has processed that result
(result buffering, a checkpoint being saved), so the client waits on the board, up to
``timeout_s``. The board keeps, per trial, the highest ``t`` with a continue decision and the
``t`` of its stop; publishing is idempotent and order-free. The board's name must be the same in
the scheduler and the client, and unique per search on a cluster (e.g. the Tune experiment
name); a restored search (see below) uses the same name, and the restored scheduler republishes
what it knows, so a resumed trainable may ask about the epoch of its checkpoint first.

Resume
------
``Tuner.restore`` does not save or restore schedulers in Ray 2.x: the TuneController saves trial
states, the searcher and the callbacks, and the scheduler comes back from ``tuner.pkl`` as it was
when the ``Tuner`` was built (empty). Pass ``callbacks=[scheduler.state_callback()]`` in
``tune.RunConfig``: Tune saves that callback's state (the rung records, as plain lists) with the
experiment state, and on ``Tuner.restore`` the unpickled callback, which refers to the unpickled
scheduler, loads the records back before any trial is re-added. Stopped trials are
``TERMINATED`` in Tune's state, so Tune does not run them again, and the restored scheduler keeps
answering ``STOP`` (graceful mode: ``False``) for them. Decisions taken after the last
experiment-state save (at most ``TUNE_GLOBAL_CHECKPOINT_S`` earlier) are lost with the driver;
the trials that made them resume from a checkpoint and are recorded again. The same callback
adds ``moasha_*`` keys (rung, rank, rung size, keep count, decision) to each result that made a
record or a stop, so every decision is in the trials' ``result.json``. For a search that cannot
use the callback, :meth:`MOASHAScheduler.observe` replays past results (in the order they were
first reported) and :meth:`MOASHAScheduler.record` inserts rung records directly.
"""

from __future__ import annotations

import asyncio
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = [
    "DIRECTIONS",
    "DecisionBoard",
    "MOASHACore",
    "MOASHAScheduler",
    "MOASHAStateCallback",
    "RungDecision",
    "RungDecisionClient",
    "crowding_distance",
    "keep_count",
    "rank_order",
    "rung_levels",
]

DIRECTIONS = ("max", "min")
"""The accepted objective directions."""

STATE_VERSION = 1
"""Version of the dict that :meth:`MOASHACore.get_state` returns."""

_LEVEL_TOLERANCE = 1e-9  # relative slack when comparing a float rung level with max_t


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def rung_levels(grace_period: float, reduction_factor: float, max_t: float) -> tuple[float, ...]:
    """The rung levels ``grace_period * reduction_factor**k <= max_t``, ascending.

    Integers stay integers when ``grace_period`` and ``reduction_factor`` are integers (exact
    comparisons with integer epochs); otherwise they are floats, and a level within a relative
    1e-9 of ``max_t`` still counts as ``<= max_t``.

    Args:
        grace_period: the first level (> 0), in the time attribute's units (e.g. epochs).
        reduction_factor: ``eta`` (> 1), the ratio of consecutive levels.
        max_t: the largest time a trial may reach (>= ``grace_period``), same units.

    Returns:
        The levels, e.g. ``(1, 3, 9)`` for ``(1, 3, 9)`` or ``(1, 3, 10)``.

    Raises:
        ValueError: a value that is not a finite number, ``grace_period <= 0``,
            ``reduction_factor <= 1`` or ``max_t < grace_period``.

    Example:
        >>> rung_levels(1, 3, 27)
        (1, 3, 9, 27)
        >>> rung_levels(2, 2, 20)
        (2, 4, 8, 16)
    """
    grace_period = _check_number("grace_period", grace_period)
    reduction_factor = _check_number("reduction_factor", reduction_factor)
    max_t = _check_number("max_t", max_t)
    if grace_period <= 0:
        raise ValueError(f"grace_period must be > 0, got {grace_period!r}")
    if reduction_factor <= 1:
        raise ValueError(f"reduction_factor must be > 1, got {reduction_factor!r}")
    if max_t < grace_period:
        raise ValueError(f"max_t ({max_t!r}) must be >= grace_period ({grace_period!r})")
    levels = []
    level = grace_period
    while level <= max_t * (1 + _LEVEL_TOLERANCE):
        levels.append(min(level, max_t))  # a float level a rounding error above max_t is max_t
        level = level * reduction_factor
    return tuple(levels)


def keep_count(n: int, reduction_factor: float) -> int:
    """How many of ``n`` records at a rung continue: ``ceil(n / reduction_factor)``.

    Exact for integer ``reduction_factor``; for a float one the quotient is rounded to 9
    decimals first (so 5 / 2.5 is 2, not 3).

    Example:
        >>> [keep_count(n, 3) for n in range(1, 8)]
        [1, 1, 1, 2, 2, 2, 3]
    """
    if isinstance(reduction_factor, numbers.Integral):
        return -(-n // int(reduction_factor))
    return math.ceil(round(n / reduction_factor, 9))


def _as_minimisation(values: Any, directions: Sequence[str]) -> np.ndarray:
    """``values`` (n, m) as floats with the ``"max"`` columns negated; non-numbers become NaN."""
    rows = [[_to_float(v) for v in row] for row in values]
    arr = np.array(rows, dtype=float).reshape(len(rows), len(directions))
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return arr * sign


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def crowding_distance(points: Any) -> np.ndarray:
    """NSGA-II crowding distance of each point of one front (Deb et al. 2002, Sec. III-B).

    Computed on the distinct rows of ``points``; identical rows get the same value. For each
    objective, the distinct points sorted by it (ties in lexicographic order of the rows) give
    the two extremes infinity and every other point ``(next - previous) / (max - min)``; the
    distance is the sum over objectives. An objective whose range is 0 adds nothing, and with
    at most two distinct points every point is at infinity.

    Args:
        points: shape ``(k, m)``, finite values; directions do not matter (distances are
            symmetric).

    Returns:
        float array ``(k,)``, ``>= 0``, possibly ``inf``.

    Raises:
        ValueError: ``points`` is not 2-D or holds a NaN or an infinity.

    Example:
        >>> crowding_distance([[0.0, 3.0], [1.0, 1.0], [3.0, 0.0], [1.0, 1.0]]).tolist()
        [inf, 2.0, inf, 2.0]
    """
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D (points, objectives) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("crowding_distance needs finite values")
    if arr.shape[0] == 0:
        return np.zeros(0)
    unique, inverse = np.unique(arr, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    k = unique.shape[0]
    dist = np.zeros(k)
    if k <= 2:
        dist[:] = np.inf
    else:
        for j in range(unique.shape[1]):
            col = unique[:, j]
            span = col.max() - col.min()
            if span == 0:
                continue
            order = np.argsort(col, kind="stable")  # np.unique sorted the rows: ties go lexicographically
            dist[order[0]] = dist[order[-1]] = np.inf
            dist[order[1:-1]] += (col[order[2:]] - col[order[:-2]]) / span
    return dist[inverse]


def rank_order(values: Any, directions: Sequence[str]) -> np.ndarray:
    """The MO-ASHA total order of the records of one rung, best first (module docstring rules).

    Args:
        values: shape ``(n, m)``, row ``i`` is the ``i``-th record in arrival order, in the
            objectives' own units; NaN, infinities and non-numbers are allowed (worst).
        directions: ``m`` words, ``"max"`` or ``"min"``.

    Returns:
        int array ``(n,)``: row indices, best first (a permutation of ``range(n)``).

    Raises:
        ValueError: an unknown direction or a row with the wrong number of values.
        TypeError: ``directions`` is one string instead of a list.

    Example:
        >>> # (accuracy max, size min): 1 dominates 0; 2 is on 1's front; 3 has a NaN
        >>> rank_order([[80, 300], [90, 200], [95, 900], [float("nan"), 1]], ["max", "min"]).tolist()
        [1, 2, 0, 3]
    """
    directions = _check_directions(directions)
    rows = list(values)
    if any(len(row) != len(directions) for row in rows):
        raise ValueError(f"every record needs {len(directions)} values, one per direction")
    if not rows:
        return np.zeros(0, dtype=int)
    mins = _as_minimisation(rows, directions)
    finite = np.isfinite(mins).all(axis=1)
    finite_idx = np.flatnonzero(finite)
    order: list[int] = []
    if finite_idx.size:
        import moocore

        fronts = np.asarray(moocore.pareto_rank(mins[finite_idx]))
        for front in np.unique(fronts):
            members = finite_idx[fronts == front]  # ascending: arrival order
            crowd = crowding_distance(mins[members])
            _, first = np.unique(mins[members], axis=0, return_index=True)
            repeat = np.ones(len(members), dtype=bool)
            repeat[first] = False  # the first occurrence of each vector in the front
            key = np.lexsort((np.arange(len(members)), -crowd, repeat))  # last key sorts first
            order.extend(members[key].tolist())
    order.extend(np.flatnonzero(~finite).tolist())
    return np.array(order, dtype=int)


def _check_directions(directions: Sequence[str]) -> list[str]:
    if isinstance(directions, str):
        raise TypeError(f"modes must be a list of 'max'/'min', one per objective, not the string {directions!r}")
    directions = list(directions)
    if not directions:
        raise ValueError("at least one objective is needed")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"objective mode {bad[0]!r} is not one of {DIRECTIONS}")
    return directions


@dataclass(frozen=True)
class RungDecision:
    """What :meth:`MOASHACore.observe` decided for one result.

    Attributes:
        trial_id: the trial.
        time: the result's time value (time attribute units).
        keep: ``True`` to continue training, ``False`` to stop.
        reason: ``"rung"`` (recorded at a rung and ranked), ``"no_rung"`` (nothing recorded:
            below the first rung, already recorded at this rung, or values missing),
            ``"budget"`` (``time >= max_t``), ``"stopped"`` (stopped earlier, stays stopped).
        rung: the level recorded at, or ``None``.
        rank: 1-based rank among the rung's records, or ``None``.
        rung_size: number of records at the rung including this one, or ``None``.
        keep_count: ``ceil(rung_size / reduction_factor)``, or ``None``.
    """

    trial_id: str
    time: float
    keep: bool
    reason: str
    rung: float | None = None
    rank: int | None = None
    rung_size: int | None = None
    keep_count: int | None = None

    def as_result(self) -> dict[str, Any]:
        """The ``moasha_*`` keys that :class:`MOASHAStateCallback` adds to a Tune result."""
        out: dict[str, Any] = {"moasha_continue": self.keep, "moasha_reason": self.reason}
        if self.rung is not None:
            out.update(moasha_rung=self.rung, moasha_rank=self.rank, moasha_rung_size=self.rung_size,
                       moasha_keep_count=self.keep_count)
        return out


class MOASHACore:
    """MO-ASHA's rung records and decisions, without Ray (rules in the module docstring).

    Args:
        modes: one ``"max"``/``"min"`` per objective; values passed to :meth:`observe` follow
            this order.
        max_t: the largest time a trial may reach (time attribute units, e.g. epochs).
        grace_period: the first rung level (> 0), same units.
        reduction_factor: ``eta`` (> 1).
        stop_last_trials: stop a trial at ``t >= max_t`` (as Ray's ``ASHAScheduler``).

    Raises:
        ValueError: empty or unknown modes, or bad levels (see :func:`rung_levels`).
        TypeError: ``modes`` is one string instead of a list.

    Example:
        >>> core = MOASHACore(["max", "min"], max_t=9, grace_period=1, reduction_factor=3)
        >>> core.levels
        (1, 3, 9)
        >>> core.observe("a", 1, [80.0, 100.0]).keep   # first record at rung 1
        True
        >>> core.observe("b", 1, [70.0, 200.0]).keep   # dominated by a; ceil(2/3) = 1 continues
        False
    """

    def __init__(self, modes: Sequence[str], *, max_t: float, grace_period: float = 1,
                 reduction_factor: float = 3, stop_last_trials: bool = True):
        self.modes = _check_directions(modes)
        self.levels = rung_levels(grace_period, reduction_factor, max_t)
        self.grace_period, self.reduction_factor, self.max_t = grace_period, reduction_factor, max_t
        self.stop_last_trials = bool(stop_last_trials)
        self._rungs: list[list[tuple[str, tuple[float, ...]]]] = [[] for _ in self.levels]
        self._top: dict[str, int] = {}  # trial -> index of its highest recorded level
        self._stopped: dict[str, float] = {}  # trial -> time of its stop decision
        self._continued: dict[str, float] = {}  # trial -> highest time with a continue decision

    # -- queries ---------------------------------------------------------------------------
    def level_index(self, t: float) -> int | None:
        """Index of the highest level ``<= t``, or ``None`` when ``t`` is below the first."""
        idx = None
        for i, level in enumerate(self.levels):
            if t >= level:
                idx = i
        return idx

    def records(self, level: float) -> list[tuple[str, tuple[float, ...]]]:
        """``(trial_id, values)`` recorded at ``level``, in arrival order.

        Raises:
            ValueError: ``level`` is not one of :attr:`levels`.
        """
        return list(self._rungs[self._index_of(level)])

    def ranking(self, level: float) -> list[str]:
        """Trial ids recorded at ``level``, best first (:func:`rank_order`).

        Raises:
            ValueError: ``level`` is not one of :attr:`levels`.
        """
        recs = self._rungs[self._index_of(level)]
        return [recs[i][0] for i in rank_order([v for _, v in recs], self.modes)]

    def is_stopped(self, trial_id: str) -> bool:
        """Whether ``trial_id`` got a stop decision (at a rung or at ``max_t``)."""
        return trial_id in self._stopped

    def progress(self) -> dict[str, tuple[float | None, float | None]]:
        """Per trial: ``(highest time with a continue decision, time of its stop)``, ``None`` if none."""
        ids = set(self._continued) | set(self._stopped)
        return {tid: (self._continued.get(tid), self._stopped.get(tid)) for tid in sorted(ids)}

    def _index_of(self, level: float) -> int:
        for i, lv in enumerate(self.levels):
            if lv == level:
                return i
        raise ValueError(f"{level!r} is not a rung level; the levels are {list(self.levels)}")

    # -- updates ---------------------------------------------------------------------------
    def observe(self, trial_id: str, t: float, values: Sequence[Any] | None) -> RungDecision:
        """Record a result if it reaches or first passes a rung, and decide (module docstring).

        Args:
            trial_id: the trial.
            t: the result's time value (time attribute units).
            values: the objective values in :attr:`modes` order, or ``None`` when the result
                lacks one (nothing is recorded then). NaN, infinities and non-numbers rank worst.

        Returns:
            The :class:`RungDecision`.

        Raises:
            ValueError: ``t`` is not a number, or ``values`` has the wrong length.
        """
        t = _time_value(t)
        if values is not None and len(values) != len(self.modes):
            raise ValueError(f"expected {len(self.modes)} objective values, got {len(values)}")
        if trial_id in self._stopped:
            return RungDecision(trial_id, t, False, "stopped")
        decision = RungDecision(trial_id, t, True, "no_rung")
        idx = self.level_index(t)
        if values is not None and idx is not None and idx > self._top.get(trial_id, -1):
            recs = self._rungs[idx]
            recs.append((trial_id, tuple(_to_float(v) for v in values)))
            self._top[trial_id] = idx
            n = len(recs)
            order = rank_order([v for _, v in recs], self.modes)
            rank = int(np.flatnonzero(order == n - 1)[0]) + 1
            k = keep_count(n, self.reduction_factor)
            decision = RungDecision(trial_id, t, rank <= k, "rung", self.levels[idx], rank, n, k)
        if t >= self.max_t and self.stop_last_trials:
            decision = RungDecision(trial_id, t, False, "budget", decision.rung, decision.rank,
                                    decision.rung_size, decision.keep_count)
        if decision.keep:
            self._continued[trial_id] = max(t, self._continued.get(trial_id, t))
        else:
            self._stopped[trial_id] = t
        return decision

    def record(self, trial_id: str, level: float, values: Sequence[Any]) -> bool:
        """Insert a rung record without deciding (re-seeding from stored per-epoch metrics).

        Call it in the order the records were first made (that order breaks ties). A trial
        already recorded at ``level`` or above is left as it is. Stop decisions are not
        re-created: replay the results with :meth:`observe` for that.

        Args:
            trial_id: the trial.
            level: one of :attr:`levels`.
            values: the objective values in :attr:`modes` order.

        Returns:
            Whether a record was added.

        Raises:
            ValueError: ``level`` is not a rung level, or ``values`` has the wrong length.
        """
        idx = self._index_of(level)
        if len(values) != len(self.modes):
            raise ValueError(f"expected {len(self.modes)} objective values, got {len(values)}")
        if idx <= self._top.get(trial_id, -1):
            return False
        self._rungs[idx].append((trial_id, tuple(_to_float(v) for v in values)))
        self._top[trial_id] = idx
        return True

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue, as plain JSON-able data (lists, dicts, floats)."""
        return {
            "version": STATE_VERSION,
            "modes": list(self.modes),
            "levels": list(self.levels),
            "rungs": [[[tid, list(vals)] for tid, vals in recs] for recs in self._rungs],
            "stopped": dict(self._stopped),
            "continued": dict(self._continued),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace the records and decisions with ``state`` (from :meth:`get_state`).

        Raises:
            ValueError: a malformed state, another version, or modes or levels that differ
                from this core's (a search resumed with other scheduler settings).
        """
        try:
            if state["version"] != STATE_VERSION:
                raise ValueError(f"MO-ASHA state version {state['version']!r}, expected {STATE_VERSION}")
            if list(state["modes"]) != self.modes:
                raise ValueError(f"the saved MO-ASHA modes {state['modes']} differ from {self.modes}")
            if [float(v) for v in state["levels"]] != [float(v) for v in self.levels]:
                raise ValueError(f"the saved MO-ASHA rung levels {state['levels']} differ from "
                                 f"{list(self.levels)}; resume with the same grace_period, "
                                 "reduction_factor and max_t")
            rungs = [[(str(tid), tuple(_to_float(v) for v in vals)) for tid, vals in recs]
                     for recs in state["rungs"]]
            if len(rungs) != len(self.levels) or any(len(v) != len(self.modes) for recs in rungs for _, v in recs):
                raise ValueError("the saved MO-ASHA rung records do not match the levels and modes")
            stopped = {str(k): _time_value(v) for k, v in dict(state["stopped"]).items()}
            continued = {str(k): _time_value(v) for k, v in dict(state["continued"]).items()}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed MO-ASHA state: {exc!r}") from None
        top: dict[str, int] = {}
        for idx, recs in enumerate(rungs):
            for tid, _ in recs:
                top[tid] = max(idx, top.get(tid, -1))
        self._rungs, self._top, self._stopped, self._continued = rungs, top, stopped, continued

    def summary(self) -> str:
        """One line per rung: level, records, how many of them continue under the current ranking."""
        parts = []
        for level, recs in zip(self.levels, self._rungs):
            parts.append(f"rung {level}: {len(recs)} records, top {keep_count(len(recs), self.reduction_factor)}"
                         if recs else f"rung {level}: 0 records")
        return "; ".join(parts) + f"; {len(self._stopped)} trials stopped"


def _time_value(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or math.isnan(t):
        raise ValueError(f"the time value must be a number, got {t!r}")
    return t


class MOASHAScheduler(FIFOScheduler):
    """MO-ASHA (Schmucker et al. 2021) as a Ray Tune ``TrialScheduler``.

    Works with any function or class trainable, any searcher (multi-objective ``OptunaSearch``
    included), concurrent trials and ``reuse_actors=True``. It takes its objectives from
    ``metrics``/``modes``, so ``TuneConfig`` may have no ``metric``/``mode`` (multi-objective
    ``OptunaSearch`` forbids them); a ``TuneConfig`` metric that is one of ``metrics`` with its
    mode is accepted and ignored, any other makes Tune refuse the configuration.

    Args:
        metrics: the objectives' result keys, e.g. ``["val_accuracy", "size_bytes"]``.
        modes: ``"max"``/``"min"`` per metric.
        max_t: the largest time value a trial may reach (time attribute units).
        time_attr: the result key that measures progress, increasing per report
            (``training_iteration`` by default; ``epoch`` when the trainable reports it).
        grace_period: first rung level (> 0).
        reduction_factor: ``eta`` (> 1).
        stop_last_trials: stop trials at ``time_attr >= max_t``.
        decision_board: graceful mode (module docstring): the name of the :class:`DecisionBoard`
            actor to publish decisions to; the scheduler then never returns ``STOP``. ``None``
            (default): stops are ``TrialScheduler.STOP``.
        namespace: Ray namespace of the board (``None``: the driver's).

    Raises:
        ValueError: metrics empty, duplicated or not strings, modes of another length or
            unknown, bad levels (:func:`rung_levels`), or an empty board name.
        TypeError: ``modes`` is one string instead of a list.
    """

    def __init__(self, metrics: Sequence[str], modes: Sequence[str], *, max_t: float,
                 time_attr: str = "training_iteration", grace_period: float = 1,
                 reduction_factor: float = 3, stop_last_trials: bool = True,
                 decision_board: str | None = None, namespace: str | None = None):
        if isinstance(metrics, str) or not metrics or not all(isinstance(m, str) and m for m in metrics):
            raise ValueError(f"metrics must be a non-empty list of result keys, got {metrics!r}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must not repeat a key, got {list(metrics)}")
        modes = _check_directions(modes)
        if len(modes) != len(metrics):
            raise ValueError(f"got {len(metrics)} metrics but {len(modes)} modes; give one 'max'/'min' per metric")
        if decision_board is not None and (not isinstance(decision_board, str) or not decision_board):
            raise ValueError(f"decision_board must be a non-empty actor name, got {decision_board!r}")
        super().__init__()
        self.metrics = list(metrics)
        self.modes = modes
        self.time_attr = time_attr
        self.core = MOASHACore(modes, max_t=max_t, grace_period=grace_period,
                               reduction_factor=reduction_factor, stop_last_trials=stop_last_trials)
        self.decision_board = decision_board
        self.namespace = namespace
        self._board = None  # actor handle, created on the driver at the first trial
        self._last: dict[str, RungDecision] = {}  # for MOASHAStateCallback's result keys

    # Tune pickles the scheduler into tuner.pkl: leave out the actor handle and pending keys
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_board"] = None
        state["_last"] = {}
        return state

    @property
    def levels(self) -> tuple[float, ...]:
        """The rung levels (:func:`rung_levels`)."""
        return self.core.levels

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Accept Tune's ``TuneConfig`` metric/mode: ``None`` or one of ``metrics`` with its mode."""
        if metric is None:
            return mode is None
        if metric not in self.metrics:
            return False
        return mode is None or mode == self.modes[self.metrics.index(metric)]

    def values_of(self, result: Mapping[str, Any]) -> list[Any] | None:
        """The objective values of ``result`` in ``metrics`` order, or ``None`` if one is missing."""
        if any(m not in result for m in self.metrics):
            return None
        return [result[m] for m in self.metrics]

    def observe(self, trial_id: str, result: Mapping[str, Any]) -> RungDecision | None:
        """Feed one result (re-seeding: replay stored results in the order first reported).

        Returns:
            The decision, or ``None`` when ``result`` has no ``time_attr`` or its value is not a
            number (nothing is recorded or decided then).
        """
        t = result.get(self.time_attr)
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or math.isnan(t):
            return None
        return self.core.observe(trial_id, t, self.values_of(result))

    def record(self, trial_id: str, level: float, values: Sequence[Any] | Mapping[str, Any]) -> bool:
        """Insert a rung record (:meth:`MOASHACore.record`); ``values`` as a list or ``{metric: value}``.

        Raises:
            ValueError: not a rung level, wrong number of values, or a mapping without a metric.
        """
        if isinstance(values, Mapping):
            missing = [m for m in self.metrics if m not in values]
            if missing:
                raise ValueError(f"record for trial {trial_id} lacks {missing}")
            values = [values[m] for m in self.metrics]
        return self.core.record(trial_id, level, values)

    def get_state(self) -> dict[str, Any]:
        """The rung records and decisions (:meth:`MOASHACore.get_state`)."""
        return self.core.get_state()

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`get_state` output; in graceful mode the board learns it at the next trial.

        Raises:
            ValueError: see :meth:`MOASHACore.set_state`.
        """
        self.core.set_state(state)
        self._board = None  # republish everything on the next on_trial_add

    # -- Tune hooks ------------------------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        """Tune hook; in graceful mode, creates the board (or finds it) and republishes what is known."""
        if self.decision_board is not None:
            self._board_handle()

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        """Tune hook: record and decide (:meth:`observe`); ``STOP`` or ``CONTINUE`` (graceful mode:
        always ``CONTINUE``, the decision goes to the board)."""
        decision = self.observe(trial.trial_id, result)
        if decision is None:
            return TrialScheduler.CONTINUE
        if decision.rung is not None or not decision.keep:
            self._last[trial.trial_id] = decision
        if self.decision_board is not None:
            self._publish([(trial.trial_id, decision.time if decision.keep else None,
                            None if decision.keep else decision.time)])
            return TrialScheduler.CONTINUE
        return TrialScheduler.CONTINUE if decision.keep else TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        """Tune hook: the last result is recorded like any other (no decision is needed any more)."""
        if result and not self.core.is_stopped(trial.trial_id):
            self.observe(trial.trial_id, result)  # records nothing new if on_trial_result saw it

    def pop_decision(self, trial_id: str, t: Any) -> RungDecision | None:
        """The decision made for ``trial_id``'s result at time ``t``, once (for the callback)."""
        decision = self._last.get(trial_id)
        if decision is None or decision.time != t:
            return None
        del self._last[trial_id]
        return decision

    def debug_string(self) -> str:
        """Tune's status line: objectives, records per rung, trials stopped."""
        return f"Using MO-ASHA ({', '.join(f'{m}:{d}' for m, d in zip(self.metrics, self.modes))}): {self.core.summary()}"

    def save(self, checkpoint_path: str) -> None:
        """Write :meth:`get_state` as JSON to ``checkpoint_path``."""
        with open(checkpoint_path, "w") as f:
            json.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Load a file written by :meth:`save` (JSON, never unpickled).

        Raises:
            ValueError: malformed or mismatched state (:meth:`MOASHACore.set_state`).
            OSError: the file cannot be read.
        """
        with open(checkpoint_path) as f:
            self.set_state(json.load(f))

    # -- resume and graceful mode -----------------------------------------------------------
    def state_callback(self) -> MOASHAStateCallback:
        """A Tune callback that saves and restores this scheduler's records with the experiment.

        Pass it in ``tune.RunConfig(callbacks=[...])`` of the ``Tuner`` that uses this scheduler.
        """
        return MOASHAStateCallback(self)

    def decision_client(self) -> RungDecisionClient:
        """The client to give the trainable in graceful mode.

        Raises:
            ValueError: the scheduler was built without ``decision_board``.
        """
        if self.decision_board is None:
            raise ValueError("decision_client() needs a scheduler built with decision_board=NAME")
        return RungDecisionClient(self.decision_board, self.namespace)

    def _board_handle(self) -> Any:
        if self._board is None:
            import ray

            self._board = ray.remote(DecisionBoard).options(
                name=self.decision_board, namespace=self.namespace, get_if_exists=True, num_cpus=0,
                max_restarts=0).remote()
            known = [(tid, cont, stop) for tid, (cont, stop) in self.core.progress().items()]
            if known:
                self._board.publish.remote(known)
        return self._board

    def _publish(self, updates: list[tuple[str, float | None, float | None]]) -> None:
        self._board_handle().publish.remote(updates)  # fire and forget; publishing is idempotent


class MOASHAStateCallback(Callback):
    """Saves and restores a :class:`MOASHAScheduler`'s rung records with Tune's experiment state.

    Tune calls :meth:`get_state` at each experiment checkpoint and :meth:`set_state` on
    ``Tuner.restore`` (``ray.tune.Callback`` state API). It also adds the decision's
    ``moasha_*`` keys (:meth:`RungDecision.as_result`) to each result that made a rung record
    or a stop, before Tune writes the result to ``result.json``.

    Args:
        scheduler: the scheduler of the same ``Tuner``.
    """

    def __init__(self, scheduler: MOASHAScheduler):
        self.scheduler = scheduler

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: Any) -> None:
        """Tune hook (after the scheduler's): add the decision's ``moasha_*`` keys to ``result``."""
        decision = self.scheduler.pop_decision(trial.trial_id, result.get(self.scheduler.time_attr))
        if decision is not None:
            result.update(decision.as_result())

    def get_state(self) -> dict[str, Any] | None:
        """Tune hook at each experiment checkpoint: the scheduler's state (:meth:`MOASHACore.get_state`)."""
        return {"moasha": self.scheduler.get_state()}

    def set_state(self, state: dict) -> None:
        """Tune hook on ``Tuner.restore``: load the saved records into the scheduler.

        Raises:
            ValueError: the saved state does not fit the scheduler (:meth:`MOASHACore.set_state`).
        """
        self.scheduler.set_state(state["moasha"])


class DecisionBoard:
    """The graceful-mode decisions, as a named async Ray actor (one per search).

    Per trial it keeps the highest time with a continue decision and the time of the stop
    decision. :meth:`publish` merges updates (idempotent, in any order); :meth:`wait` answers
    ``False`` for a time at or after the stop, ``True`` for a time at or before a continue,
    and otherwise waits for an update.
    """

    def __init__(self) -> None:
        self._continued: dict[str, float] = {}
        self._stopped: dict[str, float] = {}
        self._changed = asyncio.Condition()

    async def publish(self, updates: Iterable[tuple[str, float | None, float | None]]) -> None:
        """Merge ``(trial_id, continued_up_to, stopped_at)`` updates (``None``: nothing to say)."""
        async with self._changed:
            for tid, cont, stop in updates:
                if cont is not None:
                    self._continued[tid] = max(cont, self._continued.get(tid, cont))
                if stop is not None:
                    self._stopped[tid] = min(stop, self._stopped.get(tid, stop))
            self._changed.notify_all()

    def _answer(self, trial_id: str, t: float) -> bool | None:
        stop = self._stopped.get(trial_id)
        if stop is not None and t >= stop:
            return False
        cont = self._continued.get(trial_id)
        if cont is not None and t <= cont:
            return True
        return None

    async def wait(self, trial_id: str, t: float, timeout_s: float) -> bool | None:
        """The decision for ``trial_id`` at time ``t``, waiting up to ``timeout_s`` seconds.

        Returns:
            ``True`` continue, ``False`` stop, ``None`` no decision in time.
        """
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._answer(trial_id, t) is not None),
                                       timeout=max(0.0, timeout_s))
            except TimeoutError:
                return None
            return self._answer(trial_id, t)


@dataclass(frozen=True)
class RungDecisionClient:
    """Graceful mode, trainable side: ``client(trial_id, t, timeout_s) -> True | False | None``.

    Picklable (a name and a namespace); build it on the driver with
    :meth:`MOASHAScheduler.decision_client` or from the same board name, and pass it to the
    trainable with ``tune.with_parameters``. Call it after each ``tune.report`` with the
    trial id (``ray.tune.get_context().get_trial_id()``) and the reported ``time_attr`` value.

    Attributes:
        board: the :class:`DecisionBoard` actor's name (the scheduler's ``decision_board``).
        namespace: its Ray namespace (``None``: the caller's job namespace, which Tune's
            trial actors share with the driver).
    """

    board: str
    namespace: str | None = None

    def __call__(self, trial_id: str, t: float, timeout_s: float = 60.0) -> bool | None:
        """``True`` continue, ``False`` stop (at ``t`` or earlier), ``None`` no decision in ``timeout_s`` s.

        Also ``None`` when the board does not exist (not graceful mode, or no driver) or its
        actor is gone. Blocks at most about ``timeout_s`` seconds.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        try:
            board = ray.get_actor(self.board, namespace=self.namespace)
        except ValueError:
            return None
        try:
            return ray.get(board.wait.remote(trial_id, float(t), float(timeout_s)), timeout=float(timeout_s) + 30)
        except (GetTimeoutError, RayError):
            return None
