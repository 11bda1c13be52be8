"""MO-ASHA (search/moasha.py): the rung rules by hand, then real local Ray Tune runs.

The Ray tests share one local Ray (2 CPUs, started with ``address="local"`` so that no other
cluster on the machine is joined) and check every decision the scheduler made against the pure
core replayed on the values the trials reported.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from search.moasha import (
    MOASHACore,
    MOASHAScheduler,
    RungDecisionClient,
    crowding_distance,
    keep_count,
    rank_order,
    rung_levels,
)

ROOT = Path(__file__).resolve().parents[2]
NAN = float("nan")


# --- (b) rung levels -------------------------------------------------------------------------
@pytest.mark.parametrize("grace, eta, max_t, levels", [
    (1, 3, 27, (1, 3, 9, 27)),   # max_t on a level: it is the top rung
    (1, 3, 26, (1, 3, 9)),       # 27 > 26
    (1, 3, 9, (1, 3, 9)),
    (2, 2, 20, (2, 4, 8, 16)),
    (5, 4, 5, (5,)),             # grace_period == max_t: one rung
    (1, 2.5, 7, (1, 2.5, 6.25)),
    (0.1, 3, 0.9, (0.1, 0.1 * 3, 0.9)),  # 0.1*3*3 = 0.9000000000000001 is max_t within rounding
])
def test_rung_levels(grace, eta, max_t, levels):
    assert rung_levels(grace, eta, max_t) == pytest.approx(levels)
    assert MOASHACore(["max"], max_t=max_t, grace_period=grace, reduction_factor=eta).levels == pytest.approx(levels)


def test_integer_levels_stay_integers():
    assert all(isinstance(v, int) for v in rung_levels(1, 3, 100))


@pytest.mark.parametrize("grace, eta, max_t", [(0, 3, 9), (-1, 3, 9), (1, 1, 9), (1, 0.5, 9), (3, 3, 2),
                                               (1, 3, math.inf), (NAN, 3, 9), (True, 3, 9)])
def test_bad_levels_are_refused(grace, eta, max_t):
    with pytest.raises(ValueError):
        rung_levels(grace, eta, max_t)


def test_keep_count_rounds_up():
    assert [keep_count(n, 3) for n in range(1, 10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [keep_count(n, 2) for n in range(1, 6)] == [1, 1, 2, 2, 3]
    assert keep_count(5, 2.5) == 2 and keep_count(6, 2.5) == 3


# --- ranking pieces ------------------------------------------------------------------------
def test_crowding_distance_by_hand():
    # 4 distinct points of one front (both objectives minimised); per objective the extremes are inf:
    #   obj0 sorted: 0 (p0), 1 (p1), 2 (p2), 4 (p3), range 4 -> p1: (2-0)/4 = 0.5, p2: (4-1)/4 = 0.75
    #   obj1 sorted: 0 (p3), 2 (p2), 5 (p1), 8 (p0), range 8 -> p2: (5-0)/8 = 0.625, p1: (8-2)/8 = 0.75
    pts = [[0, 8], [1, 5], [2, 2], [4, 0]]
    assert crowding_distance(pts).tolist() == [math.inf, 1.25, 1.375, math.inf]
    # a repeat shares its vector's value; <= 2 distinct vectors are all at infinity
    assert crowding_distance([[1, 5], [0, 8], [1, 5]]).tolist() == [math.inf] * 3
    with pytest.raises(ValueError):
        crowding_distance([[1.0, NAN]])


def test_rank_order_directions_and_worst_values():
    # accuracy max, size min: row 1 dominates row 0; row 2 is on row 1's front; NaN, inf and None rank last
    vals = [[80, 300], [90, 200], [95, 900], [NAN, 1], [99, math.inf], [None, 5]]
    assert rank_order(vals, ["max", "min"]).tolist() == [1, 2, 0, 3, 4, 5]
    # the same rows with both maximised: row 2 dominates everything finite
    assert rank_order(vals[:3], ["max", "max"]).tolist() == [2, 0, 1]
    with pytest.raises(ValueError):
        rank_order([[1, 2]], ["max", "up"])
    with pytest.raises(TypeError):
        rank_order([[1]], "max")


# --- (a) a rung worked by hand ------------------------------------------------------------
def test_hand_worked_rung_two_objectives_mixed_directions():
    """accuracy (max) and size (min), reduction_factor 2: continue iff rank <= ceil(n / 2)."""
    core = MOASHACore(["max", "min"], max_t=8, grace_period=1, reduction_factor=2)
    assert core.levels == (1, 2, 4, 8)

    def decide(tid, acc, size):
        d = core.observe(tid, 1, [acc, size])
        return d.keep, d.rank, d.rung_size, d.keep_count

    # A (80, 100): first record; n=1, keep ceil(1/2)=1; rank 1 -> continue
    assert decide("A", 80, 100) == (True, 1, 1, 1)
    # B (70, 200) is dominated by A (less accurate, bigger): fronts {A} {B}; n=2, keep 1; rank 2 -> stop
    assert decide("B", 70, 200) == (False, 2, 2, 1)
    # C (90, 300): more accurate but bigger than A, so front 0 is {A, C}, front 1 {B}. Two distinct
    # vectors: both crowding distances are inf, the tie goes to the earlier record: A, C, B.
    # n=3, keep 2; C rank 2 -> continue
    assert decide("C", 90, 300) == (True, 2, 3, 2)
    # D (80, 100) repeats A: front 0 {A, C, D}; D is a repeat, so after A and C: A, C, D, B.
    # n=4, keep 2; rank 3 -> stop
    assert decide("D", 80, 100) == (False, 3, 4, 2)
    # E (85, 150): between A and C, on front 0. Distinct vectors of front 0: A (80,100), E, C (90,300).
    #   accuracy 80, 85, 90 (range 10): A, C inf; E (90-80)/10 = 1
    #   size 100, 150, 300 (range 200): A, C inf; E (300-100)/200 = 1      -> E = 2
    # order A (inf), C (inf), E (2), D (repeat), B.  n=5, keep 3; E rank 3 -> continue
    assert decide("E", 85, 150) == (True, 3, 5, 3)
    # F (60, 50): smallest, least accurate, on front 0. Distinct: F (60,50), A (80,100), E (85,150), C (90,300)
    #   accuracy 60, 80, 85, 90 (range 30): F, C inf; A (85-60)/30 = 0.8333; E (90-80)/30 = 0.3333
    #   size 50, 100, 150, 300 (range 250):  F, C inf; A (150-50)/250 = 0.4; E (300-100)/250 = 0.8
    #   A = 1.2333, E = 1.1333
    # order C (inf, 3rd record), F (inf, 6th record), A, E, D (repeat), B.  n=6, keep 3; F rank 2 -> continue
    assert decide("F", 60, 50) == (True, 2, 6, 3)
    assert core.ranking(1) == ["C", "F", "A", "E", "D", "B"]  # A and E continued earlier: decisions are final
    # G (NaN, 10): a NaN ranks after every finite record. n=7, keep 4; rank 7 -> stop
    assert decide("G", NAN, 10) == (False, 7, 7, 4)
    # H (90, 300) repeats C: repeats go after the first occurrences, then by crowding distance:
    # H (C's inf) before D (A's 1.2333): C, F, A, E, H, D, B, G.  n=8, keep 4; rank 5 -> stop
    assert decide("H", 90, 300) == (False, 5, 8, 4)
    assert core.ranking(1) == ["C", "F", "A", "E", "H", "D", "B", "G"]
    assert [core.is_stopped(t) for t in "ABCDEFGH"] == [False, True, False, True, False, False, True, True]


def test_recording_rules_pass_skip_missing_budget_and_stopped():
    core = MOASHACore(["max", "min"], max_t=9, grace_period=1, reduction_factor=3)  # levels 1, 3, 9
    # a result below the first rung records nothing
    assert core.observe("x", 0.5, [1, 1]).reason == "no_rung"
    # first passing rung 1 at t=2: recorded at 1 with the values at t=2
    d = core.observe("x", 2, [50, 10])
    assert (d.reason, d.rung, d.keep) == ("rung", 1, True)
    assert core.records(1) == [("x", (50.0, 10.0))]
    # t=2.5: still rung 1, already recorded -> nothing
    assert core.observe("x", 2.5, [1, 1]).reason == "no_rung"
    # a result without the objectives records nothing, even at a rung
    assert core.observe("x", 3, None).reason == "no_rung" and core.records(3) == []
    assert core.observe("x", 4, [55, 10]).rung == 3
    # y jumps from nothing to t=5: recorded at 3 only, never at 1
    d = core.observe("y", 5, [40, 20])
    assert (d.rung, d.rank, d.rung_size, d.keep) == (3, 2, 2, False)  # dominated by x
    assert [tid for tid, _ in core.records(1)] == ["x"]
    # a stopped trial stays stopped and is not recorded again
    d = core.observe("y", 9, [99, 1])
    assert (d.keep, d.reason) == (False, "stopped") and len(core.records(9)) == 0
    # t >= max_t: recorded at the top rung, then stopped for budget
    d = core.observe("x", 9, [60, 10])
    assert (d.keep, d.reason, d.rung, d.rank) == (False, "budget", 9, 1)
    assert core.progress() == {"x": (4, 9), "y": (None, 5)}
    with pytest.raises(ValueError):
        core.observe("z", NAN, [1, 1])
    with pytest.raises(ValueError):
        core.observe("z", 1, [1, 2, 3])


def test_stop_last_trials_false_lets_trials_run_past_max_t():
    core = MOASHACore(["min"], max_t=3, grace_period=1, reduction_factor=3, stop_last_trials=False)
    assert core.observe("a", 3, [1.0]).keep and core.observe("a", 4, [1.0]).keep


def test_state_round_trip_and_record():
    core = MOASHACore(["max", "min"], max_t=9, grace_period=1, reduction_factor=3)
    for tid, vals in [("a", [80, 100]), ("b", [70, 200]), ("c", [NAN, 1])]:
        core.observe(tid, 1, vals)
    core.observe("a", 3, [85, 100])
    state = json.loads(json.dumps(core.get_state()))  # plain JSON (NaN as the JSON extension literal)
    again = MOASHACore(["max", "min"], max_t=9, grace_period=1, reduction_factor=3)
    again.set_state(state)
    assert again.records(1)[:2] == core.records(1)[:2] and math.isnan(again.records(1)[2][1][0])
    assert again.progress() == core.progress() and again.is_stopped("b") and again.is_stopped("c")
    # the restored core decides as the original one would
    assert again.observe("d", 1, [75, 150]) == core.observe("d", 1, [75, 150])
    # record(): re-seeding one rung value; a trial already recorded at or above that level is left alone
    assert again.record("e", 3, [90, 90]) and not again.record("e", 1, [1, 1]) and not again.record("a", 3, [0, 0])
    assert [t for t, _ in again.records(3)] == ["a", "e"]
    with pytest.raises(ValueError):
        again.record("f", 2, [1, 1])  # not a level
    other = MOASHACore(["max", "min"], max_t=27, grace_period=1, reduction_factor=3)
    with pytest.raises(ValueError, match="rung levels"):
        other.set_state(state)
    with pytest.raises(ValueError, match="malformed"):
        again.set_state({"version": 1, "modes": ["max", "min"]})


def test_scheduler_arguments_and_search_properties():
    sched = MOASHAScheduler(["acc", "size"], ["max", "min"], max_t=9)
    assert sched.levels == (1, 3, 9) and sched.time_attr == "training_iteration"
    # TuneConfig without metric/mode (multi-objective OptunaSearch): accepted
    assert sched.set_search_properties(None, None)
    # a TuneConfig metric that is one of the objectives with its mode: accepted; anything else refused
    assert sched.set_search_properties("acc", "max") and sched.set_search_properties("size", None)
    assert not sched.set_search_properties("acc", "min")
    assert not sched.set_search_properties("loss", "min")
    assert not sched.set_search_properties(None, "max")
    assert sched.metric is None  # Tune's strict single-metric check of results stays off
    for metrics, modes, board in [([], [], None), ("acc", ["max"], None), (["a", "a"], ["max", "max"], None),
                                  (["a"], ["max", "min"], None), (["a"], ["up"], None), (["a"], ["max"], "")]:
        with pytest.raises(ValueError):
            MOASHAScheduler(metrics, modes, max_t=9, decision_board=board)
    with pytest.raises(ValueError, match="decision_board"):
        sched.decision_client()
    # a result with the time attribute but no objective records nothing; one without it decides nothing
    assert sched.observe("t", {"training_iteration": 1, "acc": 1.0}).reason == "no_rung"
    assert sched.observe("t", {"acc": 1.0, "size": 2}) is None
    assert sched.record("t", 1, {"acc": 1.0, "size": 2}) and sched.core.records(1) == [("t", (1.0, 2.0))]


def test_scheduler_save_restore_json(tmp_path):
    sched = MOASHAScheduler(["acc", "size"], ["max", "min"], max_t=9)
    sched.observe("a", {"training_iteration": 1, "acc": 1.0, "size": 2})
    sched.observe("b", {"training_iteration": 1, "acc": 0.5, "size": 3})
    sched.save(str(tmp_path / "moasha.json"))
    fresh = MOASHAScheduler(["acc", "size"], ["max", "min"], max_t=9)
    fresh.restore(str(tmp_path / "moasha.json"))
    assert fresh.get_state() == sched.get_state() and fresh.core.is_stopped("b")


# --- Ray -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_address():
    import ray
    from ray import cloudpickle

    # the trainables below live in this test module, which Ray workers cannot import by name
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def _objectives(config: dict, t: int) -> dict:
    """Deterministic objectives: accuracy (percent, max) grows with t towards a ceiling that grows with
    width and shrinks with `bad`; size (bytes, min) grows with width. So width trades accuracy against
    size, and `bad` makes a trial dominated."""
    w, bad = config["width"], config["bad"]
    return {"acc": (50 + 40 * w) * (1 - bad) * (1 - 0.5 ** t), "size": 1000.0 * (1 + 9 * w)}


def _plain_trainable(config):
    from ray import tune

    for t in range(1, 10):
        time.sleep(0.05)
        tune.report({**_objectives(config, t), "epoch": t})


def _graceful_trainable(config, rung_decision):
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    waits = []
    for t in range(1, 10):
        time.sleep(0.05)
        tune.report({**_objectives(config, t), "epoch": t})
        start = time.perf_counter()
        keep = rung_decision(trial_id, t, timeout_s=30)
        waits.append(time.perf_counter() - start)
        assert keep is not None, "no decision within 30 s"
        if keep is False and t < 9:
            # finalize: here our trainable saves and evaluates its best student, then ends normally
            tune.report({**_objectives(config, t), "epoch": t, "early_stopped": 1, "stopped_at_epoch": t,
                         "max_decision_wait_s": max(waits)})
            return
    tune.report({**_objectives(config, 9), "epoch": 9, "early_stopped": 0, "max_decision_wait_s": max(waits)})


def _rows(results) -> list[list[dict]]:
    """Each trial's reported results (Tune's result.json, with the moasha_* keys) as lists of dicts."""
    out = []
    for res in results:
        assert res.metrics_dataframe is not None
        out.append(res.metrics_dataframe.to_dict("records"))
    return out


def _rung_records(trials_rows: list[list[dict]]) -> dict[float, list[dict]]:
    """Every rung decision the scheduler made, from the moasha_* keys of the trials' results, per rung,
    in the order the records were made (the n-th record at a rung has moasha_rung_size n). The last
    decision per (trial, rung) counts (a resumed trial may repeat results its checkpoint did not keep)."""
    per_rung: dict[float, dict[str, dict]] = {}
    for rows in trials_rows:
        for row in rows:
            rung = row.get("moasha_rung")
            if rung is not None and not (isinstance(rung, float) and math.isnan(rung)):
                per_rung.setdefault(float(rung), {})[row["trial_id"]] = row
    out = {}
    for level, rows in per_rung.items():
        ordered = sorted(rows.values(), key=lambda r: r["moasha_rung_size"])
        # no record lost, none counted twice: sizes are exactly 1..N
        assert [int(r["moasha_rung_size"]) for r in ordered] == list(range(1, len(ordered) + 1)), level
        out[level] = ordered
    return out


def _check_against_core(records: dict[float, list[dict]], max_t: int) -> None:
    """Replay the recorded values through a fresh MOASHACore and compare every decision."""
    core = MOASHACore(["max", "min"], max_t=max_t, grace_period=1, reduction_factor=3)
    for level in sorted(records):
        for row in records[level]:
            d = core.observe(row["trial_id"], row["epoch"], [row["acc"], row["size"]])
            assert (d.rung, d.rank, d.rung_size, d.keep_count, d.keep) == (
                level, row["moasha_rank"], row["moasha_rung_size"], row["moasha_keep_count"],
                bool(row["moasha_continue"])), row["trial_id"]


# 8 configurations: two dominated ones (bad > 0) come last, so they never are the first record at rung 1
CONFIGS = [{"width": w, "bad": b} for w, b in [(0.5, 0.0), (0.2, 0.0), (0.9, 0.0), (0.35, 0.0), (0.7, 0.0),
                                               (0.6, 0.0), (0.5, 0.3), (0.2, 0.4)]]


def test_ray_tune_run_with_multi_objective_optuna(ray_address, tmp_path):
    """A real Tune run: OptunaSearch (2 objectives, no TuneConfig metric/mode), 4 concurrent trials,
    reused actors; trials are stopped at rungs by STOP and the rest reach max_t."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    sched = MOASHAScheduler(["acc", "size"], ["max", "min"], time_attr="epoch", max_t=9, grace_period=1,
                            reduction_factor=3)
    searcher = OptunaSearch(metric=["acc", "size"], mode=["max", "min"], points_to_evaluate=CONFIGS,
                            sampler=optuna.samplers.RandomSampler(seed=0))
    tuner = tune.Tuner(
        tune.with_resources(_plain_trainable, {"cpu": 0.5}),
        param_space={"width": tune.uniform(0, 1), "bad": tune.uniform(0, 0.5)},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=sched, num_samples=len(CONFIGS),
                                    max_concurrent_trials=4, reuse_actors=True),
        run_config=tune.RunConfig(name="moasha-optuna", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[sched.state_callback()]))
    results = tuner.fit()
    assert results.num_errors == 0 and len(results) == len(CONFIGS)
    records = _rung_records(_rows(results))
    _check_against_core(records, max_t=9)
    assert len(records[1]) == len(CONFIGS)  # every trial reached rung 1
    last_epoch = {r.metrics["trial_id"]: r.metrics["epoch"] for r in results}
    stopped = {row["trial_id"]: lvl for lvl, rows in records.items() for row in rows
               if not row["moasha_continue"] and row["moasha_reason"] == "rung"}
    assert stopped and len(stopped) < len(CONFIGS)
    for tid, epoch in last_epoch.items():  # a stopped trial reported nothing after its rung; the others ran to 9
        assert epoch == stopped.get(tid, 9)
    # the dominated configurations (never first at rung 1) are stopped there
    bad_ids = {r.metrics["trial_id"] for r in results if r.config["bad"] > 0}
    assert all(stopped.get(tid) == 1 for tid in bad_ids)
    # the driver's scheduler holds the same records
    for level, rows in records.items():
        assert [tid for tid, _ in sched.core.records(level)] == [row["trial_id"] for row in rows]


