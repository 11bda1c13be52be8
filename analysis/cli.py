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
import math
from pathlib import Path

from trainables.errors import ConfigError
from trainables.untrusted import check_output_folder, safe_name, short

__all__ = ["add_commands"]

_URI_HELP = "MLflow tracking URI of the search; unset: sqlite:///mlflow.db in this folder"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``analyze`` and ``export`` on ``run_search.py``'s subparsers."""
    p = subparsers.add_parser("analyze", help="rank a search's trials, plot it and write an HTML report")
    p.add_argument("--experiment", required=True, help="MLflow experiment name or id")
    p.add_argument("--tracking-uri", default=None, help=_URI_HELP)
    p.add_argument("--out", default=None,
                   help="report folder (default reports/<experiment>, the name made a safe folder name)")
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
    p.add_argument("--out", default=None,
                   help="folder for the YAML files (default exports/<experiment>, the name made a safe folder name)")
    p.add_argument("--select", required=True,
                   help="pareto, knee, best:METRIC or METRIC@OTHER<=VALUE (e.g. accuracy@size_bytes<=200000)")
    p.add_argument("--objectives", default=None, help="objectives of pareto/knee (default: the search's)")
    p.add_argument("--search-id", default=None, help="search id or parent run id (default: the latest search)")
    p.add_argument("--register", default=None, metavar="NAME",
                   help="also register the selected students as versions of this MLflow registered model, with "
                        "aliases knee, best-accuracy, smallest (e.g. models:/NAME@knee)")
    p.set_defaults(func=_cmd_export)


def _reference(text: str | None) -> list[float] | None:
    """``"79,430"`` -> ``[79.0, 430.0]``.

    Raises:
        ConfigError: an item that is not a finite number.
    """
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--reference {short(text)} must be comma-separated finite numbers, one per objective")
    return values


def _cmd_analyze(args: argparse.Namespace) -> int:
    from analysis.report import analyze

    out = args.out or str(Path("reports") / safe_name(args.experiment))  # a name, not a path: no '..' or '/'
    groups = [g.strip() for g in args.group_by.split(",") if g.strip()]
    reference = _reference(args.reference)
    check_output_folder(out, "--out")  # before the store is read or written
    report = analyze(args.tracking_uri, args.experiment, out, objectives=args.objectives,
                     reference=reference, search_id=args.search_id, group_by=groups)
    print(f"report written to {report} (also logged to the search's parent run under analysis/)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_configs

    out = args.out or str(Path("exports") / safe_name(args.experiment))  # a name, not a path: no '..' or '/'
    check_output_folder(out, "--out")
    paths = export_configs(args.tracking_uri, args.experiment, out, args.select, search_id=args.search_id,
                           objectives=args.objectives, register=args.register)
    for path in paths:
        print(path)
    import yaml

    if args.register:
        for path in paths:
            reg = yaml.safe_load(path.read_text(encoding="utf-8")).get("registered_model", {})
            aliases = "".join(f" models:/{reg['name']}@{a}" for a in reg.get("aliases", []))
            print(f"registered {reg.get('uri')}{aliases}")
    selected_on = yaml.safe_load(paths[0].read_text(encoding="utf-8")).get("selected_on", "")
    print(f"{len(paths)} config(s) exported (selected on {selected_on}); replay one with "
          f"`python run_search.py replay {paths[0]}`")
    return 0
