"""The saved student: one self-contained file with weights, trial config and tokenizer.

Format: a safetensors file (no pickle, no code) whose tensors are the student's
``state_dict`` and whose string metadata holds ``featherweight_format``, the resolved trial
``config`` (JSON), the ``encoder`` (JSON: vocabulary, BPE model or hash parameters) and
``num_labels``/``pair``. ``size_bytes`` in MLflow is this file's size, so the vocabulary a
student needs to run is counted; ``weights_bytes`` counts the tensors alone.

Example:
    >>> info = save_student(model, config, encoder, num_labels=2, pair=False, path="s.safetensors")  # doctest: +SKIP
    >>> model2, encoder2, config2 = load_student("s.safetensors")                                     # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from trainables.config import ConfigError
from trainables.embeddings import TextEncoder, encoder_from_json, encoder_to_str
from trainables.students import Student, build_student

FORMAT = "featherweight-dense-v1"
ARTIFACT_NAME = "student.safetensors"


def file_sizes(path: str | Path) -> dict[str, int]:
    """``{"size_bytes": bytes of the file, "gzip_bytes": bytes after gzip}`` (the thesis measure).

    gzip runs at its command-line default, level 6 (level 9 saves about 1% more on students and
    takes minutes on a 60 MB transformer student).
    """
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=6, mtime=0))}


def save_student(model: Student, config: Mapping[str, Any], encoder: TextEncoder, num_labels: int, pair: bool,
                 path: str | Path) -> dict[str, int]:
    """Write ``model`` densely in float32 with its config and encoder to ``path``.

    Returns:
        ``size_bytes``, ``gzip_bytes`` (file sizes, bytes) and ``weights_bytes`` (tensor bytes).
    """
    if config.get("student") == "transformer":  # its own format (tokenizer + Hugging Face config)
        from trainables.transformer_student import save_transformer

        return save_transformer(model, config, encoder, num_labels, pair, path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return write_safetensors(path, state, student_metadata(FORMAT, config, encoder, num_labels, pair))


def student_metadata(fmt: str, config: Mapping[str, Any], encoder: TextEncoder, num_labels: int, pair: bool,
                     **extra: str) -> dict[str, str]:
    """The string metadata every student file carries: format, config, encoder, labels, pair (+ ``extra``)."""
    return {"featherweight_format": fmt, "config": json.dumps(dict(config), sort_keys=True),
            "encoder": encoder_to_str(encoder), "num_labels": str(num_labels), "pair": "1" if pair else "0", **extra}


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> dict[str, int]:
    """Write a safetensors file whose bytes depend only on its content, and measure it.

    ``safetensors`` writes metadata keys in hash order, so the same student would give files
    that differ in a few header bytes (and in ``gzip_bytes``); the header is re-serialised with
    sorted keys (same length, so the format's padding still holds).

    Returns:
        ``size_bytes``, ``gzip_bytes`` (see :func:`file_sizes`) and ``weights_bytes`` (tensor bytes).
    """
    from safetensors.torch import save

    data = bytearray(save(dict(tensors), metadata=dict(metadata)))
    n = int.from_bytes(data[:8], "little")
    header = json.loads(bytes(data[8: 8 + n]))
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    canonical = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(canonical) <= n:  # pad as safetensors does (spaces up to the same length)
        data[8: 8 + n] = canonical + b" " * (n - len(canonical))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    sizes = file_sizes(path)
    sizes["weights_bytes"] = sum(t.numel() * t.element_size() for t in tensors.values())
    return sizes


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a saved student (no tensors are read)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_student(path: str | Path) -> tuple[Student, TextEncoder, dict[str, Any]]:
    """Load a student saved by :func:`save_student` (or :func:`trainables.packed.save_packed`), in eval mode.

    Returns:
        ``(model, encoder, config)``.

    Raises:
        ConfigError: missing file or not a featherweight student.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"student file {str(path)!r} does not exist")
    meta = read_metadata(path)
    from trainables import packed  # the compressed format (imports this module)

    if meta.get("featherweight_format") == packed.FORMAT:
        return packed.load_packed(path)
    from trainables import transformer_student

    if meta.get("featherweight_format") == transformer_student.FORMAT:
        return transformer_student.load_transformer(path, meta)
    if meta.get("featherweight_format") != FORMAT:
        raise ConfigError(f"{path}: not a featherweight student file (format {meta.get('featherweight_format')!r})")
    config = json.loads(meta["config"])
    encoder = encoder_from_json(json.loads(meta["encoder"]))
    model = build_student(config, encoder, int(meta["num_labels"]), meta["pair"] == "1", init_pretrained=False)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), encoder, config
