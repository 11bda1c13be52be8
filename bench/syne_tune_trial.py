"""Syne Tune trial script of ``bench/search_efficiency.py``: one featherweight trial, reported to Syne Tune.

Syne Tune's local backend starts this script once per trial with the sampled config as
``--key value`` arguments. It runs :func:`trainables.trial.run_trial` (the service's trial code)
on SST-2 loaded by the service's own loader (:func:`search.tuner.build_trial_data`, validation
split carved from train with ``val_seed`` = the trial seed, as ``run_search.py search --seed``
does) and, after each epoch, reports to Syne Tune (``syne_tune.Reporter``):

- ``epoch`` (the scheduler's time attribute), ``val_error`` = 100 - ``val_accuracy`` (percent)
  and ``log10_size_bytes`` (Syne Tune's MOASHA minimises every metric);

and appends the epoch's row as one JSON line to ``--fw_log_file``: trial id, config, epoch,
``val_accuracy`` (percent), ``size_bytes`` (bytes), ``cpu_s`` (CPU seconds of the trial's
distillation epochs so far: the trial's own ``energy_j`` under a 1 W per core CPU estimate,
i.e. user + system CPU time of this process, see
:class:`trainables.energy.CpuEstimateMeter`) and ``wall_s`` (seconds since ``run_trial`` began).
A trial the scheduler stops is ended by Syne Tune (the process is killed), so its rows end at
the rung it was stopped at.

Arguments prefixed ``fw_`` are the benchmark's (data, teacher, log file), not trial config.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # started by Syne Tune from its own folder
    sys.path.insert(0, str(ROOT))


def parse_config(argv: list[str]) -> dict:
    """``["--lr", "0.002", "--student", "ffn"]`` -> ``{"lr": 0.002, "student": "ffn"}`` (YAML scalars).

    Raises:
        ValueError: an argument that is not a ``--key value`` pair.
    """
    if len(argv) % 2 or not all(a.startswith("--") for a in argv[::2]):
        raise ValueError(f"expected --key value pairs, got {argv!r}")
    return {k[2:]: yaml.safe_load(v) for k, v in zip(argv[::2], argv[1::2])}


def main(argv: list[str] | None = None) -> None:
    from syne_tune import Reporter

    from search.tuner import build_trial_data
    from trainables.tracking import MemoryTracker
    from trainables.trial import RunSettings, run_trial

    args = parse_config(sys.argv[1:] if argv is None else argv)
    bench = {k[3:]: args.pop(k) for k in [k for k in args if k.startswith("fw_")]}
    checkpoint_dir = args.pop("st_checkpoint_dir", None)
    config = {k: v for k, v in args.items() if not k.startswith("st_")}
    trial_id = Path(checkpoint_dir).parent.name if checkpoint_dir else ""  # <experiment>/<trial id>/checkpoints
    data = build_trial_data("sst2", bench["data_dir"], bench["teacher"], bench.get("cache_dir") or None,
                            val_seed=int(config["seed"]))
    reporter = Reporter()
    log_file = Path(bench["log_file"])
    start = time.perf_counter()

    def report(metrics: dict, ckpt: Path | None) -> None:
        if ckpt is None:
            return None
        row = {"trial_id": trial_id, "config": config, "epoch": int(metrics["epoch"]),
               "val_accuracy": float(metrics["val_accuracy"]), "size_bytes": int(metrics["size_bytes"]),
               "cpu_s": float(metrics.get("energy_j", math.nan)), "wall_s": time.perf_counter() - start,
               "time": time.time()}
        with log_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        reporter(epoch=row["epoch"], val_error=100.0 - row["val_accuracy"],
                 log10_size_bytes=math.log10(row["size_bytes"]))
        return None

    workdir = Path(checkpoint_dir or tempfile.mkdtemp(prefix="syne-tune-trial-"))
    run_trial(config, data, workdir / "trial", MemoryTracker(), RunSettings(cpu_watts_per_core=1.0, threads=1),
              report)


if __name__ == "__main__":
    main()
