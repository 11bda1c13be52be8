"""``run_search.py resume``: finish a search whose driver stopped (killed, crashed, Ctrl-C).

Everything a resume needs is on the search's MLflow parent run: its options (tag
``featherweight.search_options``), the Tune experiment folder (param ``tune_experiment_path``)
and the study name. Tune keeps the trial states and the OptunaSearch state (the whole Optuna
study, pickled with the searcher) in that folder; ``Tuner.restore(..., resume_errored=True)``
continues unfinished trials, retries errored ones, and starts the trials not yet sampled, so the
search ends with ``num_samples`` trials. Tune's saved state is pickled, and unpickling runs code:
so the state is restored only from a storage folder the user names (``--storage-path``) or
confirms (``--trust-recorded-storage``), never just because the store names it. On the MLflow
side, runs left ``RUNNING`` by the dead driver are marked ``FAILED``; a trial that had finished
in MLflow but not yet in Tune's saved state is reported from its run instead of trained again
(:func:`search.mlflow_store.close_earlier_attempts`), so no trial has two ``FINISHED`` runs.

    python run_search.py resume --experiment NAME --storage-path DIR [--tracking-uri URI] [--search-id ID]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from search.validate import options_from_record
from trainables.errors import ConfigError
from trainables.untrusted import check_location, mask_credentials


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


def recorded_options(parent: Any) -> dict[str, Any]:
    """The :class:`search.tuner.SearchOptions` values recorded on a search's parent run, type-checked.

    Raises:
        ConfigError: the run records none, or the record is malformed.
    """
    from search import mlflow_store
    from search.tuner import SearchOptions

    mlflow_store.search_options_of(parent)  # a missing tag or one that is not a JSON object
    return options_from_record(parent.data.tags.get(mlflow_store.OPTIONS_TAG), f"search run {parent.info.run_id}",
                               SearchOptions)


def trusted_tune_path(parent: Any, storage_path: str | None, trust_recorded_storage: bool = False) -> str:
    """The Tune experiment folder to restore: ``<storage_path>/<the search's folder name>``, or the
    folder the store records when the user confirms it (``trust_recorded_storage``).

    ``Tuner.restore`` unpickles the experiment state it finds there, which runs code: whoever can
    write the MLflow store or that folder could otherwise run code on this machine.

    Raises:
        ConfigError: neither ``storage_path`` nor the confirmation given, or a recorded folder
            name that is not one (empty, ``.``, ``..``).
    """
    from search.cluster import resolve_storage_path

    recorded = parent.data.params.get("tune_experiment_path", "")
    name = recorded.rstrip("/").rsplit("/", 1)[-1]
    sid = parent.data.tags.get("search_id", parent.info.run_id)
    if not recorded or name in ("", ".", "..") or "\x00" in recorded:
        raise ConfigError(f"search {sid} records no usable Tune experiment folder ({recorded!r}); it cannot be "
                          f"resumed")
    if storage_path is not None:
        check_location(storage_path, "--storage-path")
        return str(resolve_storage_path(storage_path)).rstrip("/") + "/" + name
    if trust_recorded_storage:
        return recorded
    where = recorded.rstrip("/").rsplit("/", 1)[0] or "/"
    raise ConfigError(f"resume loads Tune's pickled state (loading it runs code) and the store names "
                      f"{mask_credentials(recorded)}; pass --storage-path {mask_credentials(where)} to confirm that "
                      f"folder (or where it moved), or --trust-recorded-storage")


def plan_resume(parent: Any, uri: str, address: str | None = None, storage_path: str | None = None,
                trust_recorded_storage: bool = False) -> tuple[Any, str]:
    """Validate that the search on ``parent`` can be resumed (cheap checks only).

    Args:
        parent: the search's MLflow parent run; uri: its tracking URI.
        address: Ray cluster to run on (default: the one the search used; ``local``: a local Ray).
        storage_path: the folder holding the search's Tune experiment folder (where it was, or
            where it moved); see :func:`trusted_tune_path`.
        trust_recorded_storage: restore from the folder the store records, without ``storage_path``.

    Returns:
        ``(plan, tune experiment path)``.

    Raises:
        ConfigError: no Tune state to restore, no confirmed storage folder, the search's cluster
            is gone, malformed recorded options, or options that no longer validate (data,
            teacher or space file gone).
    """
    from search.cluster import check_address
    from search.tuner import SearchOptions, plan_search

    values = recorded_options(parent)
    path = trusted_tune_path(parent, storage_path, trust_recorded_storage)
    values["tracking_uri"] = uri
    if address is not None:
        values["address"] = None if address == "local" else address
    elif values.get("address"):
        try:
            check_address(values["address"])
        except ConfigError as e:
            raise ConfigError(f"{e}; the search ran on {values['address']}: pass --address to resume on another "
                              f"cluster, or --address local") from None
    if storage_path is not None:
        values["storage_path"] = storage_path
    plan = plan_search(SearchOptions(**values))

    from ray.tune import Tuner

    if not path or not Tuner.can_restore(path):
        raise ConfigError(f"no Tune experiment state at {mask_credentials(path)} for search "
                          f"{parent.data.tags.get('search_id', parent.info.run_id)}; pass --storage-path if the "
                          f"folder moved, or start a new search")
    return plan, path


def resume_search(experiment: str, tracking_uri: str | None = None, search_id: str | None = None,
                  address: str | None = None, storage_path: str | None = None,
                  trust_recorded_storage: bool = False) -> pd.DataFrame:
    """Resume a search (see the module doc) and return its Pareto front.

    ``storage_path`` or ``trust_recorded_storage`` must say where Tune's state may be restored
    from (:func:`trusted_tune_path`).

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
    num_samples = int(recorded_options(parent).get("num_samples", 0))
    if parent.info.status == "FINISHED" and len(finished) >= num_samples:
        print(f"search {sid} is complete ({len(finished)} finished trials); nothing to resume", flush=True)
        return trials_frame(uri, experiment_id, parent_id)
    plan, path = plan_resume(parent, uri, address, storage_path, trust_recorded_storage)
    print_notes(plan)
    if plan.options.address is not None:
        connect(plan.options.address, plan.options.runtime_env, plan.options.ray_dashboard)
    print(f"resuming search {sid} (parent run {parent_id}): {len(finished)} of {plan.options.num_samples} trials "
          f"finished; Tune state in {mask_credentials(path)} (confirmed by "
          f"{'--storage-path' if storage_path is not None else '--trust-recorded-storage'})", flush=True)
    data = load_trial_data(plan)
    stale = 0
    for run in runs:  # the previous driver's trials died with it
        if run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, "error", mlflow_store.DRIVER_GONE + "; the search was resumed")
            client.set_terminated(run.info.run_id, status="FAILED")
            stale += 1
    if stale:
        print(f"marked {stale} run(s) left RUNNING by the stopped driver FAILED", flush=True)
    mlflow_store.reopen_run(client, parent_id, f"resumed from {mask_credentials(path)}")

    def build(trainable: Any) -> Any:
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)

    board = decision_board(parent.data.params.get("study_name", ""))
    return execute_search(plan, data, client, experiment_id, parent_id, sid, build, make_stopper(plan, board))
