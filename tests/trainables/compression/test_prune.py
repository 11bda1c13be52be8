"""Tests of trainables/compression/prune.py on real students (torch.nn.utils.prune underneath)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.compression.prune import (
    PARTS,
    apply_pruning,
    cubic_schedule,
    imp_schedule,
    make_permanent,
    prunable_tensors,
    prune_student,
    rewind,
    sparsity_by_part,
)
from trainables.config import resolve_config
from trainables.errors import ConfigError
from trainables.models.embeddings import VocabEncoder
from trainables.models.students import build_student
from trainables.training.encoded import Encoded

# char vocabulary of 8 -> 10 ids; dim 16, hidden 8, classifier 8: every tensor size times the
# targets below is an integer, so the per-part sparsity must come out exactly.
SMALL = {"student": "bilstm", "embedding": "char", "embedding_dim": 16, "vocab_size": 16, "hidden_dim": 8,
         "classifier_dim": 8, "dropout": 0.0, "epochs": 1, "batch_size": 8, "lr": 1e-2}
TARGETS = {"embedding": 0.3, "encoder": 0.5, "classifier": 0.125}


def student(**overrides):
    cfg = resolve_config({**SMALL, **overrides})
    return build_student(cfg, VocabEncoder("char", list("abcdefgh")), num_labels=2, pair=False), cfg


def tiny_data(n: int = 32, seed: int = 0) -> Encoded:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 10, (n, 7), generator=g)
    return Encoded(ids, torch.randint(1, 8, (n,), generator=g), torch.randint(0, 2, (n,), generator=g),
                   teacher=torch.randn(n, 2, generator=g))


def test_prunable_tensors_are_the_weight_matrices_of_each_part():
    model, _ = student()
    keys = {(t.part, t.key) for t in prunable_tensors(model)}
    assert keys == {("embedding", "embedding.weight"),
                    ("encoder", "encoder.rnn.weight_ih_l0"), ("encoder", "encoder.rnn.weight_hh_l0"),
                    ("encoder", "encoder.rnn.weight_ih_l0_reverse"), ("encoder", "encoder.rnn.weight_hh_l0_reverse"),
                    ("classifier", "classifier.0.weight"), ("classifier", "classifier.3.weight")}


def test_topv_local_hits_each_part_target_exactly_and_keeps_the_largest():
    model, _ = student()
    dense = {t.key: t.tensor.detach().clone() for t in prunable_tensors(model)}
    apply_pruning(model, TARGETS, method="topv", scope="local")
    make_permanent(model)
    counts = sparsity_by_part(model)
    for part in PARTS:
        zeros, total = counts[part]
        assert zeros == TARGETS[part] * total, part  # e.g. embedding 48 of 160
    for t in prunable_tensors(model):
        w, before = t.tensor.detach(), dense[t.key]
        assert int((w == 0).sum()) == round(TARGETS[t.part] * w.numel())
        kept = w != 0
        assert torch.equal(w[kept], before[kept])  # survivors untouched
        assert before[~kept].abs().max() <= before[kept].abs().min()  # Top-V: the largest survive
    assert not any(n.endswith(("_orig", "_mask")) for n, _ in model.named_parameters())
    assert not any(torch.signbit(t.tensor[t.tensor == 0]).any() for t in prunable_tensors(model))  # +0.0 only


def test_topv_global_uses_one_threshold_over_all_tensors():
    model, _ = student()
    before = torch.cat([t.tensor.detach().reshape(-1).clone() for t in prunable_tensors(model)])
    apply_pruning(model, method="topv", scope="global", sparsity=0.4)
    after = torch.cat([t.tensor.detach().reshape(-1) for t in prunable_tensors(model)])
    assert int((after == 0).sum()) == round(0.4 * after.numel())
    assert before[after == 0].abs().max() <= before[after != 0].abs().min()
    per_part = sparsity_by_part(model)
    assert len({round(z / n, 3) for z, n in per_part.values()}) > 1  # parts end at different sparsities


def test_structured_prunes_whole_rows_with_smallest_norm():
    model, _ = student()
    norms = {t.key: t.tensor.detach().norm(dim=1).clone() for t in prunable_tensors(model)}
    apply_pruning(model, TARGETS, scope="local", structured=True)
    for t in prunable_tensors(model):
        rows = t.tensor.detach()
        dead = rows.abs().sum(dim=1) == 0
        assert int(dead.sum()) == round(TARGETS[t.part] * rows.shape[0]), t.key
        assert ((rows == 0).all(dim=1) | (rows != 0).all(dim=1)).all()  # whole rows only
        if dead.any():
            assert norms[t.key][dead].max() <= norms[t.key][~dead].min()


def test_global_structured_stays_within_the_weight_budget():
    model, _ = student()
    apply_pruning(model, method="topv", scope="global", structured=True, sparsity=0.3)
    tensors = prunable_tensors(model)
    total = sum(t.tensor.numel() for t in tensors)
    zeros = sum(int((t.tensor == 0).sum()) for t in tensors)
    assert 0.25 * total < zeros <= round(0.3 * total)
    for t in tensors:
        assert ((t.tensor == 0).all(dim=1) | (t.tensor != 0).all(dim=1)).all()


def test_magnitude_prunes_below_lambda_std_han_2015():
    model, _ = student()
    w = model.classifier[0].weight.detach().clone()
    emb = model.embedding.weight.detach().clone()
    apply_pruning(model, {"embedding": 0.0, "encoder": 0.5, "classifier": 0.5}, method="magnitude", threshold=0.8)
    expected = w.abs() < 0.8 * w.std()
    assert 0 < int(expected.sum()) < w.numel()
    assert torch.equal(model.classifier[0].weight == 0, expected)
    assert torch.equal(model.embedding.weight, emb)  # a part with target 0 is left alone


def test_cubic_schedule_zhu_gupta():
    assert cubic_schedule(1, 4, 0.5) == pytest.approx(0.5 * (1 - 0.75 ** 3))
    assert cubic_schedule(4, 4, 0.5) == 0.5
    values = [cubic_schedule(k, 5, 0.8) for k in range(1, 6)]
    assert values == sorted(values) and values[-1] == 0.8
    with pytest.raises(ValueError):
        cubic_schedule(0, 4, 0.5)


def test_gradual_schedule_reaches_exact_targets_with_growing_masks():
    model, cfg = student(stages="distill,prune", prune_schedule="gradual", finetune_epochs=3,
                         sparsity_embedding=0.3, sparsity_encoder=0.5, sparsity_classifier=0.125)
    data = tiny_data()
    rows = []
    result = prune_student(model, cfg, data, data, on_epoch=rows.append)
    achieved = [s["sparsity_achieved"] for s in result.steps]
    assert achieved == sorted(achieved) and achieved[0] < achieved[-1]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for part in PARTS:
        assert result.sparsity[f"sparsity_achieved_{part}"] == pytest.approx(TARGETS[part], abs=0)


def test_finetuning_keeps_pruned_weights_at_zero():
    model, cfg = student(stages="distill,prune", finetune_epochs=2, sparsity=0.5)
    data = tiny_data()
    apply_pruning(model, {p: 0.5 for p in PARTS})
    make_permanent(model)
    zeros = {t.key: (t.tensor == 0).clone() for t in prunable_tensors(model)}
    survivors = model.classifier[0].weight.detach().clone()
    result = prune_student(model, cfg, data, data)  # re-pruning to the same 50%: masks unchanged, then fine-tune
    for t in prunable_tensors(model):
        assert torch.equal(t.tensor == 0, zeros[t.key]), t.key
    assert not torch.equal(model.classifier[0].weight, survivors)  # the kept weights did train
    assert len(result.history) == 2 and result.train_time_s > 0


def test_config_keys_thesis_targets_and_errors():
    cfg = resolve_config({"student": "rnn", "embedding": "char", "prune_targets": "thesis"})
    assert (cfg["sparsity_encoder"], cfg["sparsity_embedding"], cfg["sparsity_classifier"]) == (0.1, 0.3, 0.125)
    assert resolve_config({"sparsity": 0.2})["sparsity_classifier"] == 0.2
    with pytest.raises(ConfigError, match="glove"):
        resolve_config({"embedding": "glove", "prune_targets": "thesis"})
    with pytest.raises(ConfigError, match="finetune_epochs"):
        resolve_config({"stages": "distill,prune", "prune_schedule": "gradual"})
    with pytest.raises(ValueError):
        apply_pruning(nn.Linear(3, 3), {"classifier": 0.5})


def test_imp_schedule_prunes_the_same_fraction_of_survivors_each_round():
    values = [imp_schedule(r, 4, 0.9) for r in range(1, 5)]
    assert values[-1] == pytest.approx(0.9) and values == sorted(values)
    kept = [1.0] + [1 - v for v in values]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert ratios == pytest.approx([0.1 ** 0.25] * 4)  # Frankle and Carbin: p^(1/n) of the survivors per round
    with pytest.raises(ValueError):
        imp_schedule(5, 4, 0.9)
    with pytest.raises(ValueError):
        imp_schedule(1, 4, 1.0)


def test_imp_rewinds_the_survivors_to_the_rewind_point_and_reaches_exact_targets():
    model, cfg = student(stages="distill,prune", prune_schedule="imp", imp_rounds=3, finetune_epochs=1,
                         sparsity_embedding=0.3, sparsity_encoder=0.5, sparsity_classifier=0.125)
    torch.manual_seed(7)
    start, _ = student()  # another initialisation: the rewind point
    start_state = {k: v.clone() for k, v in start.state_dict().items()}
    data = tiny_data()
    frozen = {**cfg, "optimizer": "sgd", "lr": 0.0}  # retraining leaves weights as rewound
    rows = []
    result = prune_student(model, frozen, data, data, on_epoch=rows.append, rewind_state=start_state)
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # one retraining epoch per round
    achieved = [s["sparsity_achieved"] for s in result.steps]
    assert achieved == sorted(achieved) and achieved[0] < achieved[-1]
    for part in PARTS:
        assert result.sparsity[f"sparsity_achieved_{part}"] == pytest.approx(TARGETS[part], abs=0)
    state = model.state_dict()
    for key, value in start_state.items():
        kept = state[key] != 0
        assert torch.equal(state[key][kept], value[kept]), key  # survivors hold the rewind point's values
    prunable = {t.key for t in prunable_tensors(model)}
    assert all(torch.equal(state[k], v) for k, v in start_state.items() if k not in prunable)  # biases too
    with pytest.raises(ConfigError, match="rewind_state"):
        prune_student(student()[0], cfg, data, data)
    with pytest.raises(KeyError, match="rewind state has no tensor"):
        rewind(student()[0], {})


def test_imp_config_errors():
    with pytest.raises(ConfigError, match="imp needs finetune_epochs >= 1"):
        resolve_config({"stages": "distill,prune", "prune_schedule": "imp"})
    with pytest.raises(ConfigError, match="rewind_epoch=4 is after the last distillation epoch"):
        resolve_config({"stages": "distill,prune", "prune_schedule": "imp", "finetune_epochs": 1, "epochs": 3,
                        "rewind_epoch": 4})
    with pytest.raises(ConfigError, match="use 0..0"):
        resolve_config({"stages": "prune", "prune_schedule": "imp", "finetune_epochs": 1, "rewind_epoch": 1})
