"""The safetensors layout of a student file, read and checked before any tensor is allocated.

A student file comes from elsewhere (an MLflow store, a checkpoint folder, a download), so it
is untrusted: every number in it is checked against the file's real size and against the
student its config describes before anything is allocated, and every failure is one
:class:`~trainables.errors.ConfigError` line naming the file.

The safetensors format: 8 bytes, the little-endian length N of a JSON header; N bytes of UTF-8
JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``;
then the byte buffer, in which tensor ``name`` occupies bytes ``begin..end`` (relative to the
buffer's start). :func:`read_layout` checks what the ``safetensors`` library checks (and reads
nothing more than the header to do so): a header of at most :data:`MAX_HEADER_BYTES`, a JSON
object, known dtypes, non-negative integer shapes, ``end - begin`` equal to the element count
times the dtype's size, offsets that tile the buffer from 0 to its end without gaps or overlaps,
and a buffer of exactly the file's remaining size.

:func:`check_state_shapes` then compares the tensors a loader is about to read with the state
dict of the student rebuilt from the file's own config on PyTorch's ``meta`` device (shapes and
dtypes, no memory): a file that does not hold exactly that student is refused, never loaded
approximately.

Example:
    >>> layout = read_layout("student.safetensors")                  # doctest: +SKIP
    >>> layout.metadata["featherweight_format"], layout.tensors["classifier.weight"].shape  # doctest: +SKIP
    ('featherweight-dense-v1', (2, 200))
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.errors import ConfigError
from trainables.untrusted import expand_path, short

__all__ = ["DTYPE_SIZES", "MAX_HEADER_BYTES", "Layout", "TensorInfo", "check_state_shapes", "meta_model",
           "parse_json", "read_layout", "torch_dtype_name"]

#: Largest JSON header accepted (bytes). A student's header (config, vocabulary or tokenizer,
#: packing specs) is a few hundred kilobytes; the ``safetensors`` library's own cap is 100 MB.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Bytes per element of each safetensors dtype.
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
#: Most dimensions of one tensor, and largest element count (2^48) a shape may declare.
MAX_DIMS, MAX_ELEMENTS = 8, 2**48
_TORCH_NAMES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.uint16: "U16",
                torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.uint32: "U32",
                torch.float32: "F32", torch.int64: "I64", torch.uint64: "U64", torch.float64: "F64"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the header: safetensors ``dtype`` name, ``shape``, and its byte range
    ``begin..end`` in the buffer (bytes)."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def count(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """A checked safetensors file: ``size`` (bytes), ``header_bytes`` (N), ``tensors`` by name,
    ``metadata`` (string to string)."""

    path: Path
    size: int
    header_bytes: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def _bad(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path}: not a valid student file ({why})")


def read_layout(path: str | Path, max_header_bytes: int = MAX_HEADER_BYTES) -> Layout:
    """Read and check the header of a safetensors file (no tensor is read).

    Raises:
        ConfigError: missing file, or any deviation from the format described in the module doc.
    """
    path = expand_path(path, "student file")
    try:
        if not path.is_file():
            raise ConfigError(f"student file {short(str(path))} does not exist")
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                raise _bad(path, f"{size} bytes, shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > max_header_bytes:
                raise _bad(path, f"its header claims {n:,} bytes, above the limit of {max_header_bytes:,}")
            if n > size - 8:
                raise _bad(path, f"its header claims {n:,} bytes, but the file has {size - 8:,} after the length; "
                                 f"truncated")
            raw = f.read(n)
    except OSError as e:
        raise ConfigError(f"student file {str(path)!r} cannot be read ({e.strerror or type(e).__name__})") from None
    if len(raw) != n:
        raise _bad(path, "truncated header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"its header is not UTF-8 JSON: {type(e).__name__}") from None
    del raw
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _bad(path, "its __metadata__ is not a mapping of strings to strings")
    buffer = size - 8 - n
    tensors = {name: _tensor_info(path, name, spec, buffer) for name, spec in header.items()}
    position = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin != position:
            what = "overlaps the tensor before it" if info.begin < position else "leaves a gap before it"
            raise _bad(path, f"tensor {short(name)} at bytes {info.begin}..{info.end} {what}")
        position = info.end
    if position != buffer:
        raise _bad(path, f"its tensors cover {position:,} of the {buffer:,} buffer bytes")
    return Layout(path, size, n, tensors, dict(metadata))


def _tensor_info(path: Path, name: str, spec: Any, buffer: int) -> TensorInfo:
    if not isinstance(spec, dict):
        raise _bad(path, f"tensor {short(name)} is not described by an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise _bad(path, f"tensor {short(name)} has the unknown dtype {short(dtype)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in shape)):
        raise _bad(path, f"tensor {short(name)} has the shape {short(shape)}; expected at most {MAX_DIMS} "
                         f"non-negative integers")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise _bad(path, f"tensor {short(name)} declares {count:,} elements")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise _bad(path, f"tensor {short(name)} has the data_offsets {short(offsets)}; expected [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end <= buffer:
        raise _bad(path, f"tensor {short(name)} at bytes {begin}..{end} lies outside the {buffer:,}-byte buffer")
    if end - begin != count * DTYPE_SIZES[dtype]:
        raise _bad(path, f"tensor {short(name)} of shape {tuple(shape)} {dtype} needs {count * DTYPE_SIZES[dtype]:,} "
                         f"bytes, its offsets give {end - begin:,}")
    return TensorInfo(dtype, tuple(shape), begin, end)


def parse_json(path: Path, metadata: Mapping[str, str], key: str, kind: type = dict) -> Any:
    """``json.loads(metadata[key])``, which must be a ``kind``.

    Raises:
        ConfigError: the key is missing, or its value is not JSON of that kind.
    """
    if key not in metadata:
        raise _bad(path, f"its metadata has no {key!r}")
    try:
        value = json.loads(metadata[key])
    except (ValueError, RecursionError) as e:
        raise _bad(path, f"its metadata {key!r} is not JSON ({type(e).__name__})") from None
    if not isinstance(value, kind):
        raise _bad(path, f"its metadata {key!r} is not a JSON {'object' if kind is dict else kind.__name__}")
    return value


def torch_dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` -> ``"F32"``)."""
    return _TORCH_NAMES.get(dtype, str(dtype))


