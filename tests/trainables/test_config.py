import pytest

from trainables.config import PARAMS, check_value, parse_stages, resolve_config
from trainables.errors import ConfigError


def test_resolve_fills_student_defaults_and_every_key():
    cfg = resolve_config({"student": "bilstm", "embedding": "char"})
    assert set(cfg) == set(PARAMS)
    assert (cfg["hidden_dim"], cfg["classifier_dim"], cfg["max_length"]) == (150, 200, 256)
    rnn = resolve_config({"student": "rnn", "vocab_size": 1000})
    assert (rnn["hidden_dim"], rnn["classifier_dim"], rnn["max_length"], rnn["hash_token_space"]) == (100, 100, 64, 4000)


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