def test_graceful_mode_trainable_finalizes_and_ends_terminated(ray_address, tmp_path):
    """Graceful mode: the scheduler never returns STOP; the trainable asks the decision board after each
    report, finalizes with a last report (early_stopped, stopped_at_epoch) and ends TERMINATED."""
    from ray import tune

    board = f"moasha-test-{os.getpid()}-{time.time_ns()}"
    sched = MOASHAScheduler(["acc", "size"], ["max", "min"], time_attr="epoch", max_t=9, decision_board=board)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_graceful_trainable, rung_decision=sched.decision_client()),
                            {"cpu": 0.5}),
        param_space={"width": tune.grid_search([c["width"] for c in CONFIGS[:6]]), "bad": 0.0},
        tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=3, reuse_actors=True),
        run_config=tune.RunConfig(name="moasha-graceful", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[sched.state_callback()]))
    results = tuner.fit()
    assert results.num_errors == 0 and results.num_terminated == 6
    records = _rung_records(_rows(results))
    _check_against_core(records, max_t=9)
    stopped = {row["trial_id"]: lvl for lvl, rows in records.items() for row in rows
               if not row["moasha_continue"] and row["moasha_reason"] == "rung"}
    assert stopped and len(stopped) < 6
    for res in results:
        m, tid = res.metrics, res.metrics["trial_id"]
        assert res.error is None
        if tid in stopped:  # finalized by the trainable itself, right after the stop decision
            assert (m["early_stopped"], m["stopped_at_epoch"], m["epoch"]) == (1, stopped[tid], stopped[tid])
            assert res.metrics_dataframe["epoch"].tolist() == list(range(1, int(stopped[tid]) + 1)) + [stopped[tid]]
        else:
            assert (m["early_stopped"], m["epoch"]) == (0, 9)
        assert m["max_decision_wait_s"] < 30
    # the board still answers: a stop at t0 answers every t >= t0; unknown trials time out with None
    client = sched.decision_client()
    tid, level = next(iter(stopped.items()))
    assert client(tid, level, timeout_s=5) is False and client(tid, level + 4, timeout_s=5) is False
    start = time.perf_counter()
    assert client("no-such-trial", 1, timeout_s=0.5) is None and time.perf_counter() - start < 10
    assert RungDecisionClient("no-such-board")("x", 1, timeout_s=1) is None


