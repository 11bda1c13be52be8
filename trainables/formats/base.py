"""What every student file shares, and the one save/load registry over the formats.

A student file is one safetensors file (no pickle, no code): tensors plus string metadata with
``featherweight_format``, the resolved trial ``config`` (JSON), the ``encoder`` (JSON:
vocabulary, BPE model, hash parameters or tokenizer) and ``num_labels``/``pair``. Each format
module (:mod:`.dense`, :mod:`.packed`, :mod:`.transformer`) registers its loader under its
format name with :func:`register_loader`, and the dense writers register per student class with
:func:`register_saver`; :func:`load_student` and :func:`save_student` dispatch through them.

Example:
    >>> sizes = save_student(model, config, encoder, num_labels=2, pair=False, path="s.safetensors")  # doctest: +SKIP
    >>> model2, encoder2, config2 = load_student("s.safetensors")                                     # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from trainables.config import resolve_config
from trainables.errors import ConfigError
from trainables.formats.layout import parse_json, read_layout
from trainables.models.embeddings import TextEncoder, encoder_from_json, encoder_to_str
from trainables.untrusted import short

Loader = Callable[[Path, Mapping[str, str]], "tuple[torch.nn.Module, TextEncoder, dict[str, Any]]"]
Saver = Callable[..., "dict[str, int]"]

#: ``featherweight_format`` -> loader ``(path, metadata) -> (model, encoder, config)``.
LOADERS: dict[str, Loader] = {}
#: student class -> writer of its uncompressed file (``(model, config, encoder, num_labels, pair, path) -> sizes``).
SAVERS: dict[type, Saver] = {}


def register_loader(fmt: str, loader: Loader) -> None:
    """Make :func:`load_student` read files whose ``featherweight_format`` is ``fmt`` with ``loader``."""
    LOADERS[fmt] = loader


def register_saver(cls: type, saver: Saver) -> None:
    """Make :func:`save_student` write students of class ``cls`` (and its subclasses) with ``saver``."""
    SAVERS[cls] = saver


def file_sizes(path: str | Path) -> dict[str, int]:
    """``{"size_bytes": bytes of the file, "gzip_bytes": bytes after gzip}`` (the thesis measure).

    gzip runs at its command-line default, level 6 (level 9 saves about 1% more on students and
    takes minutes on a 60 MB transformer student).
    """
    data = Path(path).read_bytes()
    return {"size_bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=6, mtime=0))}


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
    """The string metadata of a saved student (no tensors are read; the header is checked first,
    see :func:`trainables.formats.layout.read_layout`).

    Raises:
        ConfigError: missing file, or not a valid safetensors file.
    """
    return read_layout(path).metadata


def student_parts(path: Path, metadata: Mapping[str, str]
                  ) -> tuple[dict[str, Any], dict[str, Any], TextEncoder, int, bool]:
    """What every student file's metadata holds, checked: ``(config as saved, config resolved by
    :func:`trainables.config.resolve_config`, encoder, num_labels, pair)``.

    Raises:
        ConfigError: a config the trial config's rules refuse, an encoder that cannot be rebuilt,
            ``num_labels`` not 2 or 3, or ``pair`` not ``0``/``1``.
    """
    config = parse_json(path, metadata, "config")
    resolved = resolve_config(config, f"{path}: config")
    if metadata.get("num_labels") not in ("2", "3") or metadata.get("pair") not in ("0", "1"):
        raise ConfigError(f"{path}: not a valid student file (num_labels {short(metadata.get('num_labels'))} and "
                          f"pair {short(metadata.get('pair'))} must be 2 or 3, and 0 or 1)")
    obj = parse_json(path, metadata, "encoder")
    try:
        encoder = encoder_from_json(obj)
    except Exception as e:  # a foreign file: whatever an encoder's loader raises on it
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"{path}: not a valid student file (its encoder cannot be rebuilt: "
                          f"{type(e).__name__}: {first})") from None
    return config, resolved, encoder, int(metadata["num_labels"]), metadata["pair"] == "1"


def save_student(model: torch.nn.Module, config: Mapping[str, Any], encoder: TextEncoder, num_labels: int,
                 pair: bool, path: str | Path) -> dict[str, int]:
    """Write ``model`` uncompressed (float32) with its config and encoder to ``path``, in its class's format.

    Returns:
        ``size_bytes``, ``gzip_bytes`` (file sizes, bytes) and ``weights_bytes`` (tensor bytes).

    Raises:
        ValueError: no format registered for the model's class.
    """
    for cls in type(model).__mro__:
        if cls in SAVERS:
            return SAVERS[cls](model, config, encoder, num_labels, pair, path)
    raise ValueError(f"no student file format for {type(model).__name__}")


def load_student(path: str | Path) -> tuple[torch.nn.Module, TextEncoder, dict[str, Any]]:
    """Load a student file of any registered format, in eval mode.

    Returns:
        ``(model, encoder, config)``.

    Every declared shape, offset, count and bit width is checked against the file's size and the
    student its config describes before any tensor is allocated
    (:mod:`trainables.formats.layout`); a file that does not match its declared layout is refused.

    Raises:
        ConfigError: missing file, not a featherweight student, or a file that does not hold
            exactly the student it describes (one line naming the file and what is wrong).
    """
    path = Path(path)
    meta = read_metadata(path)
    loader = LOADERS.get(meta.get("featherweight_format", ""))
    if loader is None:
        raise ConfigError(f"{path}: not a featherweight student file (format "
                          f"{short(meta.get('featherweight_format'))})")
    return guarded(path, loader, path, meta)


def guarded(path: Path, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with a failure that the checks before it did not foresee (a corrupt tensor
    buffer, an encoder the tokenizer library refuses) turned into one ConfigError naming ``path``."""
    from safetensors import SafetensorError

    try:
        return fn(*args)
    except ConfigError:
        raise
    except (SafetensorError, RuntimeError, ValueError, KeyError, TypeError, IndexError, OverflowError,
            AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ConfigError(f"{path}: not a valid student file ({type(e).__name__}: {first})") from None
