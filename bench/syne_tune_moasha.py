"""The peer of ``bench/search_efficiency.py``: Syne Tune's MOASHA on the benchmark's search space.

Runs one Syne Tune search (``syne_tune.Tuner`` with its local backend, one trial at a time) of
``--trials`` trials of ``bench/syne_tune_trial.py`` (the service's trial code, one process per
trial) with ``syne_tune.optimizer.schedulers.multiobjective.moasha.MOASHA`` (Salinas et al.,
"A multi-objective perspective on jointly tuning hardware and hyperparameters", NAS workshop at
ICLR 2021: random configs, asynchronous successive halving with non-dominated sorting at each
rung) over ``val_error`` = 100 - val_accuracy and ``log10_size_bytes`` (both minimised), time
attribute ``epoch``, ``max_t`` = the space's epochs, the given grace period and reduction factor.
The space's searched keys become Syne Tune domains (``choice``, ``uniform``, ``loguniform``,
``randint``, ``lograndint``); its fixed keys and the trial seed are passed as constants.

Run it with a Python that has ``syne-tune`` (it is not a dependency of featherweight); the
benchmark starts it as a subprocess. Every epoch of every trial is appended as one JSON line
to ``--log-file`` (see ``bench/syne_tune_trial.py``).

Usage:
    python -m bench.syne_tune_moasha --log-file rows.jsonl --trials 20 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TRIAL_SCRIPT = ROOT / "bench" / "syne_tune_trial.py"


def syne_tune_space(space, seed: int) -> dict:
    """Syne Tune's config space for a featherweight :class:`spaces.Space` (plus the trial seed).

    Raises:
        ValueError: a distribution kind with no Syne Tune counterpart.
    """
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    make = {"choice": lambda a: choice(list(a)), "uniform": lambda a: uniform(*a),
            "loguniform": lambda a: loguniform(*a), "int": lambda a: randint(*a), "logint": lambda a: lograndint(*a)}
    out = {k: v for k, v in space.fixed.items()}
    for key, dist in space.params.items():
        if dist.kind not in make:
            raise ValueError(f"{key}: no Syne Tune domain for {dist.kind!r}")
        out[key] = make[dist.kind](dist.args)
    out["seed"] = seed
    return out


def main(argv=None) -> int:
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from bench._common import DEFAULT_DATA, DEFAULT_TEACHER
    from search.tuner import max_epochs
    from spaces import load_space

    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--space", default=str(ROOT / "bench" / "spaces" / "efficiency.yaml"))
    ap.add_argument("--trials", type=int, default=20, help="trials to run (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="MOASHA's random seed and the trial seed")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=3.0)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA))
    ap.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    ap.add_argument("--cache-dir", default="")
    ap.add_argument("--log-file", required=True, help="JSON lines, one per trial epoch")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="fix a trial-config key, as run_search.py's --set")
    args = ap.parse_args(argv)
    logging.getLogger("syne_tune").setLevel(logging.WARNING)
    np.random.seed(args.seed)  # MOASHA samples configs with numpy's global generator
    random.seed(args.seed)
    from run_search import parse_overrides

    space = load_space(args.space).with_fixed(parse_overrides(args.overrides))
    config_space = syne_tune_space(space, args.seed)
    config_space.update(fw_data_dir=str(Path(args.data_dir).resolve()), fw_teacher=str(Path(args.teacher).resolve()),
                        fw_log_file=str(Path(args.log_file).resolve()))
    if args.cache_dir:
        config_space["fw_cache_dir"] = str(Path(args.cache_dir).resolve())
    for key, value in config_space.items():  # the local backend passes "--key value" split on spaces
        if isinstance(value, str) and " " in value:
            raise ValueError(f"{key}: Syne Tune's local backend cannot pass {value!r} (it has a space)")
    scheduler = MOASHA(config_space, metrics=["val_error", "log10_size_bytes"], do_minimize=True, time_attr="epoch",
                       max_t=max_epochs(space), grace_period=args.grace_period,
                       reduction_factor=args.reduction_factor, random_seed=args.seed)
    os.environ.setdefault("SYNETUNE_FOLDER", tempfile.mkdtemp(prefix="syne-tune-"))
    tuner = Tuner(trial_backend=LocalBackend(entry_point=str(TRIAL_SCRIPT), delete_checkpoints=True),
                  scheduler=scheduler,
                  # "more than N - 1 started": exactly N trials start; the last ones run to their end
                  stop_criterion=StoppingCriterion(max_num_trials_started=args.trials - 1),
                  n_workers=1, sleep_time=0.2, results_update_interval=60, print_update_interval=600,
                  wait_trial_completion_when_stopping=True, save_tuner=False, start_jobs_without_delay=True,
                  tuner_name=f"featherweight-moasha-{args.seed}")
    tuner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
