"""The trainable's stop decision: the time budget and the scheduler's rung decision."""

from __future__ import annotations

import pickle
import time

from search.budget import TrialStopper


def _rung(answer):
    asked = []

    def decision(trial_id, epoch, timeout_s):
        asked.append((trial_id, epoch))
        return answer

    return decision, asked


def test_a_spent_budget_is_the_reason_even_when_the_rung_also_stops_the_trial():
    decision, asked = _rung(False)
    stopper = TrialStopper(decision, deadline=time.time() - 1)
    assert stopper.deadline_passed()
    assert stopper("t1", 1) == "time_budget"
    assert asked == []  # no wait for a rung decision once the budget is spent


def test_the_rung_decides_while_the_budget_lasts():
    stop, _ = _rung(False)
    go, asked = _rung(True)
    assert TrialStopper(stop, deadline=time.time() + 3600)("t1", 1) == "scheduler"
    assert TrialStopper(go, deadline=time.time() + 3600)("t2", 3) is None and asked == [("t2", 3)]
    assert TrialStopper(_rung(None)[0])("t3", 1) is None  # no decision in time: continue
    assert not TrialStopper().deadline_passed()


def test_the_stopper_travels_to_workers():
    stopper = pickle.loads(pickle.dumps(TrialStopper(None, deadline=time.time() - 1, timeout_s=5.0)))
    assert stopper("t1", 2) == "time_budget" and stopper.timeout_s == 5.0
