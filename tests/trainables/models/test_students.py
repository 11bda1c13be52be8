import pytest
import torch

from trainables.config import resolve_config
from trainables.models.embeddings import build_encoder
from trainables.models.students import build_student, count_params

TEXTS = ["a fine film", "a dull , dull film", "fine"]


@pytest.mark.parametrize("student", ["bilstm", "rnn", "ffn"])
@pytest.mark.parametrize("pair", [False, True])
def test_shapes(student, pair):
    cfg = resolve_config({"student": student, "embedding": "glove", "embedding_dim": 8, "vocab_size": 16,
                          "hidden_dim": 6, "classifier_dim": 5})
    enc = build_encoder("glove", TEXTS, 16)
    model = build_student(cfg, enc, num_labels=3, pair=pair).eval()
    ids, lengths = torch.tensor([[2, 3, 4], [2, 0, 0]]), torch.tensor([3, 1])
    out = model(ids, lengths, ids, lengths) if pair else model(ids, lengths)
    assert out.shape == (2, 3)


def test_bilstm_sizes_follow_the_thesis():
    cfg = resolve_config({"student": "bilstm", "embedding": "hash", "embedding_dim": 100, "vocab_size": 1000})
    model = build_student(cfg, build_encoder("hash", TEXTS, 1000), 2, pair=False)
    lstm = model.encoder.rnn
    assert lstm.hidden_size == 150 and lstm.bidirectional
    assert model.classifier[0].in_features == 300 and model.classifier[0].out_features == 200
    total, nonzero = count_params(model)
    assert total == sum(p.numel() for p in model.parameters()) and nonzero <= total


def test_last_state_ignores_padding():
    """Packing: a padded sentence gets the same vector as the same sentence alone."""
    cfg = resolve_config({"student": "bilstm", "embedding": "char", "embedding_dim": 8, "vocab_size": 24,
                          "hidden_dim": 4, "dropout": 0.0})
    model = build_student(cfg, build_encoder("char", TEXTS, 24), 2, pair=False).eval()
    alone = model(torch.tensor([[3, 4]]), torch.tensor([2]))
    padded = model(torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8]]), torch.tensor([2, 4]))
    assert torch.allclose(alone[0], padded[0], atol=1e-6)
    cfg["pooling"] = "max"
    model = build_student(cfg, build_encoder("char", TEXTS, 24), 2, pair=False).eval()
    alone = model(torch.tensor([[3, 4]]), torch.tensor([2]))
    padded = model(torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8]]), torch.tensor([2, 4]))
    assert torch.allclose(alone[0], padded[0], atol=1e-6)


def test_same_seed_same_weights():
    cfg = resolve_config({"student": "rnn", "embedding": "char", "embedding_dim": 8, "vocab_size": 24, "seed": 7})
    enc = build_encoder("char", TEXTS, 24)
    a, b = build_student(cfg, enc, 2, False), build_student(cfg, enc, 2, False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
