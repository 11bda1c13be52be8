import gzip

import numpy as np
import pytest

from trainables.config import resolve_config
from trainables.errors import ConfigError
from trainables.formats import load_student, read_metadata, save_student
from trainables.models.embeddings import build_encoder
from trainables.models.students import build_student
from trainables.training.encoded import encode_split, predict


@pytest.mark.parametrize("kind", ["hash", "char", "bpe", "glove"])
def test_roundtrip_reproduces_predictions_and_sizes_are_file_bytes(kind, tmp_path, sst2_small):
    cfg = resolve_config({"student": "bilstm", "embedding": kind, "embedding_dim": 25, "vocab_size": 300,
                          "hidden_dim": 8, "classifier_dim": 8})
    enc = build_encoder(kind, sst2_small.train.texts()[:500], cfg["vocab_size"], cfg["hash_token_space"])
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