def test_board_learns_restored_state(ray_address):
    """After set_state (a restored search), the next trial makes the scheduler republish what it knows,
    so a resumed trainable can ask about its checkpoint's epoch without waiting."""
    board = f"moasha-restore-{os.getpid()}-{time.time_ns()}"
    old = MOASHAScheduler(["acc", "size"], ["max", "min"], max_t=9, decision_board=board)
    old.observe("a", {"training_iteration": 1, "acc": 80, "size": 100})
    old.observe("b", {"training_iteration": 1, "acc": 70, "size": 200})  # dominated: stopped at 1
    old.observe("a", {"training_iteration": 2, "acc": 81, "size": 100})
    new = MOASHAScheduler(["acc", "size"], ["max", "min"], max_t=9, decision_board=board)
    new.set_state(json.loads(json.dumps(old.get_state())))

    class _Trial:  # on_trial_add only reads the trial id
        trial_id = "c"

    new.on_trial_add(None, _Trial())
    client = new.decision_client()
    start = time.perf_counter()
    assert client("b", 1, timeout_s=20) is False and client("b", 3, timeout_s=20) is False
    assert client("a", 2, timeout_s=20) is True and client("a", 1, timeout_s=20) is True
    assert time.perf_counter() - start < 20
    assert client("a", 3, timeout_s=0.3) is None  # nothing decided for a at 3 yet


