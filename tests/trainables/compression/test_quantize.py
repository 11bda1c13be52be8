"""Tests of trainables/compression/quantize.py: affine per-row quantization, QAT, the torch.ao adapter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from trainables.compression.prune import apply_pruning, make_permanent, prunable_tensors
from trainables.compression.quantize import (
    AffineTensor,
    FakeQuantize,
    HalfTensor,
    affine_qparams,
    quant_plan,
    quantize_student,
    quantize_tensor,
)
from trainables.config import resolve_config
from trainables.errors import ConfigError
from trainables.kernels import to_int8_dynamic
from trainables.models.embeddings import VocabEncoder
from trainables.models.students import build_student
from trainables.training.encoded import Encoded

SMALL = {"student": "bilstm", "embedding": "char", "embedding_dim": 16, "vocab_size": 16, "hidden_dim": 8,
         "classifier_dim": 8, "dropout": 0.0, "epochs": 1, "batch_size": 8, "lr": 1e-2}


def tiny_data(n: int = 32, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 10, (n, 7), generator=g)
    return Encoded(ids, torch.randint(1, 8, (n,), generator=g), torch.randint(0, 2, (n,), generator=g),
                   teacher=torch.randn(n, 2, generator=g))


def student(**overrides):
    cfg = resolve_config({**SMALL, **overrides})
    return build_student(cfg, VocabEncoder("char", list("abcdefgh")), num_labels=2, pair=False), cfg


def test_two_bit_row_by_hand():
    # lo = -1, hi = 2: S = 3 / 3 = 1, Z = 1; codes round(w) + 1 (0.5 rounds to even 0)
    q = quantize_tensor(torch.tensor([[-1.0, 0.0, 0.5, 2.0], [0.0, 0.0, 0.0, 0.0]]), bits=2)
    assert q.codes.tolist() == [[0, 1, 1, 3], [0, 0, 0, 0]]
    assert q.scale.dtype == torch.float16 and q.scale.tolist() == [1.0, 1.0]  # an all-zero row gets S = 1
    assert q.zero.dtype == torch.uint8 and q.zero.tolist() == [1, 0]
    assert q.dequantize().tolist() == [[-1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_per_row_affine_error_bound_and_exact_zero(bits):
    torch.manual_seed(bits)
    w = torch.randn(50, 40) * torch.logspace(-3, 1, 50)[:, None]  # rows of very different scales
    w[:, 7] = 0.0
    q = quantize_tensor(w, bits)
    qmax = 2 ** bits - 1
    lo, hi = w.amin(1).clamp(max=0), w.amax(1).clamp(min=0)
    assert torch.equal(q.scale, ((hi - lo) / qmax).half())
    assert int(q.codes.max()) <= qmax and q.codes.dtype == torch.uint8
    deq = q.dequantize()
    # half a step of error, plus the float16 rounding of S over at most qmax steps
    bound = q.scale.float() * 0.5 + (q.scale.float() - (hi - lo) / qmax).abs() * qmax
    assert ((deq - w).abs() <= bound[:, None] + 1e-6).all()
    assert (deq[:, 7] == 0).all() and not torch.signbit(deq[:, 7]).any()
    assert len(torch.unique(q.codes[3])) <= 2 ** bits


def test_float_bits():
    w = torch.randn(3, 5)
    half = quantize_tensor(w, 16)
    assert isinstance(half, HalfTensor) and torch.equal(half.dequantize(), w.half().float())
    assert quantize_tensor(w, 32) is None
    with pytest.raises(ConfigError):
        quantize_tensor(w, 9)
    with pytest.raises(ValueError):
        affine_qparams(w, 1)


def test_fake_quantize_uses_straight_through_gradient_and_keeps_zeros():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    keep = (torch.arange(24).reshape(4, 6) % 3 != 0).float()
    parametrize.register_parametrization(lin, "weight", FakeQuantize(3, keep))
    x = torch.randn(5, 6)
    lin(x).pow(2).sum().backward()
    raw = lin.parametrizations.weight.original
    w_q = quantize_tensor(raw.detach() * keep, 3).dequantize()
    assert torch.equal(lin.weight, w_q)  # the forward sees exactly the dequantized codes
    y = x @ w_q.T + lin.bias
    expected = (2 * y).T @ x * keep  # d/dW of sum(y^2), passed straight through the rounding
    assert torch.allclose(raw.grad, expected, atol=1e-5)
    assert (raw.grad[keep == 0] == 0).all()


def test_quant_plan_by_part_and_method():
    model, cfg = student(bits_embedding=16, bits_encoder=4, bits_classifier=32)
    plan = quant_plan(model, cfg)
    assert plan["embedding.weight"] == 16 and plan["encoder.rnn.weight_hh_l0"] == 4
    assert plan["classifier.0.weight"] == 32 and plan["encoder.rnn.bias_ih_l0"] == 32
    fp16 = quant_plan(model, {**cfg, "quant_method": "fp16"})
    assert set(fp16.values()) == {16} and len(fp16) == len(model.state_dict())


def test_quantize_student_with_qat_keeps_sparsity_and_matches_codes():
    model, cfg = student(bits_embedding=8, bits_encoder=4, bits_classifier=3, qat_epochs=2)
    apply_pruning(model, {"embedding": 0.3, "encoder": 0.5, "classifier": 0.125})
    make_permanent(model)
    zeros = {t.key: (t.tensor == 0).clone() for t in prunable_tensors(model)}
    data = tiny_data()
    result = quantize_student(model, cfg, data, data)
    assert len(result.history) == 2 and not parametrize.is_parametrized(model.encoder.rnn)
    state = model.state_dict()
    for t in prunable_tensors(model):
        q = result.tensors[t.key]
        assert isinstance(q, AffineTensor) and q.bits == int(cfg[f"bits_{t.part}"])
        assert torch.equal(state[t.key], q.dequantize())  # the model holds exactly what is stored
        assert zeros[t.key][t.tensor == 0].sum() == zeros[t.key].sum()  # pruned stay zero
    assert "classifier.0.bias" not in result.tensors


def test_qat_needs_data():
    model, cfg = student(qat_epochs=1)
    with pytest.raises(ConfigError):
        quantize_student(model, cfg)


def test_int8_dynamic_adapter_converts_lstm_and_linear_only():
    model, _ = student()
    model.eval()
    q = to_int8_dynamic(model)
    dynamic = {type(m).__name__ for m in q.modules() if ".quantized.dynamic" in type(m).__module__}
    assert {"LSTM", "Linear"} <= dynamic and type(q.embedding) is nn.Embedding
    data = tiny_data()
    with torch.no_grad():
        ref, out = model(*data.inputs(slice(0, 32))), q(*data.inputs(slice(0, 32)))
    assert not torch.equal(ref, out) and torch.allclose(ref, out, atol=0.05)
    rnn, _ = student(student="rnn")
    assert any(type(m) is nn.RNN for m in to_int8_dynamic(rnn.eval()).modules())  # no int8 kernel for Elman RNNs
