"""The CLI's own behaviour: `teacher` end to end on a tiny model, and --set parsing."""

import json

import numpy as np
import pytest

import run_search
from trainables.errors import ConfigError


def test_teacher_subcommand_on_a_tiny_model(tmp_path, glue_dir, capsys):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from trainables.data.teacher import minilm_path

    base = tmp_path / "tiny"
    tok = AutoTokenizer.from_pretrained(minilm_path())
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32)).save_pretrained(base)
    tok.save_pretrained(base)
    data = tmp_path / "glue" / "SST-2"  # a few hundred real sentences
    data.mkdir(parents=True)
    for name, rows in (("train.tsv", 301), ("dev.tsv", 101)):
        lines = (glue_dir / "SST-2" / name).read_text().splitlines(keepends=True)[:rows]
        (data / name).write_text("".join(lines))
    out = tmp_path / "teacher"
    code = run_search.main(["teacher", "--task", "sst2", "--data-dir", str(data.parent), "--base", str(base),
                            "--out", str(out), "--epochs", "1", "--max-train-examples", "200", "--lr", "1e-3"])
    assert code == 0 and f"teacher for sst2 saved to {out}" in capsys.readouterr().out
    meta = json.loads((out / "teacher_meta.json").read_text())
    assert meta["train_examples"] == 200 and meta["base"] == str(base)
    with np.load(out / "logits_sst2.npz") as z:
        assert z["train"].shape == (300, 2) and z["dev"].shape == (100, 2)


def test_set_overrides_parse_yaml_scalars():
    assert run_search.parse_overrides(["epochs=2", "student=ffn", "lr=1e-3"]) == {"epochs": 2, "student": "ffn",
                                                                                   "lr": 1e-3}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        run_search.parse_overrides(["epochs"])
