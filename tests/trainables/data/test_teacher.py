import json

import numpy as np
import pytest

from trainables.data import teacher as teacher_mod
from trainables.data.glue import Split
from trainables.data.teacher import (
    PRECISIONS,
    Labeller,
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


def test_labeller_batches_within_the_token_budget_and_keeps_input_order(sst2_teacher, sst2_splits):
    _, dev = sst2_splits
    model, tok = load_teacher(str(sst2_teacher))
    texts = dev.text_a[:120]
    labeller = Labeller(model, tok, "fp32", batch_tokens=256)
    lengths = np.array([len(ids) for ids in tok(texts, truncation=True, max_length=128)["input_ids"]])
    batches = labeller.batches(lengths)
    assert sorted(np.concatenate(batches).tolist()) == list(range(120))  # every row once
    assert all(len(b) == 1 or len(b) * lengths[b].max() <= 256 for b in batches)
    assert len(batches) < 60  # short sentences share batches
    fp32 = labeller(texts, progress=False)
    one_by_one = np.concatenate([compute_logits(model, tok, Split("sst2", "x", [t], None, np.zeros(1, np.int64), "-"),
                                                progress=False) for t in texts[:10]])
    assert np.abs(fp32[:10] - one_by_one).max() < 0.25  # row i is sentence i (bf16 noise on the right)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_labeller_precisions_against_float32(precision, sst2_teacher, sst2_splits):
    """The agreement bench/teacher_labelling measures on all of SST-2 dev, on 300 sentences."""
    _, dev = sst2_splits
    model, tok = load_teacher(str(sst2_teacher))
    texts = dev.text_a[:300]
    ref = Labeller(model, tok, "fp32")(texts, progress=False)
    fast = Labeller(model, tok, precision)(texts, progress=False)
    agreement = (fast.argmax(1) == ref.argmax(1)).mean()
    assert agreement >= (0.99 if precision != "int8" else 0.95)
    assert ((fast - ref) ** 2).mean() < (1e-3 if precision != "int8" else 0.3)


def test_labeller_refuses_what_it_cannot_do(sst2_teacher):
    model, tok = load_teacher(str(sst2_teacher))
    with pytest.raises(ConfigError, match="precision must be one of"):
        Labeller(model, tok, "fp8")
    with pytest.raises(ConfigError, match="batch_tokens"):
        Labeller(model, tok, "bf16", batch_tokens=0)


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


def test_labeller_labels_each_distinct_example_once(sst2_teacher, sst2_splits, monkeypatch):
    _, dev = sst2_splits
    model, tok = load_teacher(str(sst2_teacher))
    labeller = Labeller(model, tok, "fp32")
    seen = []
    forward = labeller.model.forward
    monkeypatch.setattr(labeller.model, "forward", lambda **kw: (seen.append(kw["input_ids"].shape[0]), forward(**kw))[1])
    texts = [dev.text_a[0], dev.text_a[1], dev.text_a[0], dev.text_a[2], dev.text_a[1]]
    out = labeller(texts, progress=False)
    assert sum(seen) == 3 and np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[4])
    assert not np.array_equal(out[0], out[1])