RESUME_SCRIPT = textwrap.dedent('''
    """Driver for the resume test: `run` starts the search and kills itself; `restore` finishes it."""
    import json, os, signal, sys, tempfile, time
    sys.path.insert(0, sys.argv[4])
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "1"
    import ray
    from ray import tune
    from search.moasha import MOASHAScheduler

    mode, address, storage = sys.argv[1], sys.argv[2], sys.argv[3]
    PAUSE = os.path.join(storage, "pause")
    CONFIGS = %s

    def resume_trainable(config):
        w, bad = CONFIGS[config["cfg"]]["width"], CONFIGS[config["cfg"]]["bad"]
        start = 0
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d, open(os.path.join(d, "epoch.json")) as f:
                start = json.load(f)["epoch"]
        for t in range(start + 1, 10):
            while os.path.exists(PAUSE):
                time.sleep(0.05)
            time.sleep(0.15)
            res = {"epoch": t, "acc": (50 + 40 * w) * (1 - bad) * (1 - 0.5 ** t), "size": 1000.0 * (1 + 9 * w)}
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "epoch.json"), "w") as f:
                    json.dump({"epoch": t}, f)
                tune.report(res, checkpoint=tune.Checkpoint.from_directory(d))

    class KillDriver(tune.Callback):
        """Once a trial is stopped and another one runs past rung 1, pause the trials; once no result has
        come for 2.5 s (Tune saved its state meanwhile), write the scheduler state and SIGKILL the driver.
        Inert in any other process (Tuner.restore unpickles it too)."""

        def __init__(self, sched):
            self.sched, self.pid, self.last = sched, os.getpid(), time.time()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last = time.time()
            core = self.sched.core
            progress = core.progress().values()
            if (os.getpid() == self.pid and len(core.records(1)) >= 2 and any(stop is not None for _, stop in progress)
                    and any(cont is not None and stop is None for cont, stop in progress)):
                open(PAUSE, "w").close()

        def on_step_end(self, iteration, trials, **info):
            if os.getpid() == self.pid and os.path.exists(PAUSE) and time.time() - self.last > 2.5:
                with open(os.path.join(storage, "before_kill.json"), "w") as f:
                    json.dump(self.sched.get_state(), f)
                os.kill(os.getpid(), signal.SIGKILL)

    ray.init(address=address, logging_level="WARNING")
    trainable = tune.with_resources(resume_trainable, {"cpu": 1})
    if mode == "run":
        sched = MOASHAScheduler(["acc", "size"], ["max", "min"], time_attr="epoch", max_t=9)
        tuner = tune.Tuner(
            trainable, param_space={"cfg": tune.grid_search(list(range(len(CONFIGS))))},
            tune_config=tune.TuneConfig(scheduler=sched, max_concurrent_trials=2, reuse_actors=True),
            run_config=tune.RunConfig(name="resume", storage_path=storage, verbose=0,
                                      callbacks=[sched.state_callback(), KillDriver(sched)]))
        tuner.fit()
        sys.exit(3)  # not reached: the callback kills the driver
    os.unlink(PAUSE)
    results = tune.Tuner.restore(os.path.join(storage, "resume"), trainable).fit()
    rows = {r.metrics["trial_id"]: r.metrics_dataframe.to_dict("records") for r in results}
    print("RESULT " + json.dumps({"errors": results.num_errors, "terminated": results.num_terminated, "rows": rows},
                                 default=str))
''') % repr(CONFIGS)


