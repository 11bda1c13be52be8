"""The ``analyze``, ``export`` and ``replay`` subcommands of ``run_search.py``.

``run_search.py`` calls :func:`add_commands` with its subparsers; each subcommand's ``func``
takes the parsed :class:`argparse.Namespace` and returns an exit code. Bad input raises
:class:`trainables.config.ConfigError`, which ``run_search.py`` prints as one line (exit 2).

    python run_search.py analyze --experiment NAME [--tracking-uri URI] [--out DIR] [--objectives ...]
    python run_search.py export  --experiment NAME --select knee [--out DIR]
    python run_search.py replay  exports/NAME/knee-trial004-1a2b3c4d.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trainables.config import ConfigError

__all__ = ["add_commands"]

_URI_HELP = "MLflow tracking URI of the search; unset: sqlite:///mlflow.db in this folder"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``analyze``, ``export`` and ``replay`` on ``run_search.py``'s subparsers."""
    p = subparsers.add_parser("analyze", help="rank a search's trials, plot it and write an HTML report")
    p.add_argument("--experiment", required=True, help="MLflow experiment name or id")
    p.add_argument("--tracking-uri", default=None, help=_URI_HELP)
    p.add_argument("--out", default=None, help="report folder (default reports/<experiment>)")
    p.add_argument("--objectives", default=None,
                   help="e.g. accuracy:max,size_bytes:min (default: the objectives the search used)")
    p.add_argument("--reference", default=None,
                   help="hypervolume reference point, comma-separated, one value per objective "
                        "(default: the padded worst values)")
    p.add_argument("--search-id", default=None, help="search id or parent run id (default: the latest search)")
    p.add_argument("--group-by", default="student",
                   help="comma-separated columns splitting the expected-max curves (default student; '' for none)")
    p.set_defaults(func=_cmd_analyze)

    p = subparsers.add_parser("export", help="write selected trials of a search as replayable YAML configs")
    p.add_argument("--experiment", required=True, help="MLflow experiment name or id")
    p.add_argument("--tracking-uri", default=None, help=_URI_HELP)
    p.add_argument("--out", default=None, help="folder for the YAML files (default exports/<experiment>)")
    p.add_argument("--select", required=True,
                   help="pareto, knee, best:METRIC or METRIC@OTHER<=VALUE (e.g. accuracy@size_bytes<=200000)")
    p.add_argument("--objectives", default=None, help="objectives of pareto/knee (default: the search's)")
    p.add_argument("--search-id", default=None, help="search id or parent run id (default: the latest search)")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("replay", help="re-run an exported config as a new MLflow run and compare")
    p.add_argument("config", metavar="CONFIG.yaml", help="a file written by `run_search.py export`")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: the one named in the file)")
    p.add_argument("--experiment", default=None, help="experiment of the new run (default: the source run's)")
    p.add_argument("--data-dir", default=None, help="GLUE folder (default: the one the source search used)")
    p.add_argument("--teacher", default=None, help="teacher folder or hub name (default: the source search's)")
    p.add_argument("--cache-dir", default=None, help="teacher-logit cache (default: the source search's)")
    p.add_argument("--workdir", default=None, help="keep the trial folder here (default: a temporary one)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="training device (default: cuda when the source search used GPUs and one is here)")
    p.add_argument("--max-diff-pp", type=float, default=None,
                   help="exit 1 when |accuracy difference| exceeds this many percentage points")
    p.set_defaults(func=_cmd_replay)


def _reference(text: str | None) -> list[float] | None:
    """``"79,430"`` -> ``[79.0, 430.0]``.

    Raises:
        ConfigError: an item that is not a number.
    """
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--reference {text!r} must be comma-separated numbers, one per objective") from None


def _cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.report import analyze

    out = args.out or str(Path("reports") / args.experiment)
    groups = [g.strip() for g in args.group_by.split(",") if g.strip()]
    report = analyze(args.tracking_uri, args.experiment, out, objectives=args.objectives,
                     reference=_reference(args.reference), search_id=args.search_id, group_by=groups)
    print(f"report written to {report} (also logged to the search's parent run under analysis/)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_configs

    out = args.out or str(Path("exports") / args.experiment)
    paths = export_configs(args.tracking_uri, args.experiment, out, args.select, search_id=args.search_id,
                           objectives=args.objectives)
    for path in paths:
        print(path)
    print(f"{len(paths)} config(s) exported; replay one with `python run_search.py replay {paths[0]}`")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from analysis.export import replay

    result = replay(args.config, tracking_uri=args.tracking_uri, experiment=args.experiment,
                    data_dir=args.data_dir, teacher=args.teacher, workdir=args.workdir, cache_dir=args.cache_dir,
                    device=args.device)
    diff = result["accuracy_diff_pp"]
    if args.max_diff_pp is not None and (diff is None or abs(diff) > args.max_diff_pp):
        print(f"replay differs from the source by {diff} pp (allowed {args.max_diff_pp})")
        return 1
    return 0
