import json

import numpy as np
import pytest

from trainables.data import teacher as teacher_mod
from trainables.data.glue import Split
from trainables.data.teacher import (
    check_teacher,
    compute_logits,
    finetune_teacher,
    load_teacher,
    teacher_id,
    teacher_logits,
)
from trainables.errors import ConfigError


def test_shipped_logits_are_verified_used_and_cached(sst2_teacher, sst2_splits, tmp_path, monkeypatch):
    _, dev = sst2_splits
    logits = teacher_logits(str(sst2_teacher), dev, cache_dir=tmp_path)
    with np.load(sst2_teacher / "logits_sst2.npz") as z:
        assert np.array_equal(logits, z["dev"])
    assert 89.0 < (logits.argmax(1) == dev.labels).mean() * 100 < 90.5  # teacher README: 89.79%
    cached = list((tmp_path / "logits").glob("sst2-dev-*.npy"))
    assert len(cached) == 1

    def no_loading(*_a, **_k):
        raise AssertionError("the cache must answer without loading the teacher")

    monkeypatch.setattr(teacher_mod, "load_teacher", no_loading)
    assert np.array_equal(teacher_logits(str(sst2_teacher), dev, cache_dir=tmp_path), logits)


def test_logits_are_recomputed_for_other_data(sst2_teacher, sst2_splits, tmp_path):
    _, dev = sst2_splits
    sub = Split("sst2", "dev", dev.text_a[:24], None, dev.labels[:24], "subset")  # shipped rows do not fit
    model, tok = load_teacher(str(sst2_teacher))
    fresh = teacher_logits(str(sst2_teacher), sub, cache_dir=tmp_path, progress=False)
    assert fresh.shape == (24, 2)
    with np.load(sst2_teacher / "logits_sst2.npz") as z:
        assert np.abs(fresh - z["dev"][:24]).max() < 0.25  # same model, same bf16 autocast
    assert np.allclose(compute_logits(model, tok, sub, batch_size=5, progress=False), fresh, atol=0.05)  # bf16 padding noise


def test_teacher_id_hashes_weights(sst2_teacher):
    tid = teacher_id(str(sst2_teacher))
    assert tid.startswith("minilm-l6-sst2@") and len(tid.split("@")[1]) == 16
    assert teacher_id("prajjwal1/bert-tiny") == "prajjwal1/bert-tiny"


def test_bad_teacher_paths(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        check_teacher(str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        check_teacher(str(tmp_path / "missing"))


def test_finetune_tiny_teacher_end_to_end(sst2_splits, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    base = tmp_path / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(teacher_mod.minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(base)
    tok.save_pretrained(base)
    train, dev = sst2_splits
    small_train = Split("sst2", "train", train.text_a[:300], None, train.labels[:300], "subset")
    small_dev = Split("sst2", "dev", dev.text_a[:100], None, dev.labels[:100], "subset")
    out = tmp_path / "teacher"
    meta = finetune_teacher(small_train, small_dev, out, base=str(base), epochs=2, lr=1e-3, batch_size=32,
                            progress=False)
    assert json.loads((out / "teacher_meta.json").read_text())["best_dev_acc"] == meta["best_dev_acc"]
    assert meta["train_examples"] == 300 and meta["dev_data_hash"] == small_dev.data_hash
    with np.load(out / "logits_sst2.npz") as z:
        assert z["train"].shape == (300, 2) and z["dev"].shape == (100, 2)
        dev_logits = z["dev"]
    assert abs((dev_logits.argmax(1) == small_dev.labels).mean() - meta["best_dev_acc"]) < 1e-9
    model, _ = load_teacher(str(out))
    assert model.config.num_labels == 2
    # the saved folder is a valid teacher for the logits cache, and its shipped logits are used
    assert np.array_equal(teacher_logits(str(out), small_dev, cache_dir=tmp_path / "c", progress=False), dev_logits)
