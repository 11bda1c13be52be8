import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.config import resolve_config
from trainables.models.embeddings import build_encoder
from trainables.models.students import build_student
from trainables.training.distill import distill_loss, train
from trainables.training.encoded import encode_split, predict
from trainables.training.metrics import accuracy_percent


def test_mse_and_kl_losses_match_their_formulas():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    ce = F.cross_entropy(s, y)
    assert torch.allclose(distill_loss(s, t, y, 0.3, "mse"), 0.3 * ce + 0.7 * ((s - t) ** 2).mean())
    T = 3.0
    p_t, log_p_s = torch.softmax(t / T, -1), torch.log_softmax(s / T, -1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    assert torch.allclose(distill_loss(s, t, y, 0.0, "kl", T), T * T * kl, atol=1e-6)
    assert torch.allclose(distill_loss(s, t, y, 1.0, "kl", T), ce)
    with pytest.raises(ValueError, match="unknown distill_loss"):
        distill_loss(s, t, y, 0.5, "cosine")


def _setup(data, **overrides):
    cfg = resolve_config({"student": "ffn", "embedding": "hash", "embedding_dim": 16, "vocab_size": 2000,
                          "hash_buckets": 500,
                          "epochs": 3, "patience": 0, "lr": 3e-3, **overrides})
    enc = build_encoder("hash", data.train.texts(), cfg["vocab_size"])
    tr = encode_split(data.train, enc, cfg["max_length"], data.train_logits)
    dv = encode_split(data.dev, enc, cfg["max_length"])
    return cfg, build_student(cfg, enc, 2, False), tr, dv


def test_training_learns_and_keeps_the_best_epoch(sst2_small):
    cfg, model, tr, dv = _setup(sst2_small)
    seen = []
    result = train(model, tr, dv, cfg, on_epoch=seen.append)
    accs = [row["val_accuracy"] for row in result.history]
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert result.best_accuracy == max(accs) and result.best_epoch == 1 + accs.index(max(accs))
    assert accuracy_percent(predict(model, dv), sst2_small.dev.labels) == result.best_accuracy
    assert result.best_accuracy > 60.0  # chance is ~51% on SST-2 dev


def test_early_stopping_stops_after_patience(sst2_small):
    cfg, model, tr, dv = _setup(sst2_small, epochs=8, patience=1, lr=0.05)
    result = train(model, tr, dv, cfg)
    accs = [row["val_accuracy"] for row in result.history]
    assert len(accs) < 8 and accs[-1] <= max(accs[:-1])


def test_training_is_deterministic_for_a_seed(sst2_small):
    runs = []
    for _ in range(2):
        cfg, model, tr, dv = _setup(sst2_small, epochs=1, seed=3)
        train(model, tr, dv, cfg)
        runs.append(predict(model, dv))
    assert np.array_equal(runs[0], runs[1])
    cfg, model, tr, dv = _setup(sst2_small, epochs=1, seed=4)
    train(model, tr, dv, cfg)
    assert not np.array_equal(runs[0], predict(model, dv))


def test_resuming_from_a_saved_state_equals_the_uninterrupted_run(sst2_small, tmp_path):
    from trainables.training.distill import TrainState

    cfg, model, tr, dv = _setup(sst2_small, epochs=3, dropout=0.3, seed=5)  # dropout: the RNG must continue too
    states = []
    whole = train(model, tr, dv, cfg, on_state=states.append)
    assert [s.epoch for s in states] == [1, 2, 3] and states[-1].history == whole.history
    for i, state in enumerate(states[:2]):
        path = tmp_path / f"state{i}.pt"
        state.save(path)
        torch.manual_seed(123)  # a new process: a different global RNG until the state restores it
        cfg2, fresh, tr2, dv2 = _setup(sst2_small, epochs=3, dropout=0.3, seed=5)
        resumed = train(fresh, tr2, dv2, cfg2, resume=TrainState.load(path))
        assert resumed.history == [{**r, "epoch_time_s": resumed.history[j]["epoch_time_s"]}
                                   for j, r in enumerate(whole.history)]
        assert (resumed.best_epoch, resumed.best_accuracy) == (whole.best_epoch, whole.best_accuracy)
        for key, value in model.state_dict().items():
            assert torch.equal(value, fresh.state_dict()[key]), key
    with pytest.raises(ValueError, match="cannot resume after epoch 3 of a 2-epoch"):
        train(fresh, tr, dv, {**cfg, "epochs": 2}, resume=states[-1])


def test_resuming_after_early_stopping_trains_no_more(sst2_small):
    cfg, model, tr, dv = _setup(sst2_small, epochs=8, patience=1, lr=0.05)
    states = []
    whole = train(model, tr, dv, cfg, on_state=states.append)
    assert states[-1].stopped and len(states) == len(whole.history) < 8
    _, fresh, _, _ = _setup(sst2_small, epochs=8, patience=1, lr=0.05)
    resumed = train(fresh, tr, dv, cfg, resume=states[-1])
    assert len(resumed.history) == len(whole.history) and resumed.best_epoch == whole.best_epoch
    assert np.array_equal(predict(fresh, dv), predict(model, dv))


def test_halt_ends_the_epoch_in_progress_and_training_after_it(sst2_small):
    cfg, model, tr, dv = _setup(sst2_small, epochs=3, seed=6)
    epochs_done, asked_in_epoch_2, states = [], [], []

    def halt() -> bool:  # a time budget spent at the second epoch's third batch
        if epochs_done:
            asked_in_epoch_2.append(1)
        return len(asked_in_epoch_2) >= 3

    result = train(model, tr, dv, cfg, on_epoch=lambda row: epochs_done.append(row["epoch"]),
                   on_state=states.append, halt=halt)
    assert len(asked_in_epoch_2) == 3  # asked after every batch; no batch after it said stop
    assert epochs_done == [1, 2] and result.stopped_at_epoch == 2
    assert "partial_epoch" not in result.history[0] and result.history[1]["partial_epoch"] == 1.0
    assert states[-1].stopped  # a resume from the halted epoch trains no further
    _, fresh, _, _ = _setup(sst2_small, epochs=3, seed=6)
    assert len(train(fresh, tr, dv, cfg, resume=states[-1]).history) == 2
    assert accuracy_percent(predict(model, dv), sst2_small.dev.labels) == result.best_accuracy
