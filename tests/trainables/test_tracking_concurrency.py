"""Two trials that log the same dataset input at the same moment: the store's unique-row race is retried."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path


def _log_at_once(uri: str, exp_id: str, barrier, rounds: int, out) -> None:
    from trainables.tracking import DatasetRecord, MlflowTracker

    errors = []
    for i in range(rounds):
        tracker = MlflowTracker(uri, exp_id, None)
        tracker.start(f"r{i}", params={}, tags={})
        record = DatasetRecord(name=f"sst2-train-{i}", context="train", data_hash=f"{i:064x}", source="test",
                               num_rows=10, columns=(("text", "string"),))
        barrier.wait()
        try:
            tracker.log_datasets([record])
        except Exception as e:  # the race this test is about
            errors.append(f"{type(e).__name__}: {e}"[:200])
        tracker.finish("FINISHED")
    out.put(errors)


def test_the_same_dataset_logged_by_two_trials_at_once(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("race", artifact_location=(tmp_path / "art").as_uri())
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_log_at_once, args=(uri, exp_id, barrier, 15, out)) for _ in range(2)]
    for p in procs:
        p.start()
    errors = out.get(timeout=300) + out.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    assert errors == []
    runs = client.search_runs([exp_id])
    assert len(runs) == 30 and all(len(r.inputs.dataset_inputs) == 1 for r in runs)
