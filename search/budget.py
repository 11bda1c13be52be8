"""When trials stop early: a rung decision of the multi-objective scheduler, or a spent time budget.

Both stop a trial *gracefully*: the trainable asks :class:`TrialStopper` after each epoch's
report and, when told to stop, ends distillation and finishes like any trial (its best epoch's
student saved, evaluated and logged; tags ``early_stopped=true``, ``stopped_at_epoch`` and
``stop_reason``), so no MLflow run is left unfinished.

``--time-budget-s`` (a search's wall-clock budget, seconds) works on two sides:

- :class:`DeadlineSearcher` wraps the search algorithm and returns ``Searcher.FINISHED`` once the
  budget is spent, so Tune starts no new trial and ends when the running ones have finished;
- :class:`TrialStopper` ends the epoch a running trial is in once the deadline has passed (it is
  asked after every distillation batch) and stops the trial after it; that partial epoch is
  validated and reported like any other (``partial_epoch`` 1.0). Compression stages that follow
  still run, so a trial ends a little after the deadline.

A resumed search gets the same budget again, counted from the resume.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune.search import Searcher


class DeadlineSearcher(Searcher):
    """A search algorithm that suggests no trial once ``budget_s`` seconds have passed.

    The clock starts at the first suggestion of each driver (a new or a resumed search); every
    other call goes to ``searcher``.

    Args:
        searcher: the wrapped search algorithm (e.g. ``OptunaSearch``).
        budget_s: the budget, seconds (> 0).
    """

    def __init__(self, searcher: Searcher, budget_s: float):
        self.searcher = searcher
        self.budget_s = float(budget_s)
        self.started: float | None = None
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "started": None}  # a restored search starts its own clock

    @property
    def spent(self) -> bool:
        """Whether the budget is spent (``False`` before the first suggestion)."""
        return self.started is not None and time.time() - self.started >= self.budget_s

    def set_search_properties(self, metric: Any, mode: Any, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if self.started is None:
            self.started = time.time()
        if self.spent:
            return Searcher.FINISHED
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def add_evaluated_point(self, *args: Any, **kwargs: Any) -> None:
        self.searcher.add_evaluated_point(*args, **kwargs)

    # as Tune's wrapper searchers (ConcurrencyLimiter): the wrapper's own state; the wrapped
    # searcher saves itself (``save``/``restore``, ``save_to_dir``)
    def get_state(self) -> dict:
        return {"budget_s": self.budget_s}

    def set_state(self, state: dict) -> None:
        self.budget_s = float(state.get("budget_s", self.budget_s))
        self.started = None  # a restored search starts its own clock

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class TrialStopper:
    """The trainable's ``should_stop(trial_id, epoch) -> reason | None`` (picklable; runs on workers).

    Args:
        rung_decision: the scheduler's decision client (:meth:`search.moasha.MOASHAScheduler.decision_client`),
            or ``None`` without the multi-objective scheduler.
        deadline: ``time.time()`` after which running trials stop (the time budget), or ``None``.
        timeout_s: how long to wait for a rung decision, seconds (no answer: continue).

    Returns (when called): ``"time_budget"`` once the deadline has passed (whatever the rung
    says: an epoch the budget cut short is the budget's stop), ``"scheduler"`` when the scheduler
    stopped the trial at this epoch, else ``None``.
    """

    def __init__(self, rung_decision: Any = None, deadline: float | None = None, timeout_s: float = 60.0):
        self.rung_decision = rung_decision
        self.deadline = deadline
        self.timeout_s = timeout_s

    def deadline_passed(self) -> bool:
        """Whether the time budget is spent (the trainable asks after every batch, so that an
        epoch in progress ends at the deadline instead of running to its end)."""
        return self.deadline is not None and time.time() >= self.deadline

    def __call__(self, trial_id: str, epoch: int) -> str | None:
        if self.deadline_passed():
            return "time_budget"
        if self.rung_decision is not None and self.rung_decision(trial_id, epoch, self.timeout_s) is False:
            return "scheduler"
        return None
