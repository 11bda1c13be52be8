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

from trainables.compression.quantize import AFFINE_BITS, AffineTensor, HalfTensor, Quantized
from trainables.errors import ConfigError
from trainables.formats.base import guarded, register_loader, student_metadata, student_parts, write_safetensors
from trainables.formats.layout import Layout, TensorInfo, meta_model, parse_json, read_layout, torch_dtype_name
from trainables.formats.transformer import architecture_metadata, skeleton
from trainables.kernels import to_int8_dynamic
from trainables.models.embeddings import TextEncoder
from trainables.models.students import Student, build_student
from trainables.untrusted import short

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


#: A packed file may decode to at most this many times its own size in bytes, or to
#: :data:`MIN_DECODED_BYTES`, whichever is more (legitimate files: 2-bit codes of a 99%-sparse
#: student decode to about 94 times their size). Larger claims are refused before allocating.
DECODED_RATIO = 128
MIN_DECODED_BYTES = 256 * 1024 * 1024
_DTYPES = {"float32": "F32", "float16": "F16"}


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(f"{path}: not a valid packed student ({why})")


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_packing(path: Path, packing: Mapping[str, Any], expected: Mapping[str, torch.Tensor],
                  tensors: Mapping[str, TensorInfo], file_size: int) -> None:
    """Check every ``packing`` spec against the student's state dict ``expected`` (on the ``meta``
    device) and the file's tensors, before anything is read or allocated.

    Each state-dict entry has one spec whose ``shape`` is the entry's; ``affine`` specs have
    ``bits`` 2..8, ``count`` codes in ``ceil(count * bits / 8)`` bytes, one float16 scale and
    one uint8 zero point per row; ``float`` specs the values of their ``dtype``; sparse specs a
    bitmap of ``ceil(n / 8)`` bytes or ``nnz`` positions in the narrowest index dtype; ``raw``
    specs the entry itself. Every tensor of the file belongs to one spec, and the decoded student
    needs at most ``max(DECODED_RATIO x file_size, MIN_DECODED_BYTES)`` bytes.

    Raises:
        ConfigError: the first deviation (one line naming the entry).
    """
    missing = sorted(set(expected) - set(packing))
    extra = sorted(set(packing) - set(expected))
    if missing or extra:
        what = f"no spec for {short(missing[0])}" if missing else f"a spec for {short(extra[0])}, not in the student"
        raise _refuse(path, f"it does not hold the student its config describes: {what}")
    used: set[str] = set()
    decoded = 0

    def entry(name: str, dtype: str, shape: tuple[int, ...]) -> None:
        info = tensors.get(name)
        if info is None:
            raise _refuse(path, f"the tensor {short(name)} is missing")
        if (info.dtype, info.shape) != (dtype, shape):
            raise _refuse(path, f"the tensor {short(name)} is {info.dtype} {info.shape}; its spec makes it {dtype} {shape}")
        used.add(name)

    for key, want in expected.items():
        spec = packing[key]
        if not isinstance(spec, Mapping):
            raise _refuse(path, f"the spec of {short(key)} is not an object")
        shape = tuple(want.shape)
        if spec.get("shape") != list(shape):
            raise _refuse(path, f"{short(key)} has the shape {short(spec.get('shape'))}; the student's config makes "
                                f"it {list(shape)}")
        n, kind = math.prod(shape), spec.get("kind")
        if kind == "raw":
            entry(f"{key}/raw", torch_dtype_name(want.dtype), shape)
            decoded += n * want.element_size()
            continue
        if kind not in ("affine", "float") or not want.is_floating_point():
            raise _refuse(path, f"{short(key)} has the kind {short(kind)}; allowed: "
                                f"{'affine, float' if want.is_floating_point() else 'raw'}")
        layout = spec.get("layout")
        if layout == "dense":
            stored = n
        elif layout in ("bitmap", "index"):
            stored = spec.get("nnz")
            if not _integer(stored) or not 0 <= stored <= n:
                raise _refuse(path, f"{short(key)} keeps nnz = {short(stored)} of its {n} elements")
            if layout == "bitmap":
                entry(f"{key}/bitmap", "U8", (math.ceil(n / 8),))
            else:
                entry(f"{key}/index", torch_dtype_name(_torch_int(index_dtype(max(n, 1)))), (stored,))
        else:
            raise _refuse(path, f"{short(key)} has the layout {short(layout)}; allowed: dense, bitmap, index")
        if kind == "affine":
            bits, count = spec.get("bits"), spec.get("count")
            if not _integer(bits) or bits not in AFFINE_BITS:
                raise _refuse(path, f"{short(key)} has bits = {short(bits)}; allowed: "
                                    f"{', '.join(map(str, AFFINE_BITS))}")
            if not _integer(count) or count != stored:
                raise _refuse(path, f"{short(key)} declares {short(count)} codes; its layout keeps {stored}")
            if not shape or shape[0] < 1:
                raise _refuse(path, f"{short(key)} is affine with no rows")
            entry(f"{key}/codes", "U8", (math.ceil(count * bits / 8),))
            entry(f"{key}/scale", "F16", (shape[0],))
            entry(f"{key}/zero", "U8", (shape[0],))
        else:
            dtype = _DTYPES.get(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
            if dtype is None:
                raise _refuse(path, f"{short(key)} has the dtype {short(spec.get('dtype'))}; allowed: "
                                    f"{', '.join(_DTYPES)}")
            entry(f"{key}/values", dtype, (stored,))
        decoded += 4 * n
    unused = sorted(set(tensors) - used)
    if unused:
        raise _refuse(path, f"the tensor {short(unused[0])} belongs to no spec")
    budget = max(DECODED_RATIO * file_size, MIN_DECODED_BYTES)
    if decoded > budget:
        raise _refuse(path, f"it would decode to {decoded:,} bytes, more than {DECODED_RATIO} times its "
                            f"{file_size:,} bytes")


def _torch_int(dt: np.dtype) -> torch.dtype:
    return {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16, np.dtype(np.uint32): torch.uint32,
            np.dtype(np.uint64): torch.uint64}[np.dtype(dt)]


def _check_entries(path: Path, packing: Mapping[str, Any], entries: Mapping[str, torch.Tensor]) -> None:
    """Values a decoder relies on: index positions strictly increasing and below n, bitmaps
    with exactly ``nnz`` bits set (none past n), zero points below 2^bits, finite scales."""
    for key, spec in packing.items():
        n = math.prod(spec["shape"])
        layout = spec.get("layout")
        if layout == "index":
            pos = entries[f"{key}/index"].numpy().astype(np.int64)
            if pos.size and (pos[0] < 0 or pos[-1] >= n or (np.diff(pos) <= 0).any()):
                raise _refuse(path, f"the positions of {short(key)} are not increasing positions below {n}")
        elif layout == "bitmap":
            bits = np.unpackbits(entries[f"{key}/bitmap"].numpy(), bitorder="little")
            if int(bits[:n].sum()) != spec["nnz"] or bits[n:].any():
                raise _refuse(path, f"the bitmap of {short(key)} does not set exactly nnz = {spec['nnz']} of {n} bits")
        if spec.get("kind") == "affine":
            if int(entries[f"{key}/zero"].numpy().max(initial=0)) >= 2 ** spec["bits"]:
                raise _refuse(path, f"a zero point of {short(key)} does not fit in {spec['bits']} bits")
            if not torch.isfinite(entries[f"{key}/scale"].float()).all():
                raise _refuse(path, f"a scale of {short(key)} is not finite")


def load_packed(path: str | Path, runtime: bool = True) -> tuple[torch.nn.Module, TextEncoder, dict[str, Any]]:
    """Load a student saved by :func:`save_packed`, in eval mode (no pickle).

    Every spec is checked against the student the file's config describes and against the file's
    tensors (:func:`check_packing`) before anything is read; a file that does not match its
    declared layout is refused, never decoded approximately.

    Args:
        runtime: apply the recorded runtime (``int8_dynamic``: :func:`trainables.kernels.to_int8_dynamic`);
            ``False`` returns the float32 :class:`Student` with the dequantized weights.

    Returns:
        ``(model, encoder, config)``.

    Raises:
        ConfigError: missing file, not a packed featherweight student, or one that does not hold
            exactly the student it describes (one line naming the file and the entry).
    """
    path = Path(path)
    layout = read_layout(path)
    meta = layout.metadata
    if meta.get("featherweight_format") != FORMAT:
        raise ConfigError(f"{path}: not a packed featherweight student (format {short(meta.get('featherweight_format'))})")
    return guarded(path, _load_checked, path, layout, runtime)


def _load_checked(path: Path, layout: Layout, runtime: bool) -> tuple[torch.nn.Module, TextEncoder, dict[str, Any]]:
    meta = layout.metadata
    config, resolved, encoder, num_labels, pair = student_parts(path, meta)
    packing = parse_json(path, meta, "packing")
    recorded = meta.get("runtime", "float32")
    if recorded not in RUNTIMES:
        raise _refuse(path, f"unknown runtime {short(recorded)}; allowed: {', '.join(RUNTIMES)}")

    def build() -> torch.nn.Module:
        if "model_config" in meta:  # a transformer student (formats.transformer.architecture_metadata)
            return skeleton(meta, path)
        return build_student(resolved, encoder, num_labels, pair, init_pretrained=False)

    expected = meta_model(path, build).state_dict()
    check_packing(path, packing, expected, layout.tensors, layout.size)
    with safe_open(str(path), framework="pt") as f:
        entries = {k: f.get_tensor(k) for k in f.keys()}
    _check_entries(path, packing, entries)
    state = {key: decode_tensor(key, spec, entries) for key, spec in packing.items()}
    model = build()
    model.load_state_dict(state)
    model.eval()
    if runtime and recorded == "int8_dynamic":
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
    layout = read_layout(path)
    for k, info in layout.tensors.items():
        role = roles.get(k.rsplit("/", 1)[-1])
        if role is None:
            raise _refuse(Path(path), f"the tensor {short(k)} has no role in a packed file")
        out[role] += info.end - info.begin
    total = layout.size
    out["header"] = total - sum(out.values())
    out["total"] = total
    return out


register_loader(FORMAT, lambda path, meta: load_packed(path))
