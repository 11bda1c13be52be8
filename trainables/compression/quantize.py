"""Weight quantization of students (the ``quantize`` stage).

Methods (config ``quant_method``):

- ``affine``: b-bit uniform affine quantization per output row ("per channel"), b = 2..8
  chosen per part (``bits_embedding``, ``bits_encoder``, ``bits_classifier``; 16 stores the part
  in float16, 32 leaves it in float32). Jacob et al. 2018 ("Quantization and Training of Neural
  Networks for Efficient Integer-Arithmetic-Only Inference", section 2.1, eq. 1), for a row
  ``w`` (cols,) with ``qmax = 2^b - 1``::

      lo = min(0, min w)         hi = max(0, max w)          (0 is always representable)
      S  = fp16((hi - lo) / qmax)   (S = 1 if that is 0)     scale, stored as float16
      Z  = clamp(round(-lo / S), 0, qmax)                    zero point, stored as uint8
      q  = clamp(round(w / S) + Z, 0, qmax)                  codes, b bits each
      w' = (q - Z) * S                                       computed in float32

  A zero weight (pruned) gets ``q = Z`` and dequantizes to exactly +0.0, so sparsity survives.
  ``round`` is round-half-to-even (``torch.round``). The student then runs in float32 on the
  dequantized weights ``w'``; :mod:`trainables.formats.packed` stores ``q``, ``S`` and ``Z`` and restores
  ``w'`` bit for bit.
- ``int8_dynamic``: the weights are stored as for ``affine``, and at run time the LSTM and
  Linear modules run as torch int8 dynamic-quantized modules (int8 weights per output channel with
  zero point 0, activations quantized per batch) through :func:`trainables.kernels.to_int8_dynamic`, the one adapter over the
  deprecated ``torch.ao.quantization``. The weights are thus quantized twice (affine b-bit, then
  int8); use 8 bits. Elman RNNs have no dynamic int8 kernel in torch and stay float32.
- ``fp16``: every floating-point tensor (biases too) is stored in float16 (bits keys unused).

Only tensors with >= 2 dimensions (:func:`trainables.compression.prune.prunable_tensors`) are affine
quantized; biases stay float32 (``affine``/``int8_dynamic``).

Quantization-aware training (``qat_epochs`` > 0; Jacob et al. 2018, section 3): the student is
distilled ``qat_epochs`` more epochs while every quantized weight is replaced in the forward pass
by its fake-quantized value ``w'`` (a :mod:`torch.nn.utils.parametrize` parametrization); the
rounding's gradient is taken as the identity (straight-through estimator, Bengio et al. 2013).
Weights that are exactly zero when QAT starts (pruned) are held at zero.

Example:
    >>> w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    >>> q = quantize_tensor(w, bits=2)
    >>> q.codes.tolist(), q.zero.tolist(), q.dequantize().tolist()
    ([[0, 1, 1, 3]], [1], [[-1.0, 0.0, 0.0, 2.0]])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainables.compression.prune import prunable_tensors
from trainables.config import BITS_ALLOWED
from trainables.errors import ConfigError

SCALE_DTYPE = torch.float16  # per-row scales S
ZERO_DTYPE = torch.uint8     # per-row zero points Z (bits <= 8)
AFFINE_BITS = (2, 3, 4, 5, 6, 7, 8)


def check_bits(bits: int) -> int:
    """Return ``bits`` if allowed (:data:`trainables.config.BITS_ALLOWED`), else raise :class:`ConfigError`."""
    if bits not in BITS_ALLOWED:
        raise ConfigError(f"bits = {bits!r} is not allowed; allowed: {', '.join(map(str, BITS_ALLOWED))}")
    return int(bits)


@dataclass
class AffineTensor:
    """A b-bit per-row affine quantized tensor.

    Attributes:
        codes: uint8 (rows, cols) codes in ``[0, 2^bits - 1]`` (cols = product of the other dims).
        scale: float16 (rows,) scales S.
        zero: uint8 (rows,) zero points Z.
        bits: b, 2..8.
        shape: the original tensor shape.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    shape: tuple[int, ...]

    def dequantize(self) -> torch.Tensor:
        """``(q - Z) * S`` in float32, shape :attr:`shape`."""
        return ((self.codes.float() - self.zero.float()[:, None]) * self.scale.float()[:, None]).reshape(self.shape)


