"""The truncated-transformer student: initialisation, joint pair inputs, Patient KD, artifact, trial."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TEACHERS
from trainables.config import resolve_config
from trainables.data.glue import Split, load_split
from trainables.errors import ConfigError
from trainables.formats.transformer import FORMAT
from trainables.models.transformer import (
    from_teacher,
    pkd_layer_map,
    pkd_loss,
    prepare,
    teacher_cls_states,
)
from trainables.training.encoded import encode_split, predict


@pytest.fixture(scope="module")
def sst2_teacher_model(sst2_teacher):
    from trainables.data.teacher import load_teacher

    return load_teacher(str(sst2_teacher))


def _cfg(**kw):
    return resolve_config({"student": "transformer", "transformer_layers": 2, "dropout": 0.0, **kw})


def test_pkd_skip_layer_map():
    assert pkd_layer_map(2, 6) == [(1, 3)]
    assert pkd_layer_map(3, 6) == [(1, 2), (2, 4)]
    assert pkd_layer_map(4, 6) == [(1, 2), (2, 3), (3, 5)]  # ceil(j * L / k)
    assert pkd_layer_map(6, 12) == [(1, 2), (2, 4), (3, 6), (4, 8), (5, 10)]  # the paper's BERT12 -> 6 PKD-Skip
    assert pkd_layer_map(1, 6) == []


def test_starts_from_the_teachers_first_layers(sst2_teacher, sst2_teacher_model, sst2_splits):
    teacher, _ = sst2_teacher_model
    _, student = from_teacher(str(sst2_teacher), _cfg(), 2, pair=False)
    sd, td = student.model.state_dict(), teacher.state_dict()
    assert len(student.model.bert.encoder.layer) == 2
    for key in ("bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight",
                "bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(sd[key], td[key]), key
    assert not any(k.startswith("bert.encoder.layer.2.") for k in sd)
    # all 6 layers kept: the student is the teacher, through the students' encoding and call path
    encoder, full = from_teacher(str(sst2_teacher), _cfg(transformer_layers=6), 2, pair=False)
    _, dev = sst2_splits
    logits = predict(full, encode_split(dev, encoder, 64, rows=np.arange(64)))
    with np.load(sst2_teacher / "logits_sst2.npz") as z:
        assert np.abs(logits - z["dev"][:64]).max() < 0.25  # shipped logits: bf16 autocast


def test_pairs_are_one_joint_input_like_the_teacher(glue_dir):
    from transformers import AutoTokenizer

    path = TEACHERS / "minilm-l6-qqp"
    qqp = load_split("qqp", "dev", glue_dir)
    encoder, student = from_teacher(str(path), _cfg(), 2, pair=True)
    enc = encode_split(qqp, encoder, 64, rows=np.arange(16))
    ids, mask, types = student.joint_inputs(*enc.inputs(slice(0, 16)))
    ref = AutoTokenizer.from_pretrained(path)(qqp.text_a[:16], qqp.text_b[:16], padding=True, return_tensors="pt")
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(mask, ref["attention_mask"])
    assert torch.equal(types, ref["token_type_ids"])


def test_pkd_loss_and_teacher_states(sst2_teacher, sst2_teacher_model, sst2_splits):
    s = torch.randn(4, 2, 8)
    t = torch.randn(4, 2, 8)
    expected = sum(((s[i, j] / s[i, j].norm() - t[i, j] / t[i, j].norm()) ** 2).sum() for i in range(4) for j in range(2)) / 4
    assert torch.allclose(pkd_loss(s, t), expected)
    assert pkd_loss(s, 3 * s).item() < 1e-10  # scale-free
    teacher, tok = sst2_teacher_model
    train, _ = sst2_splits
    states = teacher_cls_states(teacher, tok, train, [3, 6], rows=np.arange(10), batch_size=4)
    assert states.shape == (10, 2, 384) and torch.allclose(states.norm(dim=-1), torch.ones(10, 2), atol=1e-5)
    with torch.no_grad():
        hidden = teacher(**tok(train.text_a[:10], padding=True, return_tensors="pt"), output_hidden_states=True).hidden_states
    ref = torch.nn.functional.normalize(hidden[3][:, 0], dim=-1)
    assert (states[:, 0] * ref).sum(-1).min() > 0.98  # cosine; bf16 autocast


def test_patient_kd_term_trains_the_kept_layers(sst2_teacher, sst2_splits):
    train, _ = sst2_splits
    split = Split("sst2", "train", train.text_a[:16], None, train.labels[:16], "subset")
    cfg = _cfg(transformer_layers=3, pkd_beta=10.0)
    encoder, model, aux, metrics = prepare(str(sst2_teacher), cfg, split, None, 2, pair=False)
    assert model.keep_layers == (1, 2) and metrics["pkd_teacher_time_s"] > 0  # teacher layers 2 and 4
    enc = encode_split(split, encoder, 64)
    idx = torch.arange(16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(4):
        model(*enc.inputs(idx))
        loss = aux(idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0 and losses[-1] < 0.7 * losses[0]
    assert prepare(str(sst2_teacher), _cfg(), split, None, 2, pair=False)[2] is None  # pkd_beta 0: no teacher pass


def test_bad_configs_are_config_errors(sst2_teacher):
    with pytest.raises(ConfigError, match="exceeds the teacher's 6 layers"):
        from_teacher(str(sst2_teacher), _cfg(transformer_layers=7), 2, pair=False)
    with pytest.raises(ConfigError, match="teacher's folder"):
        from_teacher(None, _cfg(), 2, pair=False)
    with pytest.raises(ConfigError, match="3 labels"):
        from_teacher(str(TEACHERS / "minilm-l6-mnli"), _cfg(), 2, pair=True)
    with pytest.raises(ConfigError, match="no encoder target for 'transformer'"):
        _cfg(stages="distill,prune", prune_targets="thesis")  # Table 6.3 has no transformer row


def test_pruned_and_quantized_transformer_student_packs_and_reloads_exactly(sst2_teacher, sst2_splits, tmp_path):
    from trainables.compression.prune import PARTS, prunable_tensors, prune_student, sparsity_by_part
    from trainables.compression.quantize import quantize_student
    from trainables.formats import load_student, packed
    from trainables.formats.transformer import save_transformer
    from trainables.kernels import to_int8_dynamic

    cfg = _cfg(transformer_layers=1, stages="distill,prune,quantize", sparsity=0.5, bits_embedding=4)
    encoder, model = from_teacher(str(sst2_teacher), cfg, 2, pair=False)
    tensors = prunable_tensors(model)
    state = model.state_dict()
    assert {t.part for t in tensors} == set(PARTS) and all(t.key in state for t in tensors)
    assert "model.bert.encoder.layer.0.attention.self.query.weight" in {t.key for t in tensors}
    assert {t.key for t in tensors if t.part == "classifier"} == {"model.bert.pooler.dense.weight",
                                                                   "model.classifier.weight"}
    fp32 = save_transformer(model, cfg, encoder, 2, False, tmp_path / "fp32.safetensors")

    prune_student(model, cfg)
    for part, (zeros, n) in sparsity_by_part(model).items():
        assert zeros / n == pytest.approx(0.5, abs=1e-4), part  # round(0.5 x n) per tensor
    quantized = quantize_student(model, cfg)
    assert {quantized.plan[t.key] for t in tensors if t.part == "embedding"} == {4}
    assert quantized.plan["model.bert.embeddings.LayerNorm.weight"] == 32  # vectors stay float32
    _, dev = sst2_splits
    dev_enc = encode_split(dev, encoder, 64, rows=np.arange(128))
    expected = predict(model, dev_enc)
    path = tmp_path / "student.packed.safetensors"
    sizes = packed.save_packed(model, cfg, encoder, 2, False, path, quantized.tensors, quantized.runtime)
    loaded, loaded_encoder, loaded_cfg = load_student(path)
    assert loaded_cfg["student"] == "transformer"
    assert np.array_equal(predict(loaded, encode_split(dev, loaded_encoder, 64, rows=np.arange(128))), expected)
    assert sizes["size_bytes"] < 0.2 * fp32["size_bytes"]  # half the weights, 4-8 bits each
    # iterative magnitude pruning rewinds a transformer student too (its non-persistent buffers stay)
    imp_cfg = {**_cfg(transformer_layers=1, stages="distill,prune", prune_schedule="imp", imp_rounds=2,
                      finetune_epochs=1, sparsity=0.5, batch_size=8), "optimizer": "sgd", "lr": 0.0}
    _, ticket = from_teacher(str(sst2_teacher), imp_cfg, 2, pair=False)
    start = {k: v.clone() for k, v in ticket.state_dict().items()}
    with torch.no_grad():
        for p in ticket.parameters():
            p.add_(torch.randn_like(p))  # "trained" weights, away from the rewind point
    small = encode_split(dev, encoder, 32, teacher=np.zeros((len(dev), 2), np.float32), rows=np.arange(8))
    prune_student(ticket, imp_cfg, small, small, rewind_state=start)
    for key, value in ticket.state_dict().items():
        kept = value != 0
        assert torch.equal(value[kept], start[key][kept]), key

    # torch's int8 kernels run every Linear of a transformer student (here all 6 layers: the
    # untrained k=1 head's logits are too flat, std ~0.01, for agreement to mean anything)
    encoder6, full = from_teacher(str(sst2_teacher), _cfg(transformer_layers=6), 2, pair=False)
    enc6 = encode_split(dev, encoder6, 64, rows=np.arange(128))
    int8 = to_int8_dynamic(full)
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    assert (predict(int8, enc6).argmax(1) == predict(full, enc6).argmax(1)).mean() >= 0.95


def test_trial_saves_one_artifact_with_its_tokenizer(sst2_small, sst2_teacher, tmp_path, monkeypatch):
    import gzip
    import json

    from trainables import formats as artifact
    from trainables.formats import load_student, read_metadata
    from trainables.tracking import MemoryTracker
    from trainables.trial import run_trial

    dev = Split("sst2", "dev", sst2_small.dev.text_a[:100], None, sst2_small.dev.labels[:100], "subset")
    data = sst2_small.__class__(**{**sst2_small.__dict__, "dev": dev, "dev_logits": sst2_small.dev_logits[:100],
                                   "teacher_path": str(sst2_teacher)})
    cfg = {"student": "transformer", "transformer_layers": 2, "pkd_beta": 10.0, "max_train_examples": 64,
           "epochs": 1, "lr": 1e-4, "batch_size": 32, "embedding": "hash"}
    # gzip level 9 of a 63 MB float file takes ~90 s on 2 cores; the measure is tested in test_artifact
    monkeypatch.setattr(artifact, "file_sizes", lambda p: {"size_bytes": Path(p).stat().st_size, "gzip_bytes": len(
        gzip.compress(Path(p).read_bytes(), compresslevel=1))})
    tracker = MemoryTracker()
    final = run_trial(cfg, data, tmp_path, tracker)
    path = tmp_path / "model" / "student.safetensors"
    assert final["size_bytes"] == path.stat().st_size and final["num_params"] > 10_000_000
    assert tracker.params["embedding"] == "hash" and "pkd_teacher_time_s" in tracker.metrics
    meta = read_metadata(path)
    assert meta["featherweight_format"] == FORMAT and '"WordPiece"' in json.loads(meta["encoder"])["tokenizer"]
    assert '"num_hidden_layers": 2' in meta["model_config"]
    model, encoder, saved_cfg = load_student(path)  # no teacher needed to load it
    assert saved_cfg["student"] == "transformer" and encoder.kind == "wordpiece"
    acc = (predict(model, encode_split(dev, encoder, saved_cfg["max_length"])).argmax(1) == dev.labels).mean() * 100
    assert acc == pytest.approx(final["accuracy"])
    # as an MLflow pyfunc model (models-from-code; the same file inside), with the same predictions
    import mlflow.pyfunc
    import pandas as pd

    from trainables.serving import save_pyfunc

    assert tracker.models[0]["name"] == "transformer"
    pyfunc = mlflow.pyfunc.load_model(str(save_pyfunc(path, tmp_path / "pyfunc")))
    labels = pyfunc.predict(pd.DataFrame({"text": dev.text_a}))["label"].to_numpy()
    assert (labels == dev.labels).mean() * 100 == pytest.approx(final["accuracy"])


def test_trial_distils_prunes_and_quantizes_a_transformer_student(sst2_small, sst2_teacher, tmp_path, monkeypatch):
    import gzip

    from trainables import formats as artifact
    from trainables.formats import load_student
    from trainables.tracking import MemoryTracker
    from trainables.trial import run_trial

    dev = Split("sst2", "dev", sst2_small.dev.text_a[:100], None, sst2_small.dev.labels[:100], "subset")
    data = sst2_small.__class__(**{**sst2_small.__dict__, "dev": dev, "dev_logits": sst2_small.dev_logits[:100],
                                   "teacher_path": str(sst2_teacher)})
    cfg = {"student": "transformer", "transformer_layers": 1, "max_train_examples": 64, "epochs": 1, "lr": 1e-4,
           "batch_size": 32, "stages": "distill,prune,quantize", "sparsity": 0.5, "bits_embedding": 4}
    monkeypatch.setattr(artifact, "file_sizes", lambda p: {"size_bytes": Path(p).stat().st_size, "gzip_bytes": len(
        gzip.compress(Path(p).read_bytes(), compresslevel=1))})  # as above: a fast gzip of the dense file
    tracker = MemoryTracker()
    final = run_trial(cfg, data, tmp_path, tracker)
    last = {k: v[-1][1] for k, v in tracker.metrics.items()}
    assert last["prune_sparsity_achieved"] == pytest.approx(0.5, abs=1e-4)
    assert final["size_bytes"] < 0.2 * last["distill_size_bytes"]  # 50% zeros, 4-8 bit codes
    path = tmp_path / "model" / "student.packed.safetensors"
    assert final["size_bytes"] == path.stat().st_size
    model, encoder, saved_cfg = load_student(path)
    acc = (predict(model, encode_split(dev, encoder, saved_cfg["max_length"])).argmax(1) == dev.labels).mean() * 100
    assert acc == pytest.approx(final["accuracy"])


def test_patient_kd_also_for_a_student_given_by_init_run_id(sst2_small, sst2_teacher):
    from trainables.trial import prepare as prepare_trial

    data = sst2_small.__class__(**{**sst2_small.__dict__, "teacher_path": str(sst2_teacher)})
    cfg = {**_cfg(pkd_beta=10.0), "max_train_examples": 32}
    encoder, model = from_teacher(str(sst2_teacher), cfg, 2, pair=False)
    prep = prepare_trial(cfg, data, init=(encoder, model))  # init_run_id: the earlier run's student
    assert prep.model is model and prep.aux_loss is not None and prep.metrics["pkd_teacher_time_s"] > 0
    assert model.keep_layers == (1,)


def test_pairs_on_a_single_segment_model_use_segment_zero():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from trainables.models.transformer import TransformerStudent

    torch.manual_seed(0)
    conf = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=40, type_vocab_size=1, num_labels=2)
    student = TransformerStudent(RobertaForSequenceClassification(conf), pair=True).eval()
    ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
    out = student(ids, torch.tensor([4, 3]), ids, torch.tensor([4, 3]))  # segment 1 would be out of range
    assert out.shape == (2, 2) and torch.isfinite(out).all()
