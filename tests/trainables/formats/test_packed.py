"""Tests of trainables/formats/packed.py: byte counts by hand, exact round trips, no pickle, the pipeline."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import struct

import numpy as np
import pytest
import torch
from torch import nn

from trainables import formats as artifact
from trainables.compression.prune import apply_pruning, make_permanent
from trainables.compression.quantize import quantize_student, quantize_tensor
from trainables.config import resolve_config
from trainables.formats.packed import (
    decode_tensor,
    encode_mask,
    encode_tensor,
    load_packed,
    mask_bytes,
    pack_codes,
    save_packed,
    size_breakdown,
    unpack_codes,
)
from trainables.models.embeddings import VocabEncoder
from trainables.models.students import build_student
from trainables.training.encoded import encode_split, predict
from trainables.training.metrics import accuracy_percent

SMALL = {"student": "bilstm", "embedding": "char", "embedding_dim": 16, "vocab_size": 16, "hidden_dim": 8,
         "classifier_dim": 8, "dropout": 0.0}


def nbytes(entries):
    return {k.rsplit("/", 1)[1]: v.numel() * v.element_size() for k, v in entries.items()}


def test_linear_100x100_at_4_bits_by_hand():
    torch.manual_seed(0)
    lin = nn.Linear(100, 100)
    q = quantize_tensor(lin.weight, 4)
    entries, spec = encode_tensor("w", q)
    # 10,000 codes x 4 bits = 5,000 bytes; 100 float16 scales = 200 bytes; 100 uint8 zero points = 100 bytes
    assert nbytes(entries) == {"codes": 5000, "scale": 200, "zero": 100} and spec["layout"] == "dense"
    bias_entries, _ = encode_tensor("b", lin.bias.detach())
    assert nbytes(bias_entries) == {"values": 400}  # 100 float32
    assert torch.equal(decode_tensor("w", spec, entries), q.dequantize())


def test_sparse_layouts_pick_the_smaller_of_bitmap_and_index_by_hand():
    w = torch.randn(100, 100, generator=torch.Generator().manual_seed(0))
    w = w.sign() * (1 + w.abs().clamp(max=1))  # |w| in [1, 2]: no kept weight rounds to the zero code
    half = w.clone()
    half[:, ::2] = 0.0  # 50% zeros: bitmap 1,250 bytes (index list would be 5,000 x 2 bytes)
    entries, spec = encode_tensor("w", quantize_tensor(half, 4))
    assert spec["layout"] == "bitmap" and nbytes(entries) == {"bitmap": 1250, "codes": 2500, "scale": 200, "zero": 100}
    few = torch.zeros(100, 100)
    few[3, :40] = w[0, :40]  # 40 non-zeros: 40 uint16 positions = 80 bytes < 1,250
    entries, spec = encode_tensor("w", quantize_tensor(few, 8))
    assert spec["layout"] == "index" and nbytes(entries) == {"index": 80, "codes": 40, "scale": 200, "zero": 100}
    entries, spec = encode_tensor("f", half)  # float32 at 50%: 1,250 + 5,000 x 4 < 40,000
    assert spec["layout"] == "bitmap" and nbytes(entries) == {"bitmap": 1250, "values": 20000}
    assert torch.equal(decode_tensor("f", spec, entries), half)
    assert mask_bytes(300, 10) == ("index", 20) and mask_bytes(200, 10) == ("index", 10)  # uint16 vs uint8
    assert mask_bytes(80, 10) == ("bitmap", 10)  # tie -> bitmap


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_packing_round_trip(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 1001):
        codes = rng.integers(0, 2 ** bits, n).astype(np.uint8)
        packed = pack_codes(codes, bits)
        assert packed.size == math.ceil(n * bits / 8)
        assert np.array_equal(unpack_codes(packed, bits, n), codes)
    with pytest.raises(ValueError):
        pack_codes(np.array([2 ** bits], dtype=np.uint16), bits) if bits < 8 else pack_codes(np.zeros(1), 9)


def test_masks_round_trip_and_negative_zero_is_kept():
    keep = np.random.default_rng(0).random(1000) < 0.02
    layout, data = encode_mask(keep)
    assert layout == "index" and data.dtype == np.uint16
    w = torch.tensor([[0.0, -0.0, 1.5], [0.0, 0.0, 0.0]])
    entries, spec = encode_tensor("w", w)
    back = decode_tensor("w", spec, entries)
    assert torch.equal(back.view(torch.int32), w.view(torch.int32))  # -0.0 survives bit for bit


def compressed_student(tmp_path, runtime="float32"):
    cfg = resolve_config({**SMALL, "bits_embedding": 16, "bits_encoder": 3, "bits_classifier": 8,
                          "quant_method": "int8_dynamic" if runtime == "int8_dynamic" else "affine"})
    enc = VocabEncoder("char", list("abcdefgh"))
    model = build_student(cfg, enc, num_labels=2, pair=False)
    apply_pruning(model, {"embedding": 0.3, "encoder": 0.5, "classifier": 0.125})
    make_permanent(model)
    q = quantize_student(model, cfg)
    path = tmp_path / "s.safetensors"
    sizes = save_packed(model, cfg, enc, 2, False, path, q.tensors, runtime=q.runtime)
    return model.eval(), enc, cfg, path, sizes


def test_round_trip_is_bit_identical_and_sizes_are_the_file(tmp_path):
    model, enc, cfg, path, sizes = compressed_student(tmp_path)
    loaded, enc2, cfg2 = load_packed(path)
    assert cfg2 == cfg and enc2.to_json() == enc.to_json()
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == ref[key].dtype and torch.equal(value.view(torch.int32), ref[key].view(torch.int32)), key
    ids, lengths = torch.tensor([[2, 3, 4, 0], [5, 6, 7, 8]]), torch.tensor([3, 4])
    with torch.no_grad():
        assert torch.equal(model(ids, lengths), loaded(ids, lengths))
    data = path.read_bytes()
    assert sizes["size_bytes"] == len(data) and sizes["gzip_bytes"] == len(gzip.compress(data, 6, mtime=0))
    header_len = struct.unpack("<Q", data[:8])[0]
    breakdown = size_breakdown(path)
    assert breakdown["header"] == 8 + header_len and breakdown["total"] == len(data)
    assert sum(v for k, v in breakdown.items() if k not in ("header", "total")) == sizes["weights_bytes"]
    meta = json.loads(data[8: 8 + header_len])["__metadata__"]
    packing = json.loads(meta["packing"])
    assert packing["encoder.rnn.weight_ih_l0"]["bits"] == 3 and packing["embedding.weight"]["dtype"] == "float16"
    assert packing["encoder.rnn.weight_ih_l0"]["layout"] == "bitmap"  # 50% pruned: sparse is smaller


def test_loading_uses_no_pickle_and_artifact_dispatches(tmp_path, monkeypatch):
    model, _, _, path, _ = compressed_student(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    loaded, _, _ = artifact.load_student(path)
    assert torch.equal(loaded.classifier[0].weight, model.classifier[0].weight)


def test_save_refuses_weights_that_are_not_the_codes(tmp_path):
    cfg = resolve_config(SMALL)
    enc = VocabEncoder("char", list("abcdefgh"))
    model = build_student(cfg, enc, 2, False)
    q = {"classifier.0.weight": quantize_tensor(model.classifier[0].weight, 4)}  # model not updated
    with pytest.raises(ValueError, match="dequantized"):
        save_packed(model, cfg, enc, 2, False, tmp_path / "x", q)


def test_int8_dynamic_runtime_is_recorded_and_applied(tmp_path):
    _, _, _, path, _ = compressed_student(tmp_path, runtime="int8_dynamic")
    runtime_model, _, _ = load_packed(path)
    plain, _, _ = load_packed(path, runtime=False)
    assert any(".quantized.dynamic" in type(m).__module__ for m in runtime_model.modules())
    assert not any(".quantized.dynamic" in type(m).__module__ for m in plain.modules())


def test_pipeline_stages_log_prefixed_metrics_and_evaluate_the_saved_file(sst2_small, tmp_path):
    from trainables.tracking import MemoryTracker
    from trainables.trial import run_trial

    tracker = MemoryTracker()
    cfg = {"student": "ffn", "embedding": "hash", "embedding_dim": 16, "vocab_size": 2000, "hash_buckets": 500,
           "epochs": 1, "lr": 3e-3, "stages": "distill,prune,quantize", "sparsity": 0.5, "bits_embedding": 4, "bits_classifier": 8}
    final = run_trial(cfg, sst2_small, tmp_path, tracker)
    for stage in ("distill", "prune", "quantize"):
        for metric in ("accuracy", "size_bytes", "gzip_bytes", "latency_ms", "nonzero_params", "compression_ratio"):
            assert f"{stage}_{metric}" in tracker.metrics, (stage, metric)
    last = {k: v[-1][1] for k, v in tracker.metrics.items()}
    assert last["prune_sparsity_achieved_embedding"] == 0.5 and last["prune_sparsity_achieved_classifier"] == 0.5
    assert final["size_bytes"] == last["quantize_size_bytes"] < last["prune_size_bytes"] < last["distill_size_bytes"]
    path = tmp_path / "model" / "student.packed.safetensors"
    assert final["size_bytes"] == path.stat().st_size
    assert (tmp_path / "stages" / "distill" / "student.safetensors").is_file()
    model, enc, saved_cfg = artifact.load_student(path)
    dev = encode_split(sst2_small.dev, enc, saved_cfg["max_length"])
    assert accuracy_percent(predict(model, dev), sst2_small.dev.labels) == final["accuracy"]
