"""A student file as a text classifier: texts in, labels and class probabilities out.

The input is a table with one text column, ``text`` (SST-2), or two, ``text_a`` and ``text_b``
(the sentence pairs of QQP and MNLI: question 1 and 2, premise and hypothesis). The output has
one row per input row: ``label`` (the class index, as in the GLUE files), ``label_name`` and
``probabilities`` (softmax of the student's logits, one value per class, in class order).

The student is read with :func:`trainables.formats.load_student` (safetensors, no pickle) and
texts go through :func:`trainables.training.encoded.encode_split` and
:func:`trainables.training.encoded.predict`, the path the trial measures ``accuracy`` on, so the
predictions on the dev split reproduce the logged ``accuracy``.

Example:
    >>> p = StudentPredictor.from_file("model/student.safetensors")          # doctest: +SKIP
    >>> p.predict(pd.DataFrame({"text": ["a moving , funny film ."]}))       # doctest: +SKIP
       label label_name               probabilities
    0      1   positive  [0.08, 0.92]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainables.data.glue import MNLI_LABELS, Split
from trainables.formats import load_student, read_metadata
from trainables.training.encoded import encode_split, predict

#: task -> class names in class-index order (GLUE's label values).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "sst2": ("negative", "positive"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": tuple(sorted(MNLI_LABELS, key=MNLI_LABELS.__getitem__)),
}
OUTPUT_COLUMNS = ("label", "label_name", "probabilities")


def input_columns(pair: bool) -> tuple[str, ...]:
    """The input table's columns: ``("text",)``, or ``("text_a", "text_b")`` for sentence pairs."""
    return ("text_a", "text_b") if pair else ("text",)


def _strings(values: Any) -> list[str]:
    """Texts as a list of ``str`` (missing values become empty strings)."""
    return ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


class StudentPredictor:
    """A loaded student with its encoder: :meth:`predict` maps texts to labels and probabilities.

    Args:
        model: the student (eval mode), as :func:`trainables.formats.load_student` returns it.
        encoder: its text encoder.
        config: the resolved trial config (``task``, ``max_length``).
        pair: whether the student reads sentence pairs.
    """

    def __init__(self, model: torch.nn.Module, encoder: Any, config: Mapping[str, Any], pair: bool):
        self.model, self.encoder, self.config, self.pair = model, encoder, dict(config), pair
        self.task = self.config["task"]
        self.columns = input_columns(pair)

    @classmethod
    def from_file(cls, path: str | Path) -> "StudentPredictor":
        """Load a student file of any format (dense, packed, transformer).

        Raises:
            ConfigError: missing file or not a featherweight student.
        """
        model, encoder, config = load_student(path)
        return cls(model, encoder, config, read_metadata(path).get("pair") == "1")

    def texts(self, model_input: Any) -> tuple[list[str], list[str] | None]:
        """``(first texts, second texts or None)`` of an input table.

        Accepts a ``pandas.DataFrame`` (the named columns; else a single column, or two for
        pairs, by position), a mapping of column name to texts, a list of texts (single-sentence
        students) or of ``(text_a, text_b)`` pairs, or one text.

        Raises:
            ValueError: the input has neither the named columns nor as many columns as expected.
        """
        if isinstance(model_input, str):
            model_input = [model_input]
        if isinstance(model_input, Mapping):
            model_input = pd.DataFrame({k: list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v]
                                        for k, v in model_input.items()})
        if not isinstance(model_input, pd.DataFrame):
            rows = list(model_input)
            model_input = (pd.DataFrame(rows, columns=list(self.columns)) if self.pair
                           else pd.DataFrame({"text": rows}))
        if set(self.columns) <= set(model_input.columns):
            table = model_input[list(self.columns)]
        elif model_input.shape[1] == len(self.columns):
            table = model_input
        else:
            raise ValueError(f"the input needs the column(s) {', '.join(self.columns)}; got "
                             f"{', '.join(map(str, model_input.columns)) or 'no columns'}")
        a = _strings(table.iloc[:, 0])
        return a, (_strings(table.iloc[:, 1]) if self.pair else None)

    def probabilities(self, model_input: Any) -> np.ndarray:
        """Class probabilities, float64 (n, num_labels): softmax of the student's logits."""
        a, b = self.texts(model_input)
        if not a:
            return np.zeros((0, len(LABEL_NAMES[self.task])))
        # labels are not read by prediction; data_hash given so that no hash is computed
        split = Split(self.task, "serving", a, b, np.zeros(len(a), dtype=np.int64), "pyfunc", data_hash="serving")
        logits = torch.from_numpy(predict(self.model, encode_split(split, self.encoder, self.config["max_length"])))
        return torch.softmax(logits.double(), dim=-1).numpy()

    def predict(self, model_input: Any) -> pd.DataFrame:
        """``label`` (int64), ``label_name`` and ``probabilities`` (list of float per row), one row per input row."""
        probs = self.probabilities(model_input)
        labels = probs.argmax(-1).astype(np.int64)
        names = LABEL_NAMES[self.task]
        return pd.DataFrame({"label": labels, "label_name": [names[i] for i in labels],
                             "probabilities": [row.tolist() for row in probs]}, columns=list(OUTPUT_COLUMNS))
