"""The search's progress on its MLflow parent run, logged while the search runs.

:class:`HypervolumeLogger` is a Ray Tune callback (it runs in the driver). Each time a trial
finishes (also when the scheduler stopped it early), it adds the trial's objective values and
logs to the parent run:

- ``hypervolume`` at ``step`` = the number of finished trials, and ``hypervolume_time`` at
  ``step`` = whole seconds since the search started, so the MLflow UI charts the search's
  progress against trials and against time;
- ``pareto_front_size`` at the same step as ``hypervolume``;
- the current Pareto front as an MLflow table (``pareto_front.json``, one row per front trial).

The hypervolume is on :func:`analysis.pareto.hv_scale` (``log10`` of sizes) against the search's
fixed reference point (parent param ``hypervolume_reference``), so two searches of a task with
the same objectives compare (:func:`analysis.pareto.task_reference`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from ray.tune import Callback

from analysis.pareto import hv_scale, hypervolume, pareto_ranks

log = logging.getLogger(__name__)

#: Columns of the logged front table besides the objectives.
FRONT_COLUMNS = ("trial_id", "accuracy", "size_bytes", "gzip_bytes", "early_stopped", "mlflow_run_id")


class HypervolumeLogger(Callback):
    """Logs the hypervolume and Pareto front of the finished trials to the parent run as they finish.

    The callback is pickled with Tune's experiment state, so it keeps only plain values; at
    :meth:`setup` (a new or a resumed search) it reads the trials that already finished from
    the store and the search's start time from the parent run.

    Args:
        tracking_uri, parent_run_id: the search's store and parent run.
        objectives: ``{metric: "max"|"min"}`` of the search.
        reference: the fixed reference point, one value per objective on :func:`analysis.pareto.hv_scale`.
    """

    def __init__(self, tracking_uri: str, parent_run_id: str, objectives: Mapping[str, str],
                 reference: Sequence[float]):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.objectives = dict(objectives)
        self.reference = [float(v) for v in reference]
        self.rows: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.started_at = time.time()

    @property
    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def setup(self, **info: Any) -> None:
        """Read the finished trials and the search's start (seconds since the epoch) from the store."""
        from analysis.store import child_runs

        client = self.client
        parent = client.get_run(self.parent_run_id)
        self.started_at = parent.info.start_time / 1000.0
        self.rows, self.seen = [], set()
        for run in child_runs(client, parent.info.experiment_id, self.parent_run_id):
            trial_id = run.data.tags.get("trial_id")
            if run.info.status == "FINISHED" and trial_id and all(k in run.data.metrics for k in self.objectives):
                self.seen.add(trial_id)
                self.rows.append({**run.data.metrics, "trial_id": trial_id, "mlflow_run_id": run.info.run_id,
                                  "early_stopped": run.data.tags.get("early_stopped") == "true"})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = dict(trial.last_result or {})
        if trial.trial_id in self.seen or not all(k in result for k in self.objectives):
            return
        self.seen.add(trial.trial_id)
        self.rows.append({**result, "trial_id": trial.trial_id})
        try:
            self.log_progress()
        except Exception as err:  # progress is informative: a store hiccup must not stop the search
            log.warning("could not log the search's hypervolume: %s: %s", type(err).__name__, err)

    def current(self) -> tuple[float, pd.DataFrame]:
        """``(hypervolume, front table)`` of the trials finished so far."""
        df = pd.DataFrame(self.rows)
        values = df[list(self.objectives)].to_numpy(dtype=float)
        directions = list(self.objectives.values())
        hv = hypervolume(hv_scale(values, self.objectives), directions, self.reference)
        ranks = pareto_ranks(values, directions)
        cols = [c for c in dict.fromkeys([*self.objectives, *FRONT_COLUMNS]) if c in df.columns]
        return hv, df.loc[ranks == 0, cols].reset_index(drop=True)

    def log_progress(self) -> None:
        """Log ``hypervolume``, ``hypervolume_time``, ``pareto_front_size`` and the front table."""
        from mlflow.entities import Metric

        hv, front = self.current()
        n, now = len(self.rows), int(time.time() * 1000)
        elapsed = int(round(time.time() - self.started_at))
        self.client.log_batch(self.parent_run_id, metrics=[
            Metric("hypervolume", hv, now, n), Metric("hypervolume_time", hv, now, elapsed),
            Metric("pareto_front_size", float(len(front)), now, n)])
        table = front.replace({np.nan: None})
        self.client.log_table(self.parent_run_id, data=table, artifact_file="pareto_front.json")
