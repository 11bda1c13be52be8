import numpy as np
import pytest

from trainables.data.glue import check_task, content_hash, load_split
from trainables.errors import ConfigError


def test_sst2_official_files_complete(glue_dir):
    train = load_split("sst2", "train", glue_dir)
    dev = load_split("SST-2", "dev", glue_dir)
    assert (len(train), len(dev)) == (67_349, 872)
    assert np.bincount(train.labels).tolist() == [29_780, 37_569]
    assert np.bincount(dev.labels).tolist() == [428, 444]
    assert dev.text_a[0] == "it 's a charming and often affecting journey ."  # trailing space stripped
    assert dev.text_b is None and not dev.is_pair


def test_tsv_read_with_quoting_off(tmp_path):
    (tmp_path / "SST-2").mkdir()
    rows = ['" a quote opens here \t1', "and closes \" here \t0", '"fully quoted" \t1']
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    split = load_split("sst2", "train", tmp_path)
    assert split.text_a == ['" a quote opens here', 'and closes " here', '"fully quoted"']
    assert split.labels.tolist() == [1, 0, 1]


def test_pair_tasks_use_subsets_and_labels(glue_dir):
    qqp = load_split("qqp", "dev", glue_dir)
    assert len(qqp) == 1000 and qqp.is_pair and np.bincount(qqp.labels).tolist() == [623, 377]
    mnli_dev = load_split("mnli", "dev", glue_dir)
    assert len(mnli_dev) == 9815 and np.bincount(mnli_dev.labels).tolist() == [3479, 3123, 3213]
    assert mnli_dev.text_a[0] == "The new rights are nice enough"
    mnli_train = load_split("mnli", "train", glue_dir)
    assert len(mnli_train) == 8999 and mnli_train.source.endswith("pcp_subset/train.json")


def test_official_tsv_layout_for_pairs(tmp_path, glue_dir):
    (tmp_path / "QQP").mkdir()
    src = glue_dir / "QQP" / "kshot" / "16-13" / "train.tsv"
    (tmp_path / "QQP" / "train.tsv").write_bytes(src.read_bytes())
    qqp = load_split("qqp", "train", tmp_path)
    assert len(qqp) == 32 and np.bincount(qqp.labels).tolist() == [16, 16]
    assert qqp.source.endswith("QQP/train.tsv")


def test_content_hash_depends_on_rows_not_format(glue_dir):
    dev = load_split("sst2", "dev", glue_dir)
    assert dev.data_hash == content_hash(dev.text_a, None, dev.labels)
    flipped = dev.labels.copy()
    flipped[0] = 1 - flipped[0]
    assert content_hash(dev.text_a, None, flipped) != dev.data_hash


def test_bad_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown task 'cola'"):
        check_task("cola")
    with pytest.raises(ConfigError, match="does not exist"):
        load_split("sst2", "train", tmp_path / "nope")
    with pytest.raises(ConfigError, match="no sst2 train file"):
        load_split("sst2", "train", tmp_path)
    with pytest.raises(ConfigError, match="has no split"):
        load_split("sst2", "dev_mismatched", tmp_path)
