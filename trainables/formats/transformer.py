"""The transformer student's file: its Hugging Face state dict, tokenizer and model config.

Format ``featherweight-transformer-v1`` (one safetensors file, no pickle): the float32 state dict
of the Hugging Face model, and as string metadata the trial ``config``, the ``encoder`` (tokenizer
JSON), the ``model_config`` (the truncated Hugging Face config JSON), ``num_labels`` and ``pair``.
It loads without the teacher: the architecture is rebuilt from ``model_config`` alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError
from trainables.formats.base import file_sizes, register_loader, register_saver, student_parts
from trainables.formats.layout import check_state_shapes, meta_model, parse_json, read_layout
from trainables.models.transformer import TransformerStudent, WordPieceEncoder
from trainables.untrusted import short

FORMAT = "featherweight-transformer-v1"


def save_transformer(model: TransformerStudent, config: Mapping[str, Any], encoder: WordPieceEncoder,
                     num_labels: int, pair: bool, path: str | Path) -> dict[str, int]:
    """Write the student (float32 state dict) with config, tokenizer and model config to ``path``.

    Returns:
        ``size_bytes``, ``gzip_bytes`` (the file, bytes) and ``weights_bytes`` (tensor bytes).
    """
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous().cpu() for k, v in model.model.state_dict().items()}
    meta = {
        "featherweight_format": FORMAT,
        "config": json.dumps(dict(config), sort_keys=True),
        "encoder": json.dumps(encoder.to_json(), separators=(",", ":")),
        "model_config": model.model.config.to_json_string(use_diff=False),
        "num_labels": str(num_labels),
        "pair": "1" if pair else "0",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    sizes = file_sizes(path)
    sizes["weights_bytes"] = sum(v.numel() * v.element_size() for v in state.values())
    return sizes


def load_transformer(path: str | Path, meta: Mapping[str, str] | None = None
                     ) -> tuple[TransformerStudent, WordPieceEncoder, dict[str, Any]]:
    """Load a student saved by :func:`save_transformer`, in eval mode (no teacher needed, no pickle).

    The tensors must be exactly the state dict of the architecture ``model_config`` describes,
    checked on the ``meta`` device before anything is allocated.

    Returns:
        ``(model, encoder, config)``.

    Raises:
        ConfigError: not a transformer student file, or one that does not hold exactly that
            student (see :mod:`trainables.formats.layout`).
    """
    from safetensors.torch import load_file

    path = Path(path)
    layout = read_layout(path)
    meta = layout.metadata
    if meta.get("featherweight_format") != FORMAT:
        raise ConfigError(f"{path}: not a transformer student file (format {short(meta.get('featherweight_format'))})")
    config, _, encoder, _, _ = student_parts(path, meta)
    expected = meta_model(path, lambda: skeleton(meta, path)).model.state_dict()
    check_state_shapes(path, expected, {k: (t.dtype, t.shape) for k, t in layout.tensors.items()})
    student = skeleton(meta, path)
    student.model.load_state_dict(load_file(str(path)))
    return student.eval(), encoder, config


def skeleton(meta: Mapping[str, str], path: str | Path = "student file") -> TransformerStudent:
    """An untrained student of the architecture a file's ``model_config`` and ``pair`` metadata
    describe (no download: built from the config alone), ready for ``load_state_dict``.

    Raises:
        ConfigError: ``model_config`` is not a JSON object naming a ``model_type`` that
            ``transformers`` knows, or describes no model (e.g. a negative size).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    hf = parse_json(Path(path), meta, "model_config")
    model_type = hf.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ConfigError(f"{path}: not a valid student file (its model_config names no model_type)")
    try:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type, **hf))
    except Exception as e:  # a foreign file: whatever transformers raises on its config
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"{path}: not a valid student file (its model_config describes no model: "
                          f"{type(e).__name__}: {first})") from None
    return TransformerStudent(model, meta.get("pair") == "1")


def architecture_metadata(model: Any) -> dict[str, str]:
    """Metadata a packed file needs to rebuild ``model``'s architecture without its config's
    defaults: ``{"model_config": ...}`` for a transformer student, ``{}`` for the others."""
    if isinstance(model, TransformerStudent):
        return {"model_config": model.model.config.to_json_string(use_diff=False)}
    return {}


register_saver(TransformerStudent, save_transformer)
register_loader(FORMAT, load_transformer)
