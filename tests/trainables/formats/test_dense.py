import gzip

import numpy as np
import pytest
import torch

from trainables.config import check_value, resolve_config
from trainables.errors import ConfigError
from trainables.formats import load_student, read_metadata, save_student
from trainables.models.embeddings import build_encoder, pad_batch
from trainables.models.students import build_student
from trainables.training.encoded import encode_split, predict


@pytest.mark.parametrize("kind", ["hash", "char", "bpe", "glove"])
def test_roundtrip_reproduces_predictions_and_sizes_are_file_bytes(kind, tmp_path, sst2_small):
    cfg = resolve_config({"student": "bilstm", "embedding": kind, "embedding_dim": 25, "vocab_size": 300,
                          "hidden_dim": 8, "classifier_dim": 8})
    enc = build_encoder(kind, sst2_small.train.texts()[:500], cfg["vocab_size"])
    model = build_student(cfg, enc, 2, False).eval()
    path = tmp_path / "student.safetensors"
    sizes = save_student(model, cfg, enc, 2, False, path)
    data = path.read_bytes()
    assert sizes["size_bytes"] == len(data)
    assert sizes["gzip_bytes"] == len(gzip.compress(data, compresslevel=6, mtime=0))
    assert sizes["weights_bytes"] == sum(v.numel() * 4 for v in model.state_dict().values() if v.is_floating_point()) + \
        sum(v.numel() * v.element_size() for v in model.state_dict().values() if not v.is_floating_point())
    loaded, loaded_enc, loaded_cfg = load_student(path)
    assert loaded_cfg == cfg
    dev = encode_split(sst2_small.dev, enc, cfg["max_length"])
    dev2 = encode_split(sst2_small.dev, loaded_enc, cfg["max_length"])
    assert np.array_equal(predict(model, dev), predict(loaded, dev2))
    assert read_metadata(path)["featherweight_format"] == "featherweight-dense-v1"
    # the same student gives the same bytes (metadata order is canonical), so gzip_bytes is stable too
    again = save_student(model, cfg, enc, 2, False, tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == data and again == sizes


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_student(tmp_path / "missing.safetensors")
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ConfigError, match="not a featherweight student"):
        load_student(tmp_path / "other.safetensors")


def test_ffn_hash25_has_the_thesis_size(tmp_path):
    """Featherweight Table 7.5: FFN_Hash25 (vocabulary 5,000) is 0.113 MB as saved; K = 5,000 ids,
    k = 2, B = K k / d = 400 buckets of 25 dims and a 25-100-2 classifier."""
    cfg = resolve_config({"student": "ffn", "embedding": "hash", "embedding_dim": 25, "vocab_size": 5000})
    enc = build_encoder("hash", [], cfg["vocab_size"])
    model = build_student(cfg, enc, 2, False)
    weights = {k: v.numel() for k, v in model.state_dict().items() if v.is_floating_point()}
    assert weights["embedding.importance"] == (5000 + 2) * 2 and weights["embedding.components"] == 400 * 25
    assert sum(weights.values()) == 10_004 + 10_000 + 25 * 100 + 100 + 100 * 2 + 2
    sizes = save_student(model, cfg, enc, 2, False, tmp_path / "ffn.safetensors")
    assert sizes["size_bytes"] <= 113_000


def test_file_with_the_retired_hash_keys_loads_with_its_shapes(tmp_path):
    """A student saved when vocab_size was the bucket count and hash_token_space the hashed ids."""
    import json

    from safetensors.torch import load_file, save_file

    cfg = resolve_config({"student": "ffn", "embedding": "hash", "embedding_dim": 8, "vocab_size": 64,
                          "hash_buckets": 16, "hidden_dim": 4})
    enc = build_encoder("hash", [], cfg["vocab_size"])
    model = build_student(cfg, enc, 2, False).eval()
    path = tmp_path / "new.safetensors"
    save_student(model, cfg, enc, 2, False, path)
    metadata = read_metadata(path)
    legacy = {k: v for k, v in json.loads(metadata["config"]).items() if k != "hash_buckets"}
    legacy.update(vocab_size=16, hash_token_space=64)
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={**metadata, "config": json.dumps(legacy)})
    loaded, _, saved_cfg = load_student(old)
    assert saved_cfg["hash_token_space"] == 64  # the config as saved
    ids, lengths = pad_batch(enc.encode_batch(["a fine film", "dull"]), 8)
    assert loaded.embedding.components.shape == (16, 8) and loaded.embedding.importance.shape == (66, 2)
    assert torch.equal(loaded(ids, lengths), model(ids, lengths))


def test_the_retired_key_is_refused_with_what_replaced_it():
    with pytest.raises(ConfigError, match="hash_buckets"):
        check_value("hash_token_space", 100)
