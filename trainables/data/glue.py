"""GLUE data for SST-2, QQP and MNLI: from a local GLUE folder or the Hugging Face hub.

A local folder may use the official GLUE TSV layout (``SST-2/train.tsv``, ``QQP/dev.tsv``,
``MNLI/dev_matched.tsv``...) or the JSON/JSONL files staged in ``shared/data/glue``
(``QQP/pcp_subset/*.json``, ``MNLI/dev_matched.jsonl``); the official file wins when both
exist, and a subset is announced once. GLUE TSVs contain ``"`` characters, so they are read
with quoting off. Every split carries a content hash (sha256 over its rows) that keys the
teacher-logit cache and is logged as the ``data_hash`` tag.

Example:
    >>> split = load_split("sst2", "dev", "../shared/data/glue")  # doctest: +SKIP
    >>> len(split), split.num_labels                               # doctest: +SKIP
    (872, 2)
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import TASKS
from trainables.errors import ConfigError
from trainables.untrusted import expand_path, short

log = logging.getLogger(__name__)

NUM_LABELS = {"sst2": 2, "qqp": 2, "mnli": 3}
MNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
# split name -> Hugging Face `glue` split name
_HUB_SPLITS = {
    "sst2": {"train": "train", "dev": "validation"},
    "qqp": {"train": "train", "dev": "validation"},
    "mnli": {"train": "train", "dev": "validation_matched", "dev_mismatched": "validation_mismatched"},
}
# split name -> local candidates, official GLUE layout first: (relative path, format, is_subset)
_LOCAL_FILES = {
    "sst2": {
        "train": [("SST-2/train.tsv", "tsv", False)],
        "dev": [("SST-2/dev.tsv", "tsv", False)],
    },
    "qqp": {
        "train": [("QQP/train.tsv", "tsv", False), ("QQP/pcp_subset/train.json", "json", True)],
        "dev": [("QQP/dev.tsv", "tsv", False), ("QQP/pcp_subset/dev.json", "json", True)],
    },
    "mnli": {
        "train": [("MNLI/train.tsv", "tsv", False), ("MNLI/pcp_subset/train.json", "json", True)],
        "dev": [("MNLI/dev_matched.tsv", "tsv", False), ("MNLI/dev_matched.jsonl", "jsonl", False)],
        "dev_mismatched": [("MNLI/dev_mismatched.tsv", "tsv", False)],
    },
}
_TSV_COLUMNS = {  # task -> (text_a column, text_b column or None, label column)
    "sst2": ("sentence", None, "label"),
    "qqp": ("question1", "question2", "is_duplicate"),
    "mnli": ("sentence1", "sentence2", "gold_label"),
}
_announced_subsets: set[str] = set()


@dataclass
class Split:
    """One split of a GLUE task, in file order.

    Attributes:
        task: ``sst2``, ``qqp`` or ``mnli``.
        name: ``train``, ``dev`` or ``dev_mismatched``.
        text_a: first sentences (stripped), length n.
        text_b: second sentences for pair tasks (QQP, MNLI), else ``None``.
        labels: int64 array of shape (n,), values in ``[0, num_labels)``.
        source: file path or ``hub:nyu-mll/glue/<task>/<split>``.
        data_hash: sha256 hex digest over the rows (texts and labels), independent of format.
    """

    task: str
    name: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    source: str
    data_hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.data_hash:
            self.data_hash = content_hash(self.text_a, self.text_b, self.labels)

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def num_labels(self) -> int:
        return NUM_LABELS[self.task]

    @property
    def is_pair(self) -> bool:
        return self.text_b is not None

    def texts(self) -> list[str]:
        """All sentences of the split (both sides for pair tasks), e.g. to learn a vocabulary."""
        return self.text_a + (self.text_b or [])

    def subset(self, rows: np.ndarray, name: str) -> Split:
        """The split's ``rows`` (int array, in that order) as a new split called ``name``."""
        rows = np.asarray(rows, dtype=np.int64)
        return Split(self.task, name, [self.text_a[i] for i in rows],
                     [self.text_b[i] for i in rows] if self.text_b is not None else None,
                     np.asarray(self.labels)[rows], f"{self.source}#{name}")


#: Share of the training split held out for validation unless ``val_size`` is given.
DEFAULT_VAL_FRACTION = 0.05


