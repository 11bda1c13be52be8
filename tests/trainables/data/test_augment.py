"""Augmented transfer sets (Tang et al. 2019, section 3.3): rules, teacher labels, cache, trials."""

import numpy as np
import pytest

from trainables.data import augment
from trainables.data.augment import (
    MASK,
    augment_grid,
    augment_texts,
    augment_tokens,
    build_augmented,
    glove_neighbours,
    prepare_augmented,
    rows_for_space,
    transfer_set,
)
from trainables.data.glue import Split
from trainables.data.text import words
from trainables.errors import ConfigError

TOKENS = "the film is a fine and funny ride".split()
NEIGHBOURS = {"film": ["movie", "picture"], "fine": ["good"], "funny": ["witty"]}


def test_each_rule_alone():
    rng = np.random.default_rng(0)
    assert augment_tokens(TOKENS, rng, 1.0, 0.0, 0.0, NEIGHBOURS) == [MASK] * len(TOKENS)
    replaced = augment_tokens(TOKENS, rng, 0.0, 1.0, 0.0, NEIGHBOURS)
    for old, new in zip(TOKENS, replaced):  # every word with neighbours is replaced by one of them
        assert new in NEIGHBOURS[old] if old in NEIGHBOURS else new == old
    for seed in range(20):  # n-gram sampling keeps a contiguous n-gram, 1 <= n <= 5
        gram = augment_tokens(TOKENS, np.random.default_rng(seed), 0.0, 0.0, 1.0, NEIGHBOURS)
        starts = [i for i in range(len(TOKENS)) if TOKENS[i: i + len(gram)] == gram]
        assert 1 <= len(gram) <= 5 and starts
    assert augment_tokens(TOKENS, rng, 0.0, 0.0, 0.0, NEIGHBOURS) == TOKENS


def test_samples_per_sentence_are_distinct_and_seeded(sst2_splits):
    train, _ = sst2_splits
    texts = train.text_a[:50]
    a, b, src = augment_texts(texts, None, 5, 0.2, seed=1, neighbours=NEIGHBOURS)
    assert b is None and len(a) == len(src) and src.max() < 50
    for i in range(50):
        made = [a[j] for j in np.flatnonzero(src == i)]
        assert len(made) <= 5 and len(set(made)) == len(made)
        assert " ".join(words(texts[i])) not in made  # copies of the original are dropped
    again = augment_texts(texts, None, 5, 0.2, seed=1, neighbours=NEIGHBOURS)
    other = augment_texts(texts, None, 5, 0.2, seed=2, neighbours=NEIGHBOURS)
    assert again[0] == a and other[0] != a
    assert sum(MASK in t for t in a) > 0
    with pytest.raises(ConfigError, match="augment_p"):
        augment_texts(texts, None, 2, 0.7, seed=0, neighbours={})


def test_pairs_cycle_first_second_both(glue_dir):
    from trainables.data.glue import load_split

    qqp = load_split("qqp", "dev", glue_dir)
    a0, b0 = [" ".join(words(t)) for t in qqp.text_a[:40]], [" ".join(words(t)) for t in qqp.text_b[:40]]
    a, b, src = augment_texts(qqp.text_a[:40], qqp.text_b[:40], 3, 0.3, seed=0, neighbours={})
    only_a = sum(x != a0[i] and y == b0[i] for x, y, i in zip(a, b, src))
    only_b = sum(x == a0[i] and y != b0[i] for x, y, i in zip(a, b, src))
    both = sum(x != a0[i] and y != b0[i] for x, y, i in zip(a, b, src))
    assert only_a > 10 and only_b > 10 and both > 10


def test_glove_neighbours_are_near_in_glove_space():
    nb = glove_neighbours(["film", "terrible", "zzqqxxnotaword"], k=10)
    assert "movie" in nb["film"] and "film" not in nb["film"] and len(nb["film"]) == 10
    assert "zzqqxxnotaword" not in nb


def test_teacher_labels_are_cached_by_key(sst2_teacher, sst2_splits, tmp_path, monkeypatch):
    from trainables.data.teacher import compute_logits, load_teacher

    train, _ = sst2_splits
    rows = np.arange(100, 112)
    aug = build_augmented(train, str(sst2_teacher), n=2, p=0.2, seed=0, rows=rows, cache_dir=tmp_path, progress=False)
    assert not aug.cached and len(aug) > 12 and set(aug.source) <= set(rows)
    assert aug.logits.shape == (len(aug), 2) and aug.seconds > 0 and aug.precision == "bf16"
    assert aug.energy_method == "unavailable" and aug.joules is None  # no meter without NVML or readable RAPL: never 0 J
    model, tok = load_teacher(str(sst2_teacher))
    direct = compute_logits(model, tok, Split("sst2", "x", aug.text_a.tolist(), None, np.zeros(len(aug), np.int64), "-"),
                            batch_size=7, progress=False)
    assert np.abs(direct - aug.logits).max() < 0.25  # the teacher's logits, in example order (bf16 noise)
    assert (direct.argmax(1) == aug.logits.argmax(1)).mean() > 0.9

    monkeypatch.setattr("trainables.data.teacher.load_teacher", lambda *_: pytest.fail("the cache must answer"))
    again = build_augmented(train, str(sst2_teacher), n=2, p=0.2, seed=0, rows=rows, cache_dir=tmp_path)
    assert again.cached and again.text_a == aug.text_a and np.array_equal(again.logits, aug.logits)
    assert isinstance(again.logits.base, np.memmap) and not again.logits.flags.writeable  # read memory-mapped
    assert again.seconds == aug.seconds  # the cost of making it, not of reading it
    folders = list((tmp_path / "augment").glob("sst2-*"))
    assert len(folders) == 1 and not list(folders[0].glob("*.pkl"))
    keys = {augment.cache_key("t", train, rows, 2, 0.2, 0), augment.cache_key("t", train, rows, 2, 0.2, 1),
            augment.cache_key("t", train, rows, 3, 0.2, 0), augment.cache_key("t", train, rows, 2, 0.1, 0),
            augment.cache_key("u", train, rows, 2, 0.2, 0), augment.cache_key("t", train, None, 2, 0.2, 0),
            augment.cache_key("t", train, rows, 2, 0.2, 0, precision="bf16")}
    assert len(keys) == 7


