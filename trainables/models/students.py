"""Student architectures (Featherweight thesis, chapter 5; Tang et al. 2019 for the BiLSTM).

- ``bilstm``: a bidirectional LSTM (hidden 150); sentence vector = last hidden state of each
  direction, or max pooling over time; classifier Linear(2h, 200) - ReLU - Linear(200, C).
- ``rnn``: the same with a bidirectional Elman RNN (tanh, hidden 100; classifier hidden 100).
- ``ffn``: the mean of the token embeddings, one hidden layer (hidden 100), then C logits.

Sentence-pair tasks (QQP, MNLI) encode both sentences with the same encoder and classify
``[u; v; |u - v|; u * v]`` (Wang et al. 2019, the GLUE baselines).

Example:
    >>> import torch
    >>> from trainables.models.embeddings import HashEncoder
    >>> cfg = {"student": "ffn", "embedding": "hash", "embedding_dim": 25, "vocab_size": 400,
    ...        "hash_buckets": 32, "hash_functions": 2, "hidden_dim": 16, "classifier_dim": 0, "pooling": "last",
    ...        "dropout": 0.0, "seed": 0}
    >>> model = build_student(cfg, HashEncoder(400), num_labels=2, pair=False)
    >>> model(torch.tensor([[2, 3, 0]]), torch.tensor([2])).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from trainables.models.embeddings import PAD, TextEncoder, build_embedding


class RecurrentEncoder(nn.Module):
    """Bidirectional LSTM or Elman RNN over embeddings.

    Input: embeddings (batch, seq, dim) and lengths (batch,). Output: (batch, 2 * hidden).
    ``pooling="last"`` concatenates the final state of each direction (padding excluded via
    packing); ``"max"`` takes the element-wise max over the valid time steps.
    """

    def __init__(self, cell: str, dim: int, hidden: int, pooling: str):
        super().__init__()
        rnn_cls = nn.LSTM if cell == "lstm" else nn.RNN
        self.rnn = rnn_cls(dim, hidden, batch_first=True, bidirectional=True)
        self.pooling = pooling
        self.out_dim = 2 * hidden

    def forward(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling == "last":
            h = state[0] if isinstance(state, tuple) else state  # (2, batch, hidden)
            return torch.cat([h[0], h[1]], dim=-1)
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))
        return out.max(dim=1).values


class MeanEncoder(nn.Module):
    """Mean of the token embeddings over valid positions: (batch, seq, dim) -> (batch, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def forward(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = (torch.arange(emb.shape[1], device=emb.device)[None, :] < lengths[:, None]).unsqueeze(-1)
        return (emb * mask).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(emb.dtype)


class Student(nn.Module):
    """Embedding -> sentence encoder -> classifier, for single sentences or sentence pairs.

    Forward input: ``ids_a`` (batch, seq) int64 and ``len_a`` (batch,), plus ``ids_b``/``len_b``
    for pair tasks. Output: logits (batch, num_labels), before softmax.
    """

    def __init__(self, embedding: nn.Module, encoder: nn.Module, classifier: nn.Module, pair: bool,
                 dropout: float):
        super().__init__()
        self.embedding, self.encoder, self.classifier = embedding, encoder, classifier
        self.pair = pair
        self.dropout = nn.Dropout(dropout)

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.dropout(self.embedding(ids)), lengths)

    def forward(self, ids_a: torch.Tensor, len_a: torch.Tensor, ids_b: torch.Tensor | None = None,
                len_b: torch.Tensor | None = None) -> torch.Tensor:
        u = self.encode(ids_a, len_a)
        if self.pair:
            v = self.encode(ids_b, len_b)
            u = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)
        return self.classifier(self.dropout(u))


def _mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def _recurrent(cell: str) -> "StudentBuilder":
    def build(dim: int, hidden: int, num_labels: int, pair: bool, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
        enc = RecurrentEncoder(cell, dim, hidden, config["pooling"])
        feat = enc.out_dim * (4 if pair else 1)
        return enc, _mlp(feat, int(config["classifier_dim"]), num_labels, float(config["dropout"]))

    return build


def _ffn(dim: int, hidden: int, num_labels: int, pair: bool, config: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    return MeanEncoder(dim), _mlp(dim * (4 if pair else 1), hidden, num_labels, float(config["dropout"]))


StudentBuilder = Callable[[int, int, int, bool, Mapping[str, Any]], "tuple[nn.Module, nn.Module]"]

#: ``student`` config value -> builder of ``(sentence encoder, classifier)`` from
#: ``(embedding_dim, hidden_dim, num_labels, pair, config)``. The truncated transformer is not
#: here: it is built from the teacher (:func:`trainables.models.transformer.from_teacher`).
STUDENT_BUILDERS: dict[str, StudentBuilder] = {"bilstm": _recurrent("lstm"), "rnn": _recurrent("rnn"), "ffn": _ffn}


def build_student(config: Mapping[str, Any], encoder: TextEncoder, num_labels: int, pair: bool,
                  init_pretrained: bool = True) -> Student:
    """Build the student described by a resolved trial config (see :mod:`trainables.config`).

    Uses keys ``student, embedding_dim, hash_buckets, hash_functions, hidden_dim, classifier_dim,
    pooling, dropout, seed``. Parameters are initialised from ``torch.manual_seed(seed)``.

    Raises:
        ValueError: a student not in :data:`STUDENT_BUILDERS`.
    """
    builder = STUDENT_BUILDERS.get(config["student"])
    if builder is None:
        raise ValueError(f"student {config['student']!r} is not built from an embedding; "
                         f"these are: {', '.join(STUDENT_BUILDERS)}")
    torch.manual_seed(int(config["seed"]))
    dim = int(config["embedding_dim"])
    embedding = build_embedding(encoder, dim, int(config.get("hash_buckets", 0)), int(config["hash_functions"]),
                                init_pretrained=init_pretrained, seed=int(config["seed"]))
    enc, classifier = builder(dim, int(config["hidden_dim"]), num_labels, pair, config)
    return Student(embedding, enc, classifier, pair, float(config["dropout"]))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(number of parameters, number of non-zero parameters) of ``model``."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p).item())
    return total, nonzero


__all__ = ["Student", "RecurrentEncoder", "MeanEncoder", "build_student", "count_params", "PAD"]
