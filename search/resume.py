"""``run_search.py resume``: finish a search whose driver stopped (killed, crashed, Ctrl-C).

Everything a resume needs is on the search's MLflow parent run: its options (tag
``featherweight.search_options``), the Tune experiment folder (param ``tune_experiment_path``)
and the study name. Tune keeps the trial states and the OptunaSearch state (the whole Optuna
study, pickled with the searcher) in that folder; ``Tuner.restore(..., resume_errored=True)``
continues unfinished trials, retries errored ones, and starts the trials not yet sampled, so the
search ends with ``num_samples`` trials. On the MLflow side, runs left ``RUNNING`` by the dead
driver are marked ``FAILED``; a trial that had finished in MLflow but not yet in Tune's saved
state is reported from its run instead of trained again
(:func:`search.mlflow_store.close_earlier_attempts`), so no trial has two ``FINISHED`` runs.

    python run_search.py resume --experiment NAME [--tracking-uri URI] [--search-id ID] [--address ADDR]
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.config import ConfigError


def plan_resume(experiment: str, tracking_uri: str | None = None, search_id: str | None = None,
                address: str | None = None, storage_path: str | None = None) -> tuple[Any, Any, str, Any, str]:
    """Find the search and validate it can be resumed (cheap checks only).

    Args:
        experiment: MLflow experiment name (or id).
        tracking_uri: the store the search logged to (default ``sqlite:///mlflow.db`` here).
        search_id: search id or parent run id (default: the newest search of the experiment).
        address: Ray cluster to run on (default: the one the search used; ``local``: a local Ray).
        storage_path: where the Tune experiment folder is now, if it moved (default: where it was).

    Returns:
        ``(plan, client, experiment_id, parent run, tune experiment path)``.

    Raises:
        ConfigError: no such experiment or search, no Tune state to restore, or options that no
            longer validate (data, teacher or space file gone).
    """
    from mlflow.tracking import MlflowClient

    from search import mlflow_store
    from search.cluster import check_address
    from search.tuner import SearchOptions, plan_search

    uri, _ = mlflow_store.resolve_tracking_uri(tracking_uri)
    mlflow_store.check_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri}; pass --tracking-uri with the store the search logged to")
    if address not in (None, "local"):
        check_address(address)
    client = MlflowClient(uri)
    experiment_id, parent = mlflow_store.find_search(client, experiment, search_id)
    recorded = mlflow_store.search_options_of(parent)
    names = {f.name for f in fields(SearchOptions)}
    values = {k: v for k, v in recorded.items() if k in names}
    values["tracking_uri"] = uri
    if address is not None:
        values["address"] = None if address == "local" else address
    path = parent.data.params.get("tune_experiment_path", "")
    if storage_path is not None:
        values["storage_path"] = storage_path
        path = storage_path.rstrip("/") + "/" + path.rstrip("/").rsplit("/", 1)[-1]
    plan = plan_search(SearchOptions(**values))

    from ray.tune import Tuner

    if not path or not Tuner.can_restore(path):
        raise ConfigError(f"no Tune experiment state at {path or '(not recorded)'} for search "
                          f"{parent.data.tags.get('search_id', parent.info.run_id)}; pass --storage-path if the "
                          f"folder moved, or start a new search")
    return plan, client, experiment_id, parent, path


def resume_search(experiment: str, tracking_uri: str | None = None, search_id: str | None = None,
                  address: str | None = None, storage_path: str | None = None) -> pd.DataFrame:
    """Resume a search (see the module doc) and return its Pareto front.

    Raises:
        ConfigError: see :func:`plan_resume` (raised before any data is loaded or Ray starts).
    """
    from ray import tune

    from search import mlflow_store
    from search.cluster import connect
    from search.tuner import execute_search, load_trial_data, print_notes, trials_frame

    plan, client, experiment_id, parent, path = plan_resume(experiment, tracking_uri, search_id, address,
                                                            storage_path)
    parent_id, sid = parent.info.run_id, parent.data.tags.get("search_id", parent.info.run_id)
    runs = mlflow_store.child_runs(client, experiment_id, parent_id)
    finished = {r.data.tags.get("trial_id") for r in runs if r.info.status == "FINISHED"}
    if parent.info.status == "FINISHED" and len(finished) >= plan.options.num_samples:
        print(f"search {sid} is complete ({len(finished)} finished trials); nothing to resume", flush=True)
        return trials_frame(client, experiment_id, parent_id)
    print_notes(plan)
    if plan.options.address is not None:
        connect(plan.options.address)
    print(f"resuming search {sid} (parent run {parent_id}): {len(finished)} of {plan.options.num_samples} trials "
          f"finished; Tune state in {path}", flush=True)
    data = load_trial_data(plan)
    stale = 0
    for run in runs:  # the previous driver's trials died with it
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", mlflow_store.DRIVER_GONE + "; the search was resumed")
            client.set_terminated(run.info.run_id, status="FAILED")
            stale += 1
    if stale:
        print(f"marked {stale} run(s) left RUNNING by the stopped driver FAILED", flush=True)
    mlflow_store.reopen_run(client, parent_id, f"resumed from {path}")

    def build(trainable: Any) -> Any:
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)

    return execute_search(plan, data, client, experiment_id, parent_id, sid, build)
