"""What a trial's MLflow run records besides params and metrics: its datasets and its model.

- :func:`trial_datasets`: the splits the trial reads, as dataset inputs of its run (train,
  validation when the data has one, dev, MNLI's dev_mismatched), each with its data hash.
- :func:`log_student_model`: the trial's final student file as an MLflow model of the run
  (:meth:`trainables.tracking.Tracker.log_model`), timed (metric ``model_log_time_s``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainables.config import parse_stages
from trainables.tracking import DatasetRecord

#: A split's name -> its MLflow dataset context (``mlflow.data.context``).
CONTEXTS = {"train": "train", "val": "validation", "validation": "validation", "dev": "dev",
            "dev_mismatched": "dev_mismatched"}


def dataset_record(split: Any, context: str) -> DatasetRecord:
    """The :class:`trainables.tracking.DatasetRecord` of a :class:`trainables.data.glue.Split` in role ``context``."""
    columns = (("text_a", "string"),) + ((("text_b", "string"),) if split.is_pair else ()) + (("label", "long"),)
    return DatasetRecord(f"{split.task}-{context}", context, split.data_hash, split.source, len(split), columns)


def trial_datasets(data: Any) -> list[DatasetRecord]:
    """Dataset records of the splits of a :class:`trainables.trial.state.TrialData`: ``train``,
    ``validation`` (attribute ``val``, when present), ``dev`` and ``dev_mismatched`` (when present)."""
    out = []
    for attr in ("train", "val", "dev", "dev_mismatched"):
        split = getattr(data, attr, None)
        if split is not None:
            out.append(dataset_record(split, CONTEXTS[attr]))
    return out


def model_name(cfg: dict[str, Any]) -> str:
    """The logged model's name: student, embedding (not for ``transformer``) and compression stages,
    e.g. ``bilstm-glove``, ``ffn-hash-prune-quantize``, ``transformer-quantize``."""
    parts = [cfg["student"]] + ([cfg["embedding"]] if cfg["student"] != "transformer" else [])
    parts += [s for s in parse_stages(cfg["stages"]) if s != "distill"]
    return "-".join(str(p) for p in parts)


def model_tags(data: Any, cfg: dict[str, Any], settings: Any) -> dict[str, str]:
    """Tags of a trial's logged model: ``task``, ``student``, ``stages``, and the search's
    ``search_id`` and ``trial_id`` when the run settings carry them."""
    tags = {"task": data.train.task, "student": str(cfg["student"]), "stages": str(cfg["stages"])}
    tags.update({k: settings.tags[k] for k in ("search_id", "trial_id") if k in settings.tags})
    return tags


def student_file(model_dir: Path) -> Path:
    """The one student file (``*.safetensors``) in a trial's ``model/`` folder.

    Raises:
        FileNotFoundError: there is none.
    """
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no student file in {model_dir}")
    return files[0]


def log_student_model(tracker: Any, model_dir: Path, cfg: dict[str, Any], tags: dict[str, str], step: int) -> str | None:
    """Log the student in ``model_dir`` as the run's MLflow model; its logging time (seconds) is
    the metric ``model_log_time_s`` at ``step``.

    Args:
        tracker: a :class:`trainables.tracking.Tracker`.
        model_dir: the trial's ``model/`` folder.
        cfg: the resolved config (the model's params).
        tags: tags of the logged model.
        step: the step of the final metrics.

    Returns:
        The model id, or ``None`` where the tracker keeps no models.
    """
    t0 = time.perf_counter()
    model_id = tracker.log_model(student_file(model_dir), model_name(cfg), params=cfg, tags=tags, step=step)
    if model_id is not None:
        tracker.log_metrics({"model_log_time_s": time.perf_counter() - t0}, step=step)
    return model_id