def test_an_interrupted_labelling_continues_where_it_stopped(sst2_teacher, sst2_splits, tmp_path, monkeypatch):
    from trainables.data import teacher as teacher_module

    train, _ = sst2_splits
    rows = np.arange(0, 40)
    monkeypatch.setattr(augment, "CHUNK_ROWS", 16)
    calls: list[int] = []
    real_call = teacher_module.Labeller.__call__

    def interrupted(self, text_a, text_b=None, progress=True, desc=""):
        calls.append(len(text_a))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third chunk
        return real_call(self, text_a, text_b, progress=progress)

    monkeypatch.setattr(teacher_module.Labeller, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_augmented(train, str(sst2_teacher), n=3, p=0.2, seed=0, rows=rows, cache_dir=tmp_path, progress=False)
    folder = next((tmp_path / "augment").glob("sst2-*"))
    import json

    state = json.loads((folder / "state.json").read_text())
    assert state["labelled"] == 32 and not state["complete"] and state["rows"] > 48

    monkeypatch.setattr(teacher_module.Labeller, "__call__", lambda self, a, b=None, progress=True, desc="": (
        calls.append(len(a)), real_call(self, a, b, progress=progress))[1])
    resumed = build_augmented(train, str(sst2_teacher), n=3, p=0.2, seed=0, rows=rows, cache_dir=tmp_path,
                              progress=False)
    assert sum(calls[3:]) == state["rows"] - 32  # only what was left was labelled again
    fresh = build_augmented(train, str(sst2_teacher), n=3, p=0.2, seed=0, rows=rows, cache_dir=tmp_path / "other",
                            progress=False)
    assert resumed.text_a == fresh.text_a and np.allclose(resumed.logits, fresh.logits, atol=1e-5)
    assert resumed.joules is None and resumed.energy_method == "unavailable"  # the first run's energy is unknown


def _space(text):
    import yaml

    from spaces.space import parse_space

    return parse_space(yaml.safe_load(text), "inline")


def test_grid_and_rows_follow_the_space():
    space = _space("params: {augment_n: {choice: [0, 4]}, augment_p: {choice: [0.1, 0.2]}, seed: 3, "
                   "max_train_examples: 200}")
    assert augment_grid(space) == [(4, 0.1), (4, 0.2)]
    rows = rows_for_space(space, 1000)
    assert np.array_equal(rows, np.sort(np.random.default_rng(3).permutation(1000)[:200]))  # as _run picks them
    assert rows_for_space(_space("params: {augment_n: 2}"), 1000) is None
    assert augment_grid(_space("params: {lr: 0.01}")) == []
    with pytest.raises(ConfigError, match="augment_p: use a 'choice' or a fixed value"):
        augment_grid(_space("params: {augment_n: 2, augment_p: {uniform: [0.0, 0.3]}}"))


def test_trial_trains_on_its_rows_plus_their_synthetic_rows(sst2_small, sst2_teacher, tmp_path):
    from trainables.tracking import MemoryTracker
    from trainables.trial import run_trial

    data = sst2_small.__class__(**{**sst2_small.__dict__, "augmented": {}})
    cfg = {"student": "ffn", "embedding": "hash", "embedding_dim": 16, "vocab_size": 2000, "hash_buckets": 500, "epochs": 1,
           "max_train_examples": 60, "augment_n": 2, "augment_p": 0.2}
    rows = np.random.default_rng(0).permutation(len(data.train))[:60]
    prepare_augmented(data, str(sst2_teacher), [(2, 0.2)], rows[:40], seed=0, cache_dir=tmp_path, progress=False)
    aug = data.augmented[(2, 0.2)]
    split, logits, none, metrics, tags = transfer_set(data, {**cfg, "seed": 0}, rows)
    assert none is None and len(split) == 60 + len(aug) == len(logits) and split.text_a[60] == aug.text_a[0]
    assert isinstance(split.text_a[60], str)
    assert np.array_equal(logits[:60], data.train_logits[rows]) and np.array_equal(logits[60:], aug.logits)
    assert np.array_equal(split.labels[60:], aug.logits.argmax(1))  # synthetic rows: the teacher's label
    assert metrics["augment_rows"] == len(aug) and tags["augment_cache"] == "miss"

    tracker = MemoryTracker()
    final = run_trial(cfg, data, tmp_path / "trial", tracker)
    assert final["accuracy"] > 0 and tracker.metrics["augment_rows"] == [(None, float(len(aug)))]
    assert tracker.metrics["augment_time_s"][0][1] == aug.seconds and "augment_energy_j" not in tracker.metrics
    assert tracker.tags["augment_energy_method"] == "unavailable"
    with pytest.raises(ConfigError, match="no augmented transfer set for augment_n=3"):
        run_trial({**cfg, "augment_n": 3}, data, tmp_path / "t2", MemoryTracker())