def test_resume_after_the_driver_is_killed(ray_address, tmp_path):
    """A driver (its own process, joined to the test's Ray) runs a grid of 8 trials, 2 at a time, and is
    SIGKILLed mid-search; Tuner.restore in a new driver finishes it. The rung records made before the
    kill are kept (the records after restore continue their count) and stopped trials stay stopped."""
    script = tmp_path / "driver.py"
    script.write_text(RESUME_SCRIPT)
    storage = tmp_path / "store"
    storage.mkdir()

    def drive(mode):
        return subprocess.run([sys.executable, str(script), mode, ray_address, str(storage), str(ROOT)], cwd=ROOT,
                              capture_output=True, text=True, timeout=240, check=False)

    run = drive("run")
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    before = json.loads((storage / "before_kill.json").read_text())
    restored = drive("restore")
    assert restored.returncode == 0, restored.stderr[-3000:]
    out = json.loads(next(line for line in restored.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert out["errors"] == 0 and out["terminated"] == len(CONFIGS)

    records = _rung_records(list(out["rows"].values()))
    _check_against_core(records, max_t=9)
    levels = [1, 3, 9]
    assert before["levels"] == levels
    for level, saved in zip(levels, before["rungs"]):
        # the records from before the kill come first, in their order: none lost, none repeated
        assert [row["trial_id"] for row in records.get(level, [])][:len(saved)] == [tid for tid, _ in saved]
    # the search went on after the restore: every trial is recorded at rung 1, more than before the kill
    assert len(records[1]) == len(CONFIGS) > len(before["rungs"][0])
    # trials stopped before the kill were not run again: their results end at the stop, without repeats
    assert before["stopped"]
    for tid, stop in before["stopped"].items():
        epochs = [row["epoch"] for row in out["rows"][tid]]
        assert epochs == list(range(1, int(stop) + 1)), tid
    # a trial that was running past rung 1 at the kill resumed from its checkpoint and went on
    running = [tid for tid in before["continued"] if tid not in before["stopped"]]
    assert running and all(out["rows"][tid][-1]["epoch"] > before["continued"][tid] for tid in running)
    # every trial's reported epochs are 1..last without a gap or repeat (resumed from its checkpoint)
    stopped = {row["trial_id"]: lvl for lvl, rows in records.items() for row in rows if not row["moasha_continue"]}
    for tid, rows in out["rows"].items():
        assert [row["epoch"] for row in rows] == list(range(1, int(stopped[tid]) + 1)), tid
