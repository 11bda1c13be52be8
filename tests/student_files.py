"""Real student files and crafted (hostile) variants of them, for the format and fuzz tests.

:func:`real_files` saves a small dense and a small packed (pruned, 3/8/16-bit) student with the
real writers; :data:`CRAFTED` turns their bytes into files that must be refused, each named by
what it does wrong; :func:`tiny_huge_packed` writes a consistent packed file of a few kilobytes
whose config asks for a 16 GB student.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def real_files(folder: Path) -> tuple[Path, Path]:
    """``(dense, packed)`` student files written by the real writers into ``folder``."""
    from trainables.compression.prune import apply_pruning, make_permanent
    from trainables.compression.quantize import quantize_student
    from trainables.config import resolve_config
    from trainables.formats import save_packed, save_student
    from trainables.models.embeddings import HashEncoder
    from trainables.models.students import build_student

    cfg = resolve_config({"student": "bilstm", "embedding": "hash", "embedding_dim": 16, "vocab_size": 32,
                          "hash_buckets": 16, "hidden_dim": 8, "classifier_dim": 8, "dropout": 0.0,
                          "bits_embedding": 16, "bits_encoder": 3, "bits_classifier": 8})
    enc = HashEncoder(32)
    torch.manual_seed(0)
    model = build_student(cfg, enc, num_labels=2, pair=False)
    dense = folder / "dense.safetensors"
    save_student(model, cfg, enc, 2, False, dense)
    apply_pruning(model, {"embedding": 0.95, "encoder": 0.5, "classifier": 0.125})  # index, bitmap and dense layouts
    make_permanent(model)
    q = quantize_student(model, cfg)
    packed = folder / "packed.safetensors"
    save_packed(model, cfg, enc, 2, False, packed, q.tensors, runtime=q.runtime)
    return dense, packed


def split(data: bytes) -> tuple[dict, bytes]:
    """``(header JSON object, buffer)`` of a well-formed safetensors file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8: 8 + n]), data[8 + n:]


def join(header: dict, buffer: bytes) -> bytes:
    """A safetensors file from a header object and a buffer (header padded to 8 bytes)."""
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + buffer


def edit_header(data: bytes, fn: Callable[[dict], object]) -> bytes:
    header, buffer = split(data)
    fn(header)
    return join(header, buffer)


def edit_meta_json(data: bytes, key: str, fn: Callable[[dict], object]) -> bytes:
    """The file with the JSON document in metadata ``key`` changed by ``fn`` (in place)."""
    def change(header: dict) -> None:
        doc = json.loads(header["__metadata__"][key])
        fn(doc)
        header["__metadata__"][key] = json.dumps(doc)
    return edit_header(data, change)


def _first(header: dict, suffix: str = "") -> str:
    return sorted(k for k in header if k != "__metadata__" and k.endswith(suffix))[0]


def _set(mapping: dict, key: str, value: object) -> dict:
    mapping[key] = value
    return mapping


def _spec_with(packing: dict, layout: str) -> str:
    return sorted(k for k, s in packing.items() if s.get("layout") == layout)[0]


def _flip_buffer(data: bytes, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> bytes:
    header, buffer = split(data)
    begin, end = header[name]["data_offsets"]
    dtype = {"U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "F16": np.float16}[header[name]["dtype"]]
    values = fn(np.frombuffer(buffer[begin:end], dtype=dtype).copy()).astype(dtype)
    return join(header, buffer[:begin] + values.tobytes() + buffer[end:])


def _swap_index(values: np.ndarray) -> np.ndarray:
    values[[0, 1]] = values[[1, 0]]
    return values


def _bitmap_extra_bit(values: np.ndarray) -> np.ndarray:
    values[0] ^= 1  # one more or one fewer bit set than nnz
    return values


def _overlap(header: dict) -> None:
    """The second tensor moved onto the first one's bytes (its own size kept)."""
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])
    first, second = header[names[0]]["data_offsets"], header[names[1]]["data_offsets"]
    header[names[1]]["data_offsets"] = [first[0], first[0] + second[1] - second[0]]


def _packing_case(fn: Callable[[dict], object]) -> Callable[[bytes, bytes], bytes]:
    return lambda dense, packed: edit_meta_json(packed, "packing", fn)


