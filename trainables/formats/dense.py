"""The dense student file: the student's float32 ``state_dict`` in one safetensors file.

Format ``featherweight-dense-v1``: the tensors are the student's ``state_dict``; the metadata
is :func:`trainables.formats.base.student_metadata`'s. ``size_bytes`` in MLflow is this file's
size, so the vocabulary a student needs to run is counted; ``weights_bytes`` counts the tensors alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from trainables.formats.base import register_loader, register_saver, student_metadata, student_parts, write_safetensors
from trainables.formats.layout import check_state_shapes, meta_model, read_layout
from trainables.models.embeddings import TextEncoder
from trainables.models.students import Student, build_student

FORMAT = "featherweight-dense-v1"
ARTIFACT_NAME = "student.safetensors"


def save_dense(model: Student, config: Mapping[str, Any], encoder: TextEncoder, num_labels: int, pair: bool,
               path: str | Path) -> dict[str, int]:
    """Write ``model`` densely in float32 with its config and encoder to ``path``.

    Returns:
        ``size_bytes``, ``gzip_bytes`` (file sizes, bytes) and ``weights_bytes`` (tensor bytes).
    """
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return write_safetensors(path, state, student_metadata(FORMAT, config, encoder, num_labels, pair))


def load_dense(path: Path, meta: Mapping[str, str]) -> tuple[Student, TextEncoder, dict[str, Any]]:
    """Load a file written by :func:`save_dense` (``meta``: its metadata), in eval mode.

    The tensors must be exactly the state dict (names, shapes, dtypes) of the student the file's
    config and encoder describe, checked on the ``meta`` device before anything is allocated.

    Returns:
        ``(model, encoder, config)``.

    Raises:
        ConfigError: a file that does not hold exactly that student (see
            :func:`trainables.formats.base.student_parts` and :mod:`trainables.formats.layout`).
    """
    path = Path(path)
    layout = read_layout(path)
    config, resolved, encoder, num_labels, pair = student_parts(path, layout.metadata)

    def build() -> Student:
        return build_student(resolved, encoder, num_labels, pair, init_pretrained=False)

    expected = meta_model(path, build).state_dict()
    check_state_shapes(path, expected, {k: (t.dtype, t.shape) for k, t in layout.tensors.items()})
    model = build()
    model.load_state_dict(load_file(str(path)))
    return model.eval(), encoder, config


register_saver(Student, save_dense)
register_loader(FORMAT, load_dense)