def meta_model(path: Path, build: Any) -> torch.nn.Module:
    """``build()`` on PyTorch's ``meta`` device: the student's shapes and dtypes, no memory.

    Raises:
        ConfigError: ``build`` fails (a config or encoder that describes no student).
    """
    try:
        with torch.device("meta"):
            return build()
    except ConfigError as e:
        raise _bad(path, str(e)) from None
    except Exception as e:  # a foreign file: whatever the builders raise on it is the file's fault
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise _bad(path, f"its config describes no student: {type(e).__name__}: {first}") from None


def check_state_shapes(path: Path, expected: Mapping[str, torch.Tensor], found: Mapping[str, tuple[str, tuple]]) -> None:
    """Check that ``found`` (name -> (safetensors dtype, shape)) is exactly the state dict ``expected``.

    Raises:
        ConfigError: a missing or extra entry, or one whose shape or dtype differs.
    """
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = f"misses {short(missing[0])}" if missing else f"has the unexpected entry {short(extra[0])}"
        raise _bad(path, f"it does not hold the student its config describes: it {what}")
    for key, tensor in expected.items():
        dtype, shape = found[key]
        want = (torch_dtype_name(tensor.dtype), tuple(tensor.shape))
        if (dtype, tuple(shape)) != want:
            raise _bad(path, f"entry {short(key)} is {dtype} {tuple(shape)}, the student's config makes it "
                             f"{want[0]} {want[1]}")