def check_validation_options(fraction: float, size: int) -> None:
    """Check ``val_fraction`` (in (0, 0.5]) and ``val_size`` (a whole number >= 0) before any data loads.

    Raises:
        ConfigError: a value outside those bounds.
    """
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0 < fraction <= 0.5):
        raise ConfigError(f"val_fraction must be in (0, 0.5], got {fraction!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
        raise ConfigError(f"val_size must be a whole number >= 0, got {size!r}")


def validation_rows(n: int, fraction: float = DEFAULT_VAL_FRACTION, size: int = 0, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` training rows into ``(train rows, validation rows)``, both sorted.

    The validation split is carved from the training data so that nothing that selects (early
    stopping, the best epoch, a scheduler, the search objective) sees the dev set, on which the
    reported ``accuracy`` is measured. ``size`` rows (when > 0), else ``round(fraction * n)``
    rows (at least 1), drawn by a permutation seeded with ``seed``.

    Raises:
        ConfigError: a fraction outside (0, 0.5], a negative size, or one that leaves no training row.

    Example:
        >>> train, val = validation_rows(10, fraction=0.2, seed=0)
        >>> len(train), len(val), sorted(set(train) | set(val)) == list(range(10))
        (8, 2, True)
    """
    check_validation_options(fraction, size)
    k = int(size) if size else max(1, int(round(fraction * n)))
    if k >= n:
        raise ConfigError(f"a validation split of {k} rows leaves no training row of {n}; lower val_size/val_fraction")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def content_hash(text_a: list[str], text_b: list[str] | None, labels: np.ndarray) -> str:
    """sha256 hex digest of the rows ``text_a \\t text_b \\t label \\n`` in order."""
    h = hashlib.sha256()
    for i, a in enumerate(text_a):
        b = text_b[i] if text_b is not None else ""
        h.update(f"{a}\t{b}\t{int(labels[i])}\n".encode())
    return h.hexdigest()


def check_task(task: str) -> str:
    """Return ``task`` normalised (``SST-2`` -> ``sst2``) or raise :class:`ConfigError`."""
    norm = task.lower().replace("-", "").replace("_", "")
    if norm not in TASKS:
        raise ConfigError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    return norm


def _label(task: str, raw: object) -> int:
    """The label id of ``raw`` (an MNLI label name, else an integer in ``[0, num_labels)``).

    Raises:
        ValueError: anything else (the caller names the file and line).
    """
    text = str(raw).strip()
    if task == "mnli":
        if text not in MNLI_LABELS:
            raise ValueError(f"unknown MNLI label {text[:40]!r}; allowed: {', '.join(MNLI_LABELS)}")
        return MNLI_LABELS[text]
    if not (text.isascii() and text.isdigit()) or int(text) >= NUM_LABELS[task]:
        raise ValueError(f"label {text[:40]!r} is not one of 0..{NUM_LABELS[task] - 1}")
    return int(text)


def _read_tsv(path: Path, task: str) -> tuple[list[str], list[str] | None, list[int]]:
    """Rows of a GLUE TSV file (quoting off; rows shorter than the header are skipped).

    Raises:
        ConfigError: not UTF-8, no header, a missing column, a row whose label is not the
            task's (the message names the file and line), or no rows.
    """
    col_a, col_b, col_label = _TSV_COLUMNS[task]
    a, b, y = [], [] if col_b else None, []
    csv.field_size_limit(sys.maxsize)
    line = 0

    def decoded(lines: Any) -> Any:  # line by line, so that a byte that is not UTF-8 is reported at its line
        for number, raw in enumerate(lines, 1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}: line {number}: not UTF-8 text (byte {e.start + 1} of the line)") from None

    try:
        with path.open("rb") as f:
            reader = csv.reader(decoded(f), delimiter="\t", quoting=csv.QUOTE_NONE)
            header = next(reader, None)
            if header is None:
                raise ConfigError(f"{path}: the file is empty; expected a GLUE header with "
                                  f"{', '.join(c for c in (col_a, col_b, col_label) if c)}")
            missing = [c for c in (col_a, col_b, col_label) if c and c not in header]
            if missing:
                raise ConfigError(f"{path}: missing GLUE column(s) {', '.join(missing)}; header is "
                                  f"{short(header[:20])}")
            ia, il = header.index(col_a), header.index(col_label)
            ib = header.index(col_b) if col_b else None
            for row in reader:
                line = reader.line_num
                if len(row) < len(header):  # malformed rows exist in the official QQP train file
                    continue
                try:
                    y.append(_label(task, row[il]))
                except ValueError as e:
                    raise ConfigError(f"{path}: line {line}: {e}") from None
                a.append(row[ia].strip())
                if b is not None:
                    b.append(row[ib].strip())
    except csv.Error as e:
        raise ConfigError(f"{path}: line {line + 1}: {e}") from None
    if not a:
        raise ConfigError(f"{path}: no data rows below the header")
    return a, b, y


def _field(row: object, key: str, where: str) -> str:
    if not isinstance(row, dict) or not isinstance(row.get(key), str):
        raise ConfigError(f"{where}: expected an object with the text field {key!r}")
    return row[key].strip()


def _read_json(path: Path, task: str, lines: bool) -> tuple[list[str], list[str] | None, list[int]]:
    """Rows of a staged JSON (``{"0": {"text_a", "text_b", "label"}, ...}``) or JSONL
    (``{"premise", "hypothesis", "label"}`` per line) file.

    Raises:
        ConfigError: not UTF-8 or not JSON, a row without its fields or with a label that is not
            the task's (the message names the file and line or key), or no rows.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    a: list[str] = []
    b: list[str] | None = []
    y: list[int] = []
    if lines:
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            where = f"{path}: line {number}"
            try:
                row = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise ConfigError(f"{where}: not JSON ({type(e).__name__})") from None
            a.append(_field(row, "premise", where))
            b.append(_field(row, "hypothesis", where))
            y.append(_label_at(task, row.get("label"), where))
    else:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ConfigError(f"{path}: not JSON ({type(e).__name__}: {str(e)[:80]})") from None
        if not isinstance(obj, dict) or not all(isinstance(k, str) and k.isascii() and k.isdigit() for k in obj):
            raise ConfigError(f"{path}: expected an object mapping row numbers to rows")
        b = [] if task != "sst2" else None
        for key in sorted(obj, key=int):
            where, row = f"{path}: row {key}", obj[key]
            a.append(_field(row, "text_a", where))
            if b is not None:
                b.append(_field(row, "text_b", where))
            y.append(_label_at(task, row.get("label"), where))
    if not a:
        raise ConfigError(f"{path}: no data rows")
    return a, b, y


def _label_at(task: str, raw: object, where: str) -> int:
    if raw is None or isinstance(raw, (bool, list, dict, float)):
        raise ConfigError(f"{where}: label {short(raw)} is not one of the task's labels")
    try:
        return _label(task, raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def local_split_path(task: str, split: str, data_dir: str | Path) -> tuple[Path, str, bool]:
    """Find the file of ``split`` under ``data_dir``: (path, format, is_subset).

    Raises:
        ConfigError: unknown split, missing folder, or no candidate file exists.
    """
    task = check_task(task)
    root = expand_path(data_dir, "--data-dir")
    if not root.is_dir():
        raise ConfigError(f"data folder {str(root)!r} does not exist; pass --data-dir with a GLUE folder "
                          f"(e.g. ../shared/data/glue) or leave it unset to use the Hugging Face hub")
    if split not in _LOCAL_FILES[task]:
        raise ConfigError(f"task {task} has no split {split!r}; allowed: {', '.join(_LOCAL_FILES[task])}")
    for rel, fmt, subset in _LOCAL_FILES[task][split]:
        if (root / rel).is_file():
            return root / rel, fmt, subset
    tried = ", ".join(rel for rel, _, _ in _LOCAL_FILES[task][split])
    raise ConfigError(f"no {task} {split} file under {root}; expected one of: {tried}")


def load_split(task: str, split: str, data_dir: str | Path | None = None) -> Split:
    """Load one split of a GLUE task.

    Args:
        task: ``sst2``, ``qqp`` or ``mnli`` (``SST-2`` etc. accepted).
        split: ``train``, ``dev`` (MNLI: matched) or ``dev_mismatched`` (MNLI only).
        data_dir: a local GLUE folder; ``None`` loads ``nyu-mll/glue`` from the hub via ``datasets``.

    Returns:
        The :class:`Split`, rows in file order, texts stripped of surrounding white space.

    Raises:
        ConfigError: unknown task or split, missing folder or file, hub unreachable.
    """
    task = check_task(task)
    if data_dir is None:
        return _load_hub(task, split)
    path, fmt, subset = local_split_path(task, split, data_dir)
    if subset and str(path) not in _announced_subsets:
        _announced_subsets.add(str(path))
        log.warning("%s %s: the official GLUE file is absent; using the subset %s", task, split, path)
    if fmt == "tsv":
        a, b, y = _read_tsv(path, task)
    else:
        a, b, y = _read_json(path, task, lines=(fmt == "jsonl"))
    return Split(task, split, a, b, np.asarray(y, dtype=np.int64), str(path))


def _load_hub(task: str, split: str) -> Split:
    if split not in _HUB_SPLITS[task]:
        raise ConfigError(f"task {task} has no split {split!r}; allowed: {', '.join(_HUB_SPLITS[task])}")
    hub_split = _HUB_SPLITS[task][split]
    try:
        import datasets

        ds = datasets.load_dataset("nyu-mll/glue", task, split=hub_split)
    except Exception as e:  # offline, no such dataset, ...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot load GLUE {task} {split} from the Hugging Face hub ({first}); "
                          f"pass --data-dir with a local GLUE folder") from None
    if task == "sst2":
        a, b = [s.strip() for s in ds["sentence"]], None
    elif task == "qqp":
        a, b = [s.strip() for s in ds["question1"]], [s.strip() for s in ds["question2"]]
    else:
        a, b = [s.strip() for s in ds["premise"]], [s.strip() for s in ds["hypothesis"]]
    return Split(task, split, a, b, np.asarray(ds["label"], dtype=np.int64), f"hub:nyu-mll/glue/{task}/{hub_split}")
