"""The compressed student artifact: bit-packed codes, sparse masks, config and tokenizer.

The file is a safetensors file (a JSON header, then raw little-endian bytes; no pickle, no
code) whose metadata holds the same ``config``, ``encoder``, ``num_labels`` and ``pair`` as the
dense format of :mod:`trainables.formats.dense`, with ``featherweight_format`` =
``featherweight-packed-v1`` and two more strings: ``packing`` (JSON: one spec per state-dict
entry) and ``runtime`` (``float32`` or ``int8_dynamic``, see :mod:`trainables.compression.quantize`).

Each state-dict entry ``k`` of the student is stored as one of (entries named ``k/<part>``):

- ``affine`` (b = 2..8 bits): ``k/codes`` uint8, the b-bit codes bit-packed (code i occupies bits
  ``i*b .. i*b+b-1`` of the stream, least significant bit first), ceil(count x b / 8) bytes;
  ``k/scale`` float16 (rows,) = 2 bytes per row; ``k/zero`` uint8 (rows,) = 1 byte per row.
- ``float``: ``k/values`` float32 (4 bytes each) or float16 (2 bytes each).
- ``raw``: non-float buffers (hash parameters) as they are, ``k/raw``.

An ``affine`` or ``float`` entry is *sparse* when that is smaller: only the codes/values of its
non-zero entries are stored (affine: code != Z; float: bit pattern != +0.0) and the positions go
in ``k/bitmap`` (uint8, ceil(n / 8) bytes, bit i of the stream = element i in row-major order,
LSB first) or ``k/index`` (flat row-major positions as uint8/uint16/uint32, the narrowest that
holds n - 1), whichever is smaller (ties: bitmap). Elided entries decode to +0.0 exactly.

``size_bytes`` is the file size; :func:`size_breakdown` splits it into header, codes, scales,
zero points, masks, float values and raw buffers.

Example:
    >>> codes = np.array([1, 2, 3, 0, 15], dtype=np.uint8)
    >>> pack_codes(codes, 4).tolist(), unpack_codes(pack_codes(codes, 4), 4, 5).tolist()
    ([33, 3, 15], [1, 2, 3, 0, 15])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from trainables.compression.quantize import AffineTensor, HalfTensor, Quantized, to_int8_dynamic
from trainables.errors import ConfigError
from trainables.formats.base import read_metadata, register_loader, student_metadata, write_safetensors
from trainables.formats.transformer import architecture_metadata, skeleton
from trainables.models.embeddings import TextEncoder, encoder_from_json
from trainables.models.students import Student, build_student

FORMAT = "featherweight-packed-v1"
ARTIFACT_NAME = "student.packed.safetensors"
RUNTIMES = ("float32", "int8_dynamic")
_INDEX_DTYPES = (np.uint8, np.uint16, np.uint32, np.uint64)


# --- bits, masks ------------------------------------------------------------------------------


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack ``codes`` (any shape, values < 2^bits) into a uint8 array of ceil(n * bits / 8) bytes.

    Raises:
        ValueError: bits outside 1..8 or a code that does not fit.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    flat = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if flat.size and int(flat.max()) >= 2 ** bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    planes = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 (count,) codes."""
    planes = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (planes.reshape(count, bits).astype(np.uint16) @ weights).astype(np.uint8)


def index_dtype(n: int) -> np.dtype:
    """The narrowest unsigned dtype holding positions 0..n-1."""
    for dt in _INDEX_DTYPES:
        if n - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"tensor too large: {n} elements")


def mask_bytes(n: int, nnz: int) -> tuple[str, int]:
    """The cheaper position layout for ``nnz`` kept of ``n`` elements: ``("bitmap"|"index", bytes)``."""
    bitmap = math.ceil(n / 8)
    index = nnz * index_dtype(n).itemsize
    return ("index", index) if index < bitmap else ("bitmap", bitmap)


def encode_mask(keep: np.ndarray) -> tuple[str, np.ndarray]:
    """``("bitmap", uint8 bitmap)`` or ``("index", positions)`` of a bool (n,) mask, whichever is smaller."""
    keep = np.asarray(keep, dtype=bool).reshape(-1)
    layout, _ = mask_bytes(keep.size, int(keep.sum()))
    if layout == "bitmap":
        return layout, np.packbits(keep.astype(np.uint8), bitorder="little")
    return layout, np.flatnonzero(keep).astype(index_dtype(keep.size))


