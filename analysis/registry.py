"""Register exported students in the MLflow Model Registry, with aliases users can load by.

Each trial of a search logs its student as an MLflow model (a LoggedModel, ``models:/<model
id>``, an output of the trial's run). :func:`register_students` makes the selected ones versions
of a registered model (source ``models:/<model id>``, the trial's run as ``run_id``; tags
``source_run_id``, ``search_id``, ``trial_id``, ``selector``) and points aliases at them:

- ``knee``: the search's knee trial (see :mod:`analysis.export`);
- ``best-accuracy``: its most accurate trial on the validation split (``best:val_accuracy``: selected
  without the dev set, like everything the search chooses);
- ``smallest``: its smallest student (``best:size_bytes``);
- for ``best:METRIC`` and ``METRIC@CONSTRAINT`` selections, the selector's own name
  (``best-latency_ms``, ``accuracy-at-size_bytes-le-200000``).

An alias is set only when its trial is among the registered ones. Registering the same model
twice reuses its version. ``mlflow.pyfunc.load_model("models:/NAME@knee")`` then loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from trainables.errors import ConfigError

__all__ = ["ALIAS_SELECTORS", "check_model_name", "logged_model_id", "register_students", "alias_of"]

#: alias -> the selector whose trial it names.
ALIAS_SELECTORS = {"knee": "knee", "best-accuracy": "best:val_accuracy", "smallest": "best:size_bytes"}
_NAME = re.compile(r"^[\w\-. ]+$")


def check_model_name(name: str) -> str:
    """A registered-model name: letters, digits, ``_``, ``-``, ``.`` and spaces.

    Raises:
        ConfigError: anything else (an empty name, ``/``, ``:``, ``@``...).
    """
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise ConfigError(f"--register {name!r}: a registered model name is letters, digits, '_', '-', '.' "
                          f"or spaces, e.g. sst2-student")
    return name.strip()


def alias_of(slug: str) -> str:
    """An MLflow alias from a selector's file-name form (characters other than letters, digits,
    ``_`` and ``-`` become ``_``)."""
    return re.sub(r"[^\w\-]", "_", slug)


def logged_model_id(run: Any) -> str | None:
    """The id of the MLflow model a trial run logged (its last model output), or ``None``."""
    outputs = getattr(run, "outputs", None)
    models = list(getattr(outputs, "model_outputs", None) or [])
    return models[-1].model_id if models else None


def _ensure_registered_model(client: Any, name: str, description: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=description)


def register_students(client: Any, name: str, chosen: Iterable[Mapping[str, Any]],
                      aliases: Mapping[str, str], description: str = "") -> dict[str, dict[str, Any]]:
    """Register the chosen trials' models as versions of the registered model ``name``.

    Args:
        client: an ``MlflowClient`` on the search's store.
        name: the registered model (created when absent).
        chosen: one mapping per trial: ``run_id``, ``model_id`` and ``tags`` (version tags).
        aliases: alias -> run id of the trial it names (only aliases of chosen trials are set).
        description: of the registered model, when it is created.

    Returns:
        run id -> ``{"name", "version", "uri" (models:/NAME/VERSION), "aliases"}``.

    Raises:
        ConfigError: a chosen trial without a logged model.
    """
    chosen = list(chosen)
    missing = [c["run_id"] for c in chosen if not c.get("model_id")]
    if missing:
        raise ConfigError(f"--register: run(s) {', '.join(missing)} logged no MLflow model (the search ran with a "
                          f"version that logged the student file only); replay them to get one")
    _ensure_registered_model(client, name, description)
    existing = {mv.source: mv for mv in client.search_model_versions(f"name = '{name}'")}
    out: dict[str, dict[str, Any]] = {}
    for c in chosen:
        mv = existing.get(f"models:/{c['model_id']}")
        if mv is None:
            mv = client.create_model_version(name, source=f"models:/{c['model_id']}", run_id=c["run_id"],
                                             tags={k: str(v) for k, v in c.get("tags", {}).items()},
                                             model_id=c["model_id"])
        out[c["run_id"]] = {"name": name, "version": int(mv.version), "uri": f"models:/{name}/{mv.version}",
                            "aliases": []}
    for alias, run_id in aliases.items():
        if run_id in out:
            client.set_registered_model_alias(name, alias, str(out[run_id]["version"]))
            out[run_id]["aliases"].append(alias)
    return out
