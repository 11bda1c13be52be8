import pytest

from trainables.config import PARAMS, check_value, parse_stages, resolve_config
from trainables.errors import ConfigError


def test_resolve_fills_student_defaults_and_every_key():
    cfg = resolve_config({"student": "bilstm", "embedding": "char"})
    assert set(cfg) == set(PARAMS)
    assert (cfg["hidden_dim"], cfg["classifier_dim"], cfg["max_length"]) == (150, 200, 256)
    rnn = resolve_config({"student": "rnn", "vocab_size": 1000})
    assert (rnn["hidden_dim"], rnn["classifier_dim"], rnn["max_length"], rnn["hash_buckets"]) == (100, 100, 64, 0)
    ffn = resolve_config({"student": "ffn", "embedding": "hash", "embedding_dim": 25, "vocab_size": 5000})
    assert ffn["hash_buckets"] == 5000 * 2 // 25  # B = K k / d


def test_resolve_keeps_explicit_values_and_coerces_types():
    cfg = resolve_config({"student": "ffn", "hidden_dim": 32, "lr": 1, "epochs": 2.0})
    assert cfg["hidden_dim"] == 32 and isinstance(cfg["lr"], float) and cfg["epochs"] == 2 and isinstance(cfg["epochs"], int)


@pytest.mark.parametrize("partial, fragment", [
    ({"lrr": 0.1}, "unknown key 'lrr'"),
    ({"student": "cnn"}, "allowed: bilstm, rnn, ffn"),
    ({"alpha": 1.5}, "above its maximum"),
    ({"epochs": 1.5}, "must be an integer"),
    ({"lr": "fast"}, "must be a finite number"),
    ({"lr": float("nan")}, "must be a finite number"),
    ({"stages": "quantize,distill"}, "in that order"),
    ({"stages": "distill,squeeze"}, "stage 'squeeze' is not allowed"),
])
def test_resolve_rejects_bad_input_with_one_line(partial, fragment):
    with pytest.raises(ConfigError) as e:
        resolve_config(partial, where="x.yaml")
    assert fragment in str(e.value) and str(e.value).startswith("x.yaml") and "\n" not in str(e.value)


def test_parse_stages_order_and_check_value():
    assert parse_stages("distill, prune") == ("distill", "prune")
    assert check_value("batch_size", 32.0) == 32
    with pytest.raises(ConfigError):
        parse_stages("")


@pytest.mark.parametrize("student", ["bilstm", "rnn", "ffn"])
def test_resolving_a_resolved_config_changes_nothing(student):
    cfg = resolve_config({"student": student})
    assert resolve_config(cfg) == cfg


def test_parse_param_reads_mlflow_param_strings_as_declared_types():
    from trainables.config import parse_param

    assert parse_param("epochs", "3") == 3 and parse_param("epochs", "3.0") == 3
    assert isinstance(parse_param("epochs", "3.0"), int)
    assert parse_param("lr", "0.001") == 0.001 and parse_param("prune_structured", "True") is True
    assert parse_param("student", "bilstm") == "bilstm"
    for key, raw in (("epochs", "2.5"), ("lr", "fast"), ("prune_structured", "yes"), ("epochs", "inf")):
        with pytest.raises(ConfigError, match=f"param {key}="):
            parse_param(key, raw)
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        parse_param("colour", "red")


# values that the cross-key rules read, valid ones and ones a rule refuses in some combination
_GRID_POOL = {
    "student": ["bilstm", "rnn", "ffn", "transformer"],
    "embedding": ["hash", "char", "bpe", "glove"],
    "hidden_dim": [0, 1, 50],
    "prune_targets": ["uniform", "thesis"],
    "sparsity_embedding": [0.0, 0.5],
    "sparsity_encoder": [0.3],
    "sparsity_classifier": [0.1],
    "stages": ["distill", "prune", "distill,prune", "distill,quantize", "distill,prune,quantize"],
    "prune_schedule": ["oneshot", "gradual", "imp"],
    "finetune_epochs": [0, 1, 2],
    "rewind_epoch": [0, 1, 3],
    "epochs": [1, 2, 4],
    "bits_embedding": [2, 9, 16],
    "bits_encoder": [4, 8, 17, 32],
    "bits_classifier": [3, 31],
    "quant_method": ["affine", "fp16"],
    "lr": [1e-3, 1e-2],
    "classifier_dim": [0, 10],
}


def test_rule_groups_find_every_refused_grid_config():
    """RULE_GROUPS is complete: on random grids, check_config_grid refuses exactly the grids in
    which some config, tried one by one, is refused by resolve_config."""
    import itertools
    import random

    from trainables.config import check_config_grid

    rng = random.Random(0)
    refused = accepted = 0
    for _ in range(400):
        keys = rng.sample(sorted(_GRID_POOL), rng.randint(1, 8))
        grid = {k: rng.sample(_GRID_POOL[k], rng.randint(1, min(2, len(_GRID_POOL[k])))) for k in keys}
        brute = False
        for combo in itertools.product(*grid.values()):
            try:
                resolve_config(dict(zip(grid, combo)))
            except ConfigError:
                brute = True
                break
        try:
            check_config_grid(grid, "grid")
            found = False
        except ConfigError as e:
            found = True
            assert str(e).startswith("grid") and "\n" not in str(e)
        assert found == brute, grid
        refused, accepted = refused + found, accepted + (not found)
    assert refused > 50 and accepted > 50  # both outcomes are exercised


def test_check_config_grid_names_the_combination_and_caps_its_size():
    from trainables.config import MAX_GRID_CONFIGS, check_config_grid

    with pytest.raises(ConfigError, match=r"^s\.yaml: a trial with student=bilstm, hidden_dim=0: 'hidden_dim' = 0"):
        check_config_grid({"student": ["bilstm", "ffn"], "hidden_dim": [50, 0]}, "s.yaml")
    assert check_config_grid({"student": ["bilstm", "ffn"], "hidden_dim": [50, 60]}, "s.yaml") >= 4  # every pair
    big = {"stages": ["distill,prune"], "epochs": list(range(1, 400)), "rewind_epoch": list(range(0, 300)),
           "finetune_epochs": [1, 2]}
    assert 399 * 300 * 2 > MAX_GRID_CONFIGS
    with pytest.raises(ConfigError, match="combinations of stages, prune_schedule"):
        check_config_grid({**big, "prune_schedule": ["imp"]}, "s.yaml")


def test_params_of_runs_made_before_hash_buckets_resolve_to_the_same_shapes():
    """MLflow params of a hash-embedding run of an earlier version: vocab_size was the buckets."""
    from trainables.config import parse_param

    logged = {"student": "ffn", "embedding": "hash", "embedding_dim": "25", "vocab_size": "1000",
              "hash_token_space": "4000"}
    cfg = resolve_config({k: parse_param(k, v) for k, v in logged.items()})
    assert (cfg["vocab_size"], cfg["hash_buckets"]) == (4000, 1000) and "hash_token_space" not in cfg
    other = resolve_config({"embedding": "bpe", "vocab_size": 1000, "hash_token_space": 4000})
    assert other["vocab_size"] == 1000 and other["hash_buckets"] == 0
    with pytest.raises(ConfigError, match="no longer a key"):
        check_value("hash_token_space", 4000)