#: name -> (dense bytes, packed bytes) -> bytes of a file every loader must refuse.
CRAFTED: dict[str, Callable[[bytes, bytes], bytes]] = {
    # truncated
    "empty file": lambda d, p: b"",
    "7 bytes": lambda d, p: d[:7],
    "truncated header": lambda d, p: d[:40],
    "truncated buffer": lambda d, p: d[:-1],
    "one byte appended": lambda d, p: d + b"\0",
    # the header
    "header length 2^63": lambda d, p: struct.pack("<Q", 2**63) + d[8:],
    "header length past the end": lambda d, p: struct.pack("<Q", len(d)) + d[8:],
    "header not JSON": lambda d, p: d[:8] + b"{" + b"x" * (struct.unpack("<Q", d[:8])[0] - 1) + d[8 + struct.unpack(
        "<Q", d[:8])[0]:],
    "header not UTF-8": lambda d, p: d[:9] + b"\xff" + d[10:],
    "header a JSON list": lambda d, p: join([1, 2], split(d)[1]),  # type: ignore[arg-type]
    "metadata not strings": lambda d, p: edit_header(d, lambda h: _set(h["__metadata__"], "num_labels", 2)),
    # tensor descriptions
    "unknown dtype": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "dtype", "F7")),
    "negative offset": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "data_offsets", [-8, 0])),
    "overlapping offsets": lambda d, p: edit_header(d, _overlap),
    "offsets past the buffer": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "data_offsets", [0, 10**12])),
    "huge declared shape": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "shape", [2**20, 2**20, 2**20])),
    "shape of 2^40 x 2^20 with its offsets": lambda d, p: edit_header(d, lambda h: h.update(
        {"w": {"dtype": "F32", "shape": [2**40, 2**20], "data_offsets": [0, 4 * 2**60]}})),
    "negative shape": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "shape", [-1, 4])),
    "shape not a list": lambda d, p: edit_header(d, lambda h: _set(h[_first(h)], "shape", "big")),
    "transposed shape": lambda d, p: edit_header(d, lambda h: _set(
        h["classifier.0.weight"], "shape", list(reversed(h["classifier.0.weight"]["shape"])))),
    # what the metadata describes
    "config asks for 1M x 4096": lambda d, p: edit_meta_json(d, "config", lambda c: c.update(
        vocab_size=1_000_000, embedding_dim=4096)),
    "config invalid": lambda d, p: edit_meta_json(d, "config", lambda c: c.update(hidden_dim=-5)),
    "config not JSON": lambda d, p: edit_header(d, lambda h: _set(h["__metadata__"], "config", "{nope")),
    "encoder unknown": lambda d, p: edit_meta_json(d, "encoder", lambda e: e.update(kind="rot13")),
    "num_labels 5": lambda d, p: edit_header(d, lambda h: _set(h["__metadata__"], "num_labels", "5")),
    "unknown format": lambda d, p: edit_header(d, lambda h: _set(h["__metadata__"], "featherweight_format", "x")),
    "packed: runtime unknown": lambda d, p: edit_header(p, lambda h: _set(h["__metadata__"], "runtime", "fp8")),
    "packed: packing not JSON": lambda d, p: edit_header(p, lambda h: _set(h["__metadata__"], "packing", "[")),
    # packing specs
    **{f"packed: bits {bits!r}": _packing_case(lambda pk, bits=bits: _set(
        pk[sorted(k for k, s in pk.items() if s["kind"] == "affine")[0]], "bits", bits))
       for bits in (0, 1, 9, 64, "8", True)},
    "packed: count off by one": _packing_case(lambda pk: pk[_spec_with(pk, "bitmap")].update(
        count=pk[_spec_with(pk, "bitmap")]["count"] + 1)),
    "packed: nnz above n": _packing_case(lambda pk: _set(pk[_spec_with(pk, "index")], "nnz", 10**12)),
    "packed: huge spec shape": _packing_case(lambda pk: _set(pk[_spec_with(pk, "index")], "shape", [10**6, 10**6])),
    "packed: unknown layout": _packing_case(lambda pk: _set(pk[_spec_with(pk, "dense")], "layout", "rle")),
    "packed: unknown kind": _packing_case(lambda pk: _set(pk[_spec_with(pk, "dense")], "kind", "lut")),
    "packed: spec missing": _packing_case(lambda pk: pk.pop(_spec_with(pk, "dense"))),
    "packed: float dtype int8": _packing_case(lambda pk: _set(
        pk[sorted(k for k, s in pk.items() if s["kind"] == "float")[0]], "dtype", "int8")),
    "packed: index positions out of order": lambda d, p: _flip_buffer(p, _first(split(p)[0], "/index"), _swap_index),
    "packed: bitmap with a bit more": lambda d, p: _flip_buffer(p, _first(split(p)[0], "/bitmap"), _bitmap_extra_bit),
    "packed: zero point above 2^bits": lambda d, p: _flip_buffer(
        p, next(k for k in sorted(split(p)[0]) if k.endswith("/zero") and json.loads(
            split(p)[0]["__metadata__"]["packing"])[k.rsplit("/", 1)[0]]["bits"] < 8), lambda v: v * 0 + 255),
    "packed: scale NaN": lambda d, p: _flip_buffer(p, _first(split(p)[0], "/scale"), lambda v: v * np.nan),
}


def tiny_huge_packed(path: Path) -> Path:
    """A packed file of a few kilobytes, consistent in every spec, whose config describes a hash
    student with a 10^6 x 4096 component table (about 16 GB in float32), every weight elided as
    zero: what a 200-byte file asking for terabytes looks like once its shapes add up."""
    from safetensors.torch import save

    from trainables.config import resolve_config
    from trainables.formats.base import student_metadata
    from trainables.formats.packed import index_dtype
    from trainables.models.embeddings import HashEncoder
    from trainables.models.students import build_student

    cfg = resolve_config({"student": "ffn", "embedding": "hash", "vocab_size": 16, "embedding_dim": 4096,
                          "hash_buckets": 1_000_000, "hidden_dim": 1})
    enc = HashEncoder(16)
    with torch.device("meta"):
        skeleton = build_student(cfg, enc, 2, False, init_pretrained=False)
    tensors, packing = {}, {}
    for key, value in skeleton.state_dict().items():
        if not value.is_floating_point():  # the hash parameters: real CPU buffers
            tensors[f"{key}/raw"] = value.cpu().contiguous()
            packing[key] = {"kind": "raw", "shape": list(value.shape)}
            continue
        n = math.prod(value.shape)
        index = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16,
                 np.dtype(np.uint32): torch.uint32, np.dtype(np.uint64): torch.uint64}[index_dtype(max(n, 1))]
        tensors[f"{key}/index"] = torch.zeros(0, dtype=index)
        tensors[f"{key}/values"] = torch.zeros(0, dtype=torch.float32)
        packing[key] = {"kind": "float", "shape": list(value.shape), "dtype": "float32", "layout": "index", "nnz": 0}
    meta = student_metadata("featherweight-packed-v1", cfg, enc, 2, False, packing=json.dumps(packing),
                            runtime="float32")
    path.write_bytes(save(tensors, metadata=meta))
    return path
