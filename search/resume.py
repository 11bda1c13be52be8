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

from trainables.errors import ConfigError


def find_resumable(experiment: str, tracking_uri: str | None = None, search_id: str | None = None,
                   address: str | None = None) -> tuple[Any, str, str, Any]:
    """The search to resume: ``(client, tracking URI, experiment id, parent run)`` (cheap checks only).

    Raises:
        ConfigError: malformed or unreachable store or address, no such experiment or search.
    """
    from mlflow.tracking import MlflowClient

    from search import mlflow_store
    from search.cluster import check_address

    uri, _ = mlflow_store.resolve_tracking_uri(tracking_uri)
    mlflow_store.check_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri}; pass --tracking-uri with the store the search logged to")
    if address not in (None, "local"):
        check_address(address)
    client = MlflowClient(uri)
    exp, parent = mlflow_store.find_search(client, experiment, search_id, resumable=True, where=uri)
    return client, uri, exp.experiment_id, parent


def plan_resume(parent: Any, uri: str, address: str | None = None, storage_path: str | None = None) -> tuple[Any, str]:
    """Validate that the search on ``parent`` can be resumed (cheap checks only).

    Args:
        parent: the search's MLflow parent run; uri: its tracking URI.
        address: Ray cluster to run on (default: the one the search used; ``local``: a local Ray).
        storage_path: where the Tune experiment folder is now, if it moved (default: where it was).

    Returns:
        ``(plan, tune experiment path)``.

    Raises:
        ConfigError: no Tune state to restore, the search's cluster is gone, or options that no
            longer validate (data, teacher or space file gone).
    """
    from search import mlflow_store
    from search.cluster import check_address
    from search.tuner import SearchOptions, plan_search

    recorded = mlflow_store.search_options_of(parent)
    names = {f.name for f in fields(SearchOptions)}
    values = {k: v for k, v in recorded.items() if k in names}
    values["tracking_uri"] = uri
    if address is not None:
        values["address"] = None if address == "local" else address
    elif values.get("address"):
        try:
            check_address(values["address"])
        except ConfigError as e:
            raise ConfigError(f"{e}; the search ran on {values['address']}: pass --address to resume on another "
                              f"cluster, or --address local") from None
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
    return plan, path


def resume_search(experiment: str, tracking_uri: str | None = None, search_id: str | None = None,
                  address: str | None = None, storage_path: str | None = None) -> pd.DataFrame:
    """Resume a search (see the module doc) and return its Pareto front.

    Raises:
        ConfigError: see :func:`find_resumable` and :func:`plan_resume` (raised before any data
            is loaded or Ray starts).
    """
    from ray import tune

    from search import mlflow_store
    from search.cluster import connect
    from search.tuner import decision_board, execute_search, load_trial_data, make_stopper, print_notes, trials_frame

    client, uri, experiment_id, parent = find_resumable(experiment, tracking_uri, search_id, address)
    parent_id, sid = parent.info.run_id, parent.data.tags.get("search_id", parent.info.run_id)
    runs = mlflow_store.child_runs(client, experiment_id, parent_id)
    finished = {r.data.tags.get("trial_id") for r in runs if r.info.status == "FINISHED"}
    num_samples = int(mlflow_store.search_options_of(parent).get("num_samples", 0))
    if parent.info.status == "FINISHED" and len(finished) >= num_samples:
        print(f"search {sid} is complete ({len(finished)} finished trials); nothing to resume", flush=True)
        return trials_frame(uri, experiment_id, parent_id)
    plan, path = plan_resume(parent, uri, address, storage_path)
    print_notes(plan)
    if plan.options.address is not None:
        connect(plan.options.address, plan.options.runtime_env, plan.options.ray_dashboard)
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

    board = decision_board(parent.data.params.get("study_name", ""))
    return execute_search(plan, data, client, experiment_id, parent_id, sid, build, make_stopper(plan, board))
