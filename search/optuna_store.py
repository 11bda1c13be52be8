"""The search's Optuna study in an RDB storage that users open with ``optuna.load_study`` and
``optuna-dashboard``.

By default the study lives in ``optuna.db``, a sqlite file beside Tune's experiment state
(``<tune experiment path>/optuna.db``), or, when Tune's storage is a URI (``s3://...``), in
``optuna.db`` in the driver's working folder; ``--optuna-storage URL`` (any SQLAlchemy URL
Optuna's ``RDBStorage`` accepts: ``sqlite:///...``, ``postgresql://...``, ``mysql://...``)
puts it elsewhere. The driver alone writes to it (``OptunaSearch(storage=...)``), also on a
multi-node cluster. Its URL is the parent run's ``optuna_storage`` param and its name the
``study_name`` param; ``resume`` keeps using it (the storage travels with Tune's searcher
state), and every ``tell`` is committed at once, so finished trials survive a killed driver.
Trials a killed driver left ``RUNNING`` are marked ``FAIL`` when the search finishes
(:func:`fail_orphans`).

Example:
    >>> default_storage_url("/home/u/ray_results/sst2-demo-20260101-000000-abcdef")
    'sqlite:////home/u/ray_results/sst2-demo-20260101-000000-abcdef/optuna.db'
"""

from __future__ import annotations

import logging
import urllib.parse
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

FILE_NAME = "optuna.db"
log = logging.getLogger(__name__)


def _is_uri(path: str) -> bool:
    scheme = urllib.parse.urlparse(path).scheme
    return len(scheme) > 1 and scheme != "file"


def default_storage_url(tune_path: str, cwd: str | Path | None = None) -> str:
    """``sqlite:///<tune_path>/optuna.db`` for a local Tune experiment folder, else (a URI)
    ``sqlite:///<cwd>/optuna.db``."""
    if _is_uri(tune_path):
        return f"sqlite:///{Path(cwd or Path.cwd()).resolve() / FILE_NAME}"
    local = tune_path[len("file://"):] if tune_path.startswith("file://") else tune_path
    return f"sqlite:///{Path(local).expanduser().absolute() / FILE_NAME}"


def check_storage_url(url: str, option: str = "--optuna-storage") -> str:
    """Validate an RDB URL without connecting; a relative sqlite path is made absolute.

    Returns:
        The URL to use.

    Raises:
        ConfigError: not an SQLAlchemy URL, a dialect whose driver is not installed, or a
            sqlite file whose folder does not exist.
    """
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise ConfigError(f"{option} {url!r} is not a database URL; use e.g. sqlite:///optuna.db or "
                          f"postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError(f"{option} {url!r}: an in-memory sqlite database does not persist; name a file, "
                              f"e.g. sqlite:///optuna.db")
        path = Path(parsed.database).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.parent.is_dir():
            raise ConfigError(f"{option} {url!r}: folder {str(path.parent)!r} does not exist")
        if path.is_dir():
            raise ConfigError(f"{option} {url!r}: {str(path)!r} is a folder, not a database file")
        return f"sqlite:///{path.resolve()}"
    try:
        dialect = parsed.get_dialect()
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()  # the driver module (psycopg2, pymysql...)
    except Exception as e:
        raise ConfigError(f"{option} {url!r}: no database driver for {parsed.drivername!r} ({type(e).__name__}); "
                          f"install it or use sqlite:///optuna.db") from None
    return url


def open_storage(url: str) -> Any:
    """An ``optuna.storages.RDBStorage`` on ``url`` (creates the tables on first use; sqlite:
    creates the file and its folder)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url)


def create_study(storage: Any, study_name: str, objectives: Mapping[str, str],
                 attrs: Mapping[str, str] | None = None) -> Any:
    """Create (or load) the search's study before ``OptunaSearch`` loads it by name: its
    directions and objective names (``study.set_metric_names``, shown by optuna-dashboard), and
    ``attrs`` as study user attributes (e.g. the MLflow parent run id).

    Args:
        storage: an Optuna storage (:func:`open_storage`).
        objectives: metric -> ``max`` or ``min``, in the searcher's order.
    """
    import optuna

    directions = ["maximize" if mode == "max" else "minimize" for mode in objectives.values()]
    study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, load_if_exists=True)
    with warnings.catch_warnings():  # set_metric_names is marked experimental (Optuna >= 3.2)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    return study


def prepare_search_study(url: str, study_name: str, objectives: Mapping[str, str],
                         attrs: Mapping[str, str] | None = None) -> Any:
    """:func:`open_storage` and :func:`create_study`: the storage ``OptunaSearch`` is given.

    Raises:
        ConfigError: the database cannot be opened (unreachable server, unwritable file).
    """
    try:
        storage = open_storage(url)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"Optuna storage {url}: cannot open it ({first}); pass --optuna-storage with a database "
                          f"this machine can write") from None
    create_study(storage, study_name, objectives, attrs)
    return storage


def fail_orphans(parent_run: Any) -> int:
    """Mark the study's trials still ``RUNNING`` once its search has finished as ``FAIL``.

    They are trials a killed driver had started after Tune's last save of its state: the resumed
    search sampled new ones instead. Never raises (a warning is logged); searches without an RDB
    storage are skipped.

    Returns:
        How many trials were marked.
    """
    import optuna

    try:
        study = load_search_study(parent_run)
        orphans = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
        for number in orphans:
            study.tell(number, state=optuna.trial.TrialState.FAIL)
    except ConfigError:
        return 0
    except Exception as e:
        log.warning("Optuna study of search %s: could not close unfinished trials (%s)", parent_run.info.run_id, e)
        return 0
    if orphans:
        print(f"marked {len(orphans)} Optuna trial(s) left RUNNING by a stopped driver FAIL", flush=True)
    return len(orphans)


def load_search_study(parent_run: Any) -> Any:
    """The Optuna study of a search, from its MLflow parent run's ``optuna_storage`` and ``study_name`` params.

    Raises:
        ConfigError: the search did not record an RDB storage (searches of earlier versions kept
            the study in Tune's searcher state only).
    """
    import optuna

    params = parent_run.data.params
    url, name = params.get("optuna_storage", ""), params.get("study_name", "")
    if "://" not in url or not name:
        raise ConfigError(f"search run {parent_run.info.run_id} records no Optuna RDB storage "
                          f"(optuna_storage={url!r})")
    return optuna.load_study(study_name=name, storage=url)