@dataclass
class HalfTensor:
    """A tensor stored in float16 (``values``, original shape); runs as float32."""

    values: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def dequantize(self) -> torch.Tensor:
        return self.values.float()


Quantized = AffineTensor | HalfTensor


def affine_qparams(rows: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale and zero point (the formulas of the module docstring).

    Args:
        rows: float (rows, cols).
        bits: 2..8.

    Returns:
        ``(scale, zero)``: float16 (rows,) and uint8 (rows,).

    Raises:
        ValueError: bits outside 2..8, or a row range too large for a float16 scale.
    """
    if bits not in AFFINE_BITS:
        raise ValueError(f"affine bits must be 2..8, got {bits}")
    qmax = 2 ** bits - 1
    rows = rows.detach().float()
    lo = rows.amin(dim=1).clamp(max=0.0) if rows.shape[1] else rows.new_zeros(rows.shape[0])
    hi = rows.amax(dim=1).clamp(min=0.0) if rows.shape[1] else rows.new_zeros(rows.shape[0])
    scale = ((hi - lo) / qmax).to(SCALE_DTYPE)
    if torch.isinf(scale).any():
        raise ValueError("a weight row spans more than float16 can scale (max 65504 x qmax)")
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale.float()).clamp(0, qmax).to(ZERO_DTYPE)
    return scale, zero


def _codes(rows: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 (rows, cols) codes ``clamp(round(w / S) + Z, 0, 2^bits - 1)``."""
    q = torch.round(rows / scale.float()[:, None]) + zero.float()[:, None]
    return q.clamp(0, 2 ** bits - 1).to(torch.uint8)


def quantize_tensor(w: torch.Tensor, bits: int) -> Quantized | None:
    """Quantize ``w`` (any shape, rows = dim 0) to ``bits``, on ``w``'s device.

    Returns:
        :class:`AffineTensor` for 2..8 bits, :class:`HalfTensor` for 16, ``None`` for 32 (kept).

    Raises:
        ConfigError: bits not allowed.
    """
    check_bits(bits)
    if bits == 32:
        return None
    w = w.detach()
    if bits == 16:
        return HalfTensor(w.to(torch.float16).clone())
    rows = w.float().reshape(w.shape[0], -1)
    scale, zero = affine_qparams(rows, bits)
    return AffineTensor(_codes(rows, scale, zero, bits), scale, zero, bits, tuple(w.shape))


def fake_quantize_values(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``quantize_tensor(w, bits).dequantize()`` (w itself for 32 bits), without autograd, on ``w``'s device."""
    q = quantize_tensor(w, bits)
    return w.detach().clone() if q is None else q.dequantize().to(w.dtype)


class _StraightThrough(torch.autograd.Function):
    """Forward: the fake-quantized weight; backward: the gradient unchanged (STE, Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, bits: int) -> torch.Tensor:
        return fake_quantize_values(w, bits)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class FakeQuantize(nn.Module):
    """Parametrization used by QAT: ``w -> fake_quant(w * keep)`` with a straight-through gradient.

    Args:
        bits: 2..8 (affine) or 16 (float16 rounding).
        keep: optional 0/1 float mask of the same shape as the weight (pruned entries held at 0).
    """

    def __init__(self, bits: int, keep: torch.Tensor | None = None):
        super().__init__()
        self.bits = bits
        self.register_buffer("keep", keep)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.keep is not None:
            w = w * self.keep
        return _StraightThrough.apply(w, self.bits)


def quant_plan(model: nn.Module, config: Mapping[str, Any]) -> dict[str, int]:
    """Bits of every floating-point state-dict entry of ``model`` (32 = left in float32).

    ``affine``/``int8_dynamic``: ``bits_<part>`` for tensors with >= 2 dimensions, 32 otherwise;
    ``fp16``: 16 for every floating-point entry.

    Raises:
        ConfigError: unknown quant_method or bits not allowed.
    """
    method = config["quant_method"]
    if method not in ("affine", "int8_dynamic", "fp16"):
        raise ConfigError(f"unknown quant_method {method!r}; allowed: affine, int8_dynamic, fp16")
    part_of = {t.key: t.part for t in prunable_tensors(model)}
    plan = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        if method == "fp16":
            plan[key] = 16
        else:
            plan[key] = check_bits(int(config[f"bits_{part_of[key]}"])) if key in part_of else 32
    return plan


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    prefix, _, name = key.rpartition(".")
    return model.get_submodule(prefix), name


@dataclass
class QuantizeResult:
    """Outcome of :func:`quantize_student`.

    Attributes:
        tensors: state-dict key -> :class:`AffineTensor` / :class:`HalfTensor` (keys absent: float32).
        plan: state-dict key -> bits (:func:`quant_plan`).
        runtime: ``int8_dynamic`` or ``float32`` (how the stored student runs).
        history, train_time_s: QAT epochs (:class:`trainables.training.distill.TrainResult`), seconds.
    """

    tensors: dict[str, Quantized]
    plan: dict[str, int]
    runtime: str = "float32"
    history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0


def quantize_student(model: nn.Module, config: Mapping[str, Any], train_data: Any = None, val_data: Any = None,
                     on_epoch: Callable[[dict[str, float]], None] | None = None) -> QuantizeResult:
    """The ``quantize`` stage: optional QAT, then replace each weight by its dequantized value.

    After the call ``model`` holds exactly the float32 weights the stored codes decode to, so
    evaluating it equals evaluating the saved file (for ``int8_dynamic``, after
    :func:`to_int8_dynamic`). QAT runs on the model's device; the final codes are computed on
    the CPU (as the loader decodes them), whatever that device.

    Uses config keys ``quant_method, bits_embedding, bits_encoder, bits_classifier,
    qat_epochs`` and, for QAT, those of :func:`trainables.training.distill.train`.

    Raises:
        ConfigError: bad bits/method, or QAT without data.
    """
    from trainables.training.distill import train

    plan = quant_plan(model, config)
    result = QuantizeResult({}, plan, "int8_dynamic" if config["quant_method"] == "int8_dynamic" else "float32")
    qat = int(config["qat_epochs"])
    params = dict(model.named_parameters())
    targets = {k: b for k, b in plan.items() if b < 32 and k in params}
    if qat and targets:
        if train_data is None or val_data is None:
            raise ConfigError("qat_epochs > 0 needs training and validation data")
        keeps = {}
        for key in targets:
            w = params[key].detach()
            keeps[key] = (w != 0).to(w.dtype) if bool((w == 0).any()) else None
            module, name = _owner(model, key)
            parametrize.register_parametrization(module, name, FakeQuantize(targets[key], keeps[key]))
        fit = train(model, train_data, val_data, {**config, "epochs": qat}, on_epoch)
        result.history, result.train_time_s = fit.history, fit.train_time_s
        for key in targets:
            module, name = _owner(model, key)
            parametrize.remove_parametrizations(module, name, leave_parametrized=False)
            if keeps[key] is not None:
                with torch.no_grad():
                    getattr(module, name).mul_(keeps[key])
    state = model.state_dict()
    with torch.no_grad():
        for key, bits in plan.items():
            q = quantize_tensor(state[key].cpu(), bits)
            if q is None:
                continue
            result.tensors[key] = q
            state[key].copy_(q.dequantize().to(state[key].device))
    return result
