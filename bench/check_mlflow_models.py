"""Check a search's students as MLflow models: load Pareto students with ``mlflow.pyfunc.load_model``,
compare their dev accuracy with the logged ``accuracy``, and query one through ``mlflow models serve``.

    python -m bench.check_mlflow_models --experiment sst2-demo --tracking-uri sqlite:///mlflow.db

1. The search's finished trials and their Pareto front (the parent run's ``objectives``).
2. Up to ``--count`` front students (the most accurate, the smallest and the one between), each
   loaded as ``models:/<model id>`` (the trial run's logged model) with ``mlflow.pyfunc.load_model``
   and run on the whole dev split of the search's data folder (the parent run's ``data_dir``):
   its dev accuracy must equal the run's ``accuracy`` metric to 1e-9 percentage points.
3. The first of them served with ``mlflow models serve -m models:/<id> --env-manager local`` on
   127.0.0.1 (a free port) and sent a REST ``POST /invocations`` of ``--rows`` dev rows
   (``dataframe_split``): the answered labels must equal the in-process predictions. The server
   imports featherweight from this checkout (``PYTHONPATH``) and is stopped at the end.

This is a check of a store, not a benchmark: it logs nothing. It prints one line per student
and a final ``SUMMARY: ...`` line, and exits 0 when every check passes, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def front_students(tracking_uri: str | None, experiment: str, search_id: str | None, count: int
                   ) -> tuple[pd.DataFrame, Any, str]:
    """``(front rows with run_id, accuracy, size_bytes, model_id; the search's parent run; the store URI)``:
    up to ``count`` Pareto students, most accurate first.

    Raises:
        ConfigError: no such store, experiment or search, or no finished trial with a logged model.
    """
    from mlflow.tracking import MlflowClient

    from analysis.pareto import pareto_ranks
    from analysis.registry import logged_model_id
    from analysis.runs import load_trials
    from analysis.store import find_search, resolve_tracking_uri
    from spaces import parse_objectives

    uri, _ = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ConfigError(f"no MLflow store at {uri}")
    client = MlflowClient(uri)
    _, parent = find_search(client, experiment, search_id, where=uri)
    df = load_trials(uri, experiment, search_id=parent.info.run_id)
    if df.empty:
        raise ConfigError(f"search {parent.info.run_id} has no finished trial")
    objectives = parse_objectives(parent.data.params.get("objectives", "accuracy:max,size_bytes:min"), "objectives")
    front = df[pareto_ranks(df[list(objectives)].to_numpy(float), list(objectives.values())) == 0]
    front = front.sort_values(["accuracy", "size_bytes"], ascending=[False, True]).reset_index(drop=True)
    front["model_id"] = [logged_model_id(client.get_run(r)) for r in front["run_id"]]
    front = front[front["model_id"].notna()].reset_index(drop=True)
    if front.empty:
        raise ConfigError(f"no Pareto student of search {parent.info.run_id} logged an MLflow model")
    picks = sorted({0, len(front) - 1, (len(front) - 1) // 2})[:count] if count < len(front) else range(len(front))
    return front.iloc[list(picks)].reset_index(drop=True), parent, uri


def dev_table(dev: Any) -> pd.DataFrame:
    """The dev split as the model's input table (``text``, or ``text_a``/``text_b``)."""
    if dev.is_pair:
        return pd.DataFrame({"text_a": dev.text_a, "text_b": dev.text_b})
    return pd.DataFrame({"text": dev.text_a})


def serve_and_invoke(model_uri: str, tracking_uri: str, table: pd.DataFrame, timeout_s: float = 240.0
                     ) -> tuple[list[int], float]:
    """Start ``mlflow models serve --env-manager local`` for ``model_uri`` on a free local port,
    ``POST /invocations`` the ``table`` (``dataframe_split``) and stop the server.

    Returns:
        ``(labels answered, seconds from start to the first healthy /ping)``.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout_s``.
    """
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = tempfile.NamedTemporaryFile(prefix="mlflow-serve-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base, t0 = f"http://127.0.0.1:{port}", time.time()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode}: "
                                   f"{Path(log.name).read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() - t0 > timeout_s:
                raise RuntimeError(f"mlflow models serve did not answer /ping within {timeout_s:.0f} s")
            time.sleep(0.5)
        ready_s = time.time() - t0
        body = json.dumps({"dataframe_split": table.to_dict(orient="split", index=False)}).encode()
        req = urllib.request.Request(base + "/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.loads(r.read())
        return [int(p["label"]) for p in answer["predictions"]], ready_s
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.unlink(log.name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--experiment", required=True, help="MLflow experiment of the search")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlflow.db here)")
    ap.add_argument("--search-id", default=None, help="search id or parent run id (default: the latest search)")
    ap.add_argument("--data-dir", default=None, help="GLUE folder (default: the search's data_dir param)")
    ap.add_argument("--count", type=int, default=3, help="Pareto students to load (default %(default)s)")
    ap.add_argument("--rows", type=int, default=8, help="dev rows sent to the REST server (default %(default)s)")
    ap.add_argument("--no-serve", action="store_true", help="skip the mlflow models serve check")
    args = ap.parse_args(argv)
    try:
        if args.count < 1 or args.rows < 1:
            raise ConfigError("--count and --rows must be at least 1")
        front, parent, uri = front_students(args.tracking_uri, args.experiment, args.search_id, args.count)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import mlflow
    import mlflow.pyfunc

    from trainables.data.glue import load_split

    mlflow.set_tracking_uri(uri)
    params = parent.data.params
    data_dir = args.data_dir or (None if params.get("data_dir") in (None, "hub") else params["data_dir"])
    dev = load_split(params.get("task", "sst2"), "dev", data_dir)
    table = dev_table(dev)
    ok, rows, first = True, [], None
    for _, row in front.iterrows():
        uri_model = f"models:/{row['model_id']}"
        t0 = time.time()
        model = mlflow.pyfunc.load_model(uri_model)
        load_s = time.time() - t0
        labels = model.predict(table)["label"].to_numpy()
        acc = float((labels == dev.labels).mean() * 100)
        same = abs(acc - float(row["accuracy"])) <= 1e-9
        ok &= same
        first = first if first is not None else (uri_model, labels)
        rows.append((uri_model, row["run_id"], float(row["accuracy"]), acc, int(row["size_bytes"]), load_s, same))
        print(f"{uri_model}  run {row['run_id'][:8]}  logged accuracy {row['accuracy']:.4f}%  pyfunc dev accuracy "
              f"{acc:.4f}%  size {int(row['size_bytes'])} B  load {load_s:.2f} s  {'same' if same else 'DIFFERENT'}",
              flush=True)
    served = "skipped"
    if not args.no_serve and first is not None:
        answered, ready_s = serve_and_invoke(first[0], uri, table.iloc[: args.rows])
        match = answered == first[1][: args.rows].tolist()
        ok &= match
        served = (f"{first[0]} served, /invocations answered {len(answered)} labels {answered} "
                  f"({'same as' if match else 'DIFFERENT from'} pyfunc; ready in {ready_s:.1f} s)")
        print(served, flush=True)
    print(f"SUMMARY: {sum(r[-1] for r in rows)}/{len(rows)} Pareto students loaded with mlflow.pyfunc.load_model "
          f"reproduce their logged dev accuracy; serve: {served}; {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