def decode_mask(layout: str, data: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`: bool (n,)."""
    if layout == "bitmap":
        return np.unpackbits(np.asarray(data, dtype=np.uint8), count=n, bitorder="little").astype(bool)
    if layout == "index":
        keep = np.zeros(n, dtype=bool)
        keep[np.asarray(data, dtype=np.int64)] = True
        return keep
    raise ValueError(f"unknown mask layout {layout!r}")


# --- one tensor --------------------------------------------------------------------------------


def _bits_of_float(values: np.ndarray) -> np.ndarray:
    """Bit patterns of a float array (so -0.0 counts as non-zero and round-trips)."""
    return values.view(np.uint32 if values.dtype == np.float32 else np.uint16)


def encode_tensor(key: str, value: torch.Tensor | Quantized) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Entries and spec of one state-dict entry (the layouts of the module docstring).

    Args:
        key: the state-dict name.
        value: a float32 tensor (stored as float32), an :class:`~trainables.compression.quantize.AffineTensor`,
            a :class:`~trainables.compression.quantize.HalfTensor` or a non-float tensor (stored raw).

    Returns:
        ``(entries, spec)``: tensors named ``key/<part>`` and a JSON-able spec.
    """
    if isinstance(value, AffineTensor):
        codes = value.codes.cpu().numpy().reshape(-1)
        zero_per_elem = np.repeat(value.zero.cpu().numpy(), value.codes.shape[1])
        keep = codes != zero_per_elem
        spec = {"kind": "affine", "shape": list(value.shape), "bits": value.bits}
        entries = {f"{key}/scale": value.scale.cpu().to(torch.float16).contiguous(),
                   f"{key}/zero": value.zero.cpu().contiguous()}
        payload, item_bits = codes, value.bits
    elif isinstance(value, HalfTensor) or (isinstance(value, torch.Tensor) and value.is_floating_point()):
        arr = (value.values if isinstance(value, HalfTensor) else value.detach().float()).cpu().contiguous().numpy()
        payload = arr.reshape(-1)
        keep = _bits_of_float(payload) != 0
        spec = {"kind": "float", "shape": list(arr.shape), "dtype": str(payload.dtype)}
        entries, item_bits = {}, payload.dtype.itemsize * 8
    else:
        t = value.detach().cpu().contiguous()
        return {f"{key}/raw": t}, {"kind": "raw", "shape": list(t.shape)}
    n, nnz = payload.size, int(keep.sum())
    dense = math.ceil(n * item_bits / 8)
    _, mbytes = mask_bytes(n, nnz)
    sparse = mbytes + math.ceil(nnz * item_bits / 8)
    if sparse < dense:
        layout, positions = encode_mask(keep)
        entries[f"{key}/{layout}"] = torch.from_numpy(positions)
        payload = payload[keep]
        spec.update(layout=layout, nnz=nnz)
    else:
        spec["layout"] = "dense"
    if spec["kind"] == "affine":
        entries[f"{key}/codes"] = torch.from_numpy(pack_codes(payload, item_bits))
        spec["count"] = int(payload.size)
    else:
        entries[f"{key}/values"] = torch.from_numpy(np.ascontiguousarray(payload))
    return entries, spec


def decode_tensor(key: str, spec: Mapping[str, Any], entries: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The tensor a spec and its entries stand for (affine: dequantized to float32; float16 -> float32).

    Raises:
        ValueError: unknown kind or layout.
    """
    shape = tuple(spec["shape"])
    if spec["kind"] == "raw":
        return entries[f"{key}/raw"].reshape(shape)
    n = math.prod(shape)
    layout = spec["layout"]
    keep = None if layout == "dense" else decode_mask(layout, entries[f"{key}/{layout}"].numpy(), n)
    if spec["kind"] == "affine":
        rows = shape[0]
        zero, scale = entries[f"{key}/zero"], entries[f"{key}/scale"]
        kept = unpack_codes(entries[f"{key}/codes"].numpy(), int(spec["bits"]), int(spec["count"]))
        if keep is None:
            codes = kept
        else:
            codes = np.repeat(zero.numpy(), n // rows if rows else 0)
            codes[keep] = kept
        q = AffineTensor(torch.from_numpy(codes.reshape(rows, -1)), scale, zero, int(spec["bits"]), shape)
        return q.dequantize()
    if spec["kind"] == "float":
        kept = entries[f"{key}/values"].numpy()
        if keep is None:
            values = kept
        else:
            values = np.zeros(n, dtype=kept.dtype)
            values[keep] = kept
        return torch.from_numpy(values.reshape(shape).copy()).float()
    raise ValueError(f"unknown packed kind {spec['kind']!r}")


# --- the file ----------------------------------------------------------------------------------


def save_packed(model: Student, config: Mapping[str, Any], encoder: TextEncoder, num_labels: int, pair: bool,
                path: str | Path, quantized: Mapping[str, Quantized] | None = None,
                runtime: str = "float32") -> dict[str, int]:
    """Write ``model`` packed to ``path``.

    Args:
        quantized: state-dict key -> quantized form (from :func:`trainables.compression.quantize.quantize_student`);
            every other float entry is stored float32 (sparse when that is smaller). The model's
            weights must equal ``quantized[k].dequantize()`` (checked, bit for bit).
        runtime: ``float32`` or ``int8_dynamic`` (recorded; applied by :func:`load_packed`).

    Returns:
        ``size_bytes``, ``gzip_bytes`` (the file, bytes), ``weights_bytes`` (stored tensor bytes).

    Raises:
        ValueError: unknown runtime, or a model weight that differs from its quantized form.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; allowed: {', '.join(RUNTIMES)}")
    quantized = dict(quantized or {})
    state = model.state_dict()
    unknown = sorted(set(quantized) - set(state))
    if unknown:
        raise ValueError(f"quantized tensors not in the model: {', '.join(unknown)}")
    tensors: dict[str, torch.Tensor] = {}
    packing: dict[str, Any] = {}
    for key, value in state.items():
        value = value.detach().cpu()
        q = quantized.get(key)
        if q is not None:
            if not torch.equal(q.dequantize().cpu().view(torch.int32), value.float().contiguous().view(torch.int32)):
                raise ValueError(f"{key}: the model's weights are not the dequantized codes; quantize first")
            value = q
        entries, packing[key] = encode_tensor(key, value)
        tensors.update(entries)
    extra = architecture_metadata(model)  # what rebuilds a transformer student's architecture
    meta = student_metadata(FORMAT, config, encoder, num_labels, pair,
                            packing=json.dumps(packing, separators=(",", ":"), sort_keys=True), runtime=runtime,
                            **extra)
    return write_safetensors(path, tensors, meta)


def load_packed(path: str | Path, runtime: bool = True) -> tuple[torch.nn.Module, TextEncoder, dict[str, Any]]:
    """Load a student saved by :func:`save_packed`, in eval mode (no pickle).

    Args:
        runtime: apply the recorded runtime (``int8_dynamic``: :func:`trainables.compression.quantize.to_int8_dynamic`);
            ``False`` returns the float32 :class:`Student` with the dequantized weights.

    Returns:
        ``(model, encoder, config)``.

    Raises:
        ConfigError: missing file or not a packed featherweight student.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"student file {str(path)!r} does not exist")
    meta = read_metadata(path)
    if meta.get("featherweight_format") != FORMAT:
        raise ConfigError(f"{path}: not a packed featherweight student (format {meta.get('featherweight_format')!r})")
    config = json.loads(meta["config"])
    encoder = encoder_from_json(json.loads(meta["encoder"]))
    packing = json.loads(meta["packing"])
    with safe_open(str(path), framework="pt") as f:
        entries = {k: f.get_tensor(k) for k in f.keys()}
    state = {key: decode_tensor(key, spec, entries) for key, spec in packing.items()}
    if "model_config" in meta:  # a transformer student (formats.transformer.architecture_metadata)
        model = skeleton(meta)
    else:
        model = build_student(config, encoder, int(meta["num_labels"]), meta["pair"] == "1", init_pretrained=False)
    model.load_state_dict(state)
    model.eval()
    if runtime and meta.get("runtime") == "int8_dynamic":
        return to_int8_dynamic(model), encoder, config
    return model, encoder, config


def size_breakdown(path: str | Path) -> dict[str, int]:
    """Bytes of a packed file by role.

    Returns:
        ``header`` (8-byte length + JSON header with metadata), ``codes``, ``scales``,
        ``zero_points``, ``masks`` (bitmaps and index lists), ``float_values``, ``raw`` and
        ``total`` (= the file size).
    """
    roles = {"codes": "codes", "scale": "scales", "zero": "zero_points", "bitmap": "masks", "index": "masks",
             "values": "float_values", "raw": "raw"}
    out = dict.fromkeys(["codes", "scales", "zero_points", "masks", "float_values", "raw"], 0)
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            t = f.get_slice(k)
            dtype = {"U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
                     "U64": 8, "I64": 8, "F64": 8}[t.get_dtype()]
            out[roles[k.rsplit("/", 1)[1]]] += dtype * math.prod(t.get_shape())
    total = Path(path).stat().st_size
    out["header"] = total - sum(out.values())
    out["total"] = total
    return out


register_loader(FORMAT, lambda path, meta: load_packed(path))
