"""Shared helpers of the benchmarks in ``bench/``: arguments, SST-2 data, load average, MLflow logging.

Every benchmark is a script (``python -m bench.<name> [--quick]``) that prints its table and a
final ``SUMMARY: ...`` line, and logs one MLflow run to the experiment ``bench-<name>`` (tag
``featherweight.role=bench``): its options as params, its headline figures as metrics, the
machine's load average before and after, and the printed table(s) as CSV artifacts.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

SHARED = Path(os.environ.get("FEATHERWEIGHT_SHARED", ROOT.parent / "shared"))
DEFAULT_DATA = SHARED / "data" / "glue"
DEFAULT_TEACHER = SHARED / "teachers" / "minilm-l6-sst2"
BENCH_ROLE = "bench"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the few-minute version (under 10 minutes on 2 cores)")
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA), help="local GLUE folder (default %(default)s)")
    ap.add_argument("--teacher", default=str(DEFAULT_TEACHER), help="SST-2 teacher folder (default %(default)s)")
    ap.add_argument("--cache-dir", default=None, help="teacher-logit cache (default: the user cache dir)")
    ap.add_argument("--tracking-uri", default=None,
                    help="MLflow store; unset: sqlite:///mlflow.db here, artifacts in ./mlartifacts")
    return ap


def check_tracking(tracking_uri: str | None) -> tuple[str, str | None]:
    """The absolute tracking URI and artifact root, checked before any work (see ``search.mlflow_store``)."""
    from search.mlflow_store import check_tracking_uri, resolve_tracking_uri

    uri, root = resolve_tracking_uri(tracking_uri)
    check_tracking_uri(uri)
    return uri, root


def load_sst2(data_dir: str, teacher: str, cache_dir: str | None = None) -> Any:
    """SST-2 train and dev with the teacher's logits, as a :class:`trainables.trial.TrialData`
    (the service's own loader, :func:`search.tuner.build_trial_data`)."""
    from search.tuner import build_trial_data
    from trainables.data.teacher import check_teacher

    check_teacher(teacher)
    return build_trial_data("sst2", data_dir, teacher, cache_dir)


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``uptime``)."""
    return os.getloadavg()


def describe_load(label: str) -> tuple[float, float, float]:
    """Print the load average with the CPU count (timings on a loaded box are pessimistic)."""
    load = load_average()
    print(f"load average ({label}): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    return load


def print_table(df: pd.DataFrame, title: str) -> None:
    """Print ``df`` under ``title``, every column, no index."""
    print(f"\n{title}", flush=True)
    with pd.option_context("display.width", 250, "display.max_columns", 50, "display.max_colwidth", 60):
        print(df.to_string(index=False), flush=True)


def log_run(name: str, tracking_uri: str | None, params: Mapping[str, Any], metrics: Mapping[str, float],
            tables: Mapping[str, pd.DataFrame], tags: Mapping[str, str] | None = None) -> str:
    """Log one benchmark run to the MLflow experiment ``bench-<name>`` and return its run id.

    Args:
        params: options and settings (stringified).
        metrics: headline figures; NaN and infinite values are left out.
        tables: CSV file name -> table, logged as artifacts.
        tags: extra tags (``featherweight.role=bench``, ``git_commit`` and the environment tags
            are always set).
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from search.mlflow_store import ROLE_TAG, get_or_create_experiment
    from search.tuner import _git_commit
    from trainables.tracking import environment_tags

    uri, root = check_tracking(tracking_uri)
    client = MlflowClient(uri)
    experiment = f"bench-{name}"
    exp_id = get_or_create_experiment(client, experiment, root)
    all_tags = {ROLE_TAG: BENCH_ROLE, "git_commit": _git_commit(), **environment_tags(), **(tags or {})}
    run_id = client.create_run(exp_id, run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                               tags={k: str(v)[:5000] for k, v in all_tags.items()}).info.run_id
    ps = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(ps), 100):
        client.log_batch(run_id, params=ps[i:i + 100])
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))]
    for i in range(0, len(ms), 1000):
        client.log_batch(run_id, metrics=ms[i:i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for filename, df in tables.items():
            path = Path(tmp) / filename
            df.to_csv(path, index=False)
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    print(f"MLflow: experiment {experiment!r} (id {exp_id}), run {run_id} in {uri}", flush=True)
    return run_id


def main_guard(main: Callable[[list[str] | None], Any]) -> None:
    """Run ``main`` as a script: bad input prints one ``error: ...`` line and exits with code 2."""
    try:
        main(None)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
