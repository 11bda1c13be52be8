"""An MLflow model folder around a student file: pyfunc flavour (models-from-code), signature,
input example and pinned requirements.

:func:`save_pyfunc` is what :meth:`trainables.tracking.MlflowTracker.log_model` logs for every
trial. The folder holds a copy of the student file as the artifact ``student`` (the file whose
bytes are ``size_bytes``), the models-from-code file :data:`PYFUNC_FILE` and MLflow's metadata;
nothing is pickled.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata as md
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.formats import read_metadata
from trainables.serving.student import LABEL_NAMES, OUTPUT_COLUMNS, input_columns

#: The models-from-code file MLflow copies into each model.
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")

#: What the pyfunc model imports, pinned to the versions installed when it is saved.
REQUIREMENTS = ("mlflow", "torch", "safetensors", "numpy", "pandas", "tokenizers", "transformers", "pyyaml")

_EXAMPLES = {
    "sst2": {"text": ["a gripping , funny and moving film .", "the plot is a mess and the jokes fall flat ."]},
    "qqp": {"text_a": ["How do I learn Python quickly?", "What is the capital of France?"],
            "text_b": ["What is the fastest way to learn Python?", "How tall is the Eiffel Tower?"]},
    "mnli": {"text_a": ["A man is playing a guitar on stage.", "A dog runs through the snow."],
             "text_b": ["A person is making music.", "A cat sleeps on a sofa."]},
}


def signature(pair: bool) -> Any:
    """The ``mlflow.models.ModelSignature``: string column(s) ``text`` or ``text_a``/``text_b`` in;
    ``label`` (long), ``label_name`` (string), ``probabilities`` (array of double) out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec("string", c) for c in input_columns(pair)])
    label, name, probs = OUTPUT_COLUMNS
    outputs = Schema([ColSpec("long", label), ColSpec("string", name), ColSpec(Array("double"), probs)])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(task: str) -> pd.DataFrame:
    """Two made-up rows in the input format of ``task`` (``sst2``, ``qqp`` or ``mnli``)."""
    return pd.DataFrame(_EXAMPLES[task])


@functools.lru_cache(maxsize=1)
def _pinned() -> tuple[str, ...]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return tuple(out)


def requirements() -> list[str]:
    """``name==version`` of each of :data:`REQUIREMENTS` that is installed."""
    return list(_pinned())


def save_pyfunc(student_path: str | Path, dst: str | Path, mlflow_model: Any = None) -> Path:
    """Write the MLflow model of the student file ``student_path`` to the new folder ``dst``.

    Args:
        student_path: a student file (dense, packed or transformer format).
        dst: a folder that does not exist yet.
        mlflow_model: an ``mlflow.models.Model`` carrying the ids of a logged model
            (``model_id``, ``run_id``, ``artifact_path``), or ``None``.

    Returns:
        ``dst``.

    Raises:
        ConfigError: not a featherweight student file.
        MlflowException: ``dst`` exists.
    """
    import mlflow.pyfunc

    from trainables.errors import ConfigError

    meta = read_metadata(student_path)
    if "featherweight_format" not in meta:
        raise ConfigError(f"{student_path}: not a featherweight student file")
    task = json.loads(meta["config"])["task"]
    if task not in LABEL_NAMES:
        raise ConfigError(f"{student_path}: unknown task {task!r}")
    pair = meta.get("pair") == "1"
    with _quiet():
        mlflow.pyfunc.save_model(path=str(dst), python_model=str(PYFUNC_FILE), artifacts={"student": str(student_path)},
                                 signature=signature(pair), input_example=input_example(task),
                                 pip_requirements=requirements(), mlflow_model=mlflow_model,
                                 metadata={"featherweight_format": meta["featherweight_format"], "task": task})
    return Path(dst)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Without MLflow's per-model notes (input-example validation, artifact progress bar), which
    would repeat in every trial's log."""
    logger = logging.getLogger("mlflow.pyfunc")
    level, bar = logger.level, os.environ.get(_PROGRESS_BAR)
    logger.setLevel(logging.WARNING)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = bar


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"

