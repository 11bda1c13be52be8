import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from spaces import SPACES_DIR, load_space, parse_objectives, parse_space
from trainables.config import PARAMS, resolve_config
from trainables.errors import ConfigError


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid_and_resolve(path):
    space = load_space(path)
    assert space.params
    for point in space.initial_points:
        resolve_config({**space.fixed, **point})


def test_distributions_map_to_tune_domains():
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space({"params": {"student": {"choice": ["ffn", "rnn"]}, "lr": {"loguniform": [1e-4, 1e-2]},
                                    "alpha": {"uniform": [0, 1]}, "hidden_dim": {"int": [10, 20]},
                                    "vocab_size": {"logint": [500, 5000]}, "epochs": 2}}, "inline")
    tune_space = space.tune_space()
    assert isinstance(tune_space["student"], Categorical) and tune_space["student"].categories == ["ffn", "rnn"]
    lr = tune_space["lr"]
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2) and "LogUniform" in type(lr.get_sampler()).__name__
    assert isinstance(tune_space["hidden_dim"], Integer) and tune_space["hidden_dim"].upper == 21  # inclusive high
    assert tune_space["epochs"] == 2
    fixed = space.with_fixed({"student": "ffn"})
    assert "student" not in fixed.params and fixed.fixed["student"] == "ffn"


@pytest.mark.parametrize("doc, fragment", [
    ({"params": {"lrr": {"uniform": [0, 1]}}}, "unknown key 'lrr'"),
    ({"params": {"lr": {"uniform": [0.1, 0.01]}}}, "low must be below high"),
    ({"params": {"lr": {"loguniform": [0, 0.1]}}}, "needs low > 0"),
    ({"params": {"student": {"choice": []}}}, "'choice' is empty"),
    ({"params": {"student": {"choice": ["cnn"]}}}, "allowed: bilstm, rnn, ffn"),
    ({"params": {"alpha": {"uniform": [0, 2]}}}, "above its maximum"),
    ({"params": {"lr": {"normal": [0, 1]}}}, "unknown distribution 'normal'"),
    ({"params": {"epochs": {"uniform": [1, 3]}}}, "is an integer"),
    ({"params": {}}, "non-empty mapping"),
    ({"params": {"lr": 0.1}, "extra": 1}, "unknown top-level key 'extra'"),
    ({"params": {"lr": {"uniform": [0.1, 0.2]}}, "initial_points": [{"lr": 0.5}]}, "outside its distribution"),
    ({"params": {"lr": {"uniform": [0.1, 0.2]}, "alpha": {"uniform": [0, 1]}}, "initial_points": [{"lr": 0.15}]},
     "missing searched key(s) alpha"),
    ({"params": {"lr": 0.1}, "objectives": {"bleu": "max"}}, "unknown objective 'bleu'"),
])
def test_malformed_spaces_name_file_and_key(doc, fragment):
    with pytest.raises(ConfigError) as e:
        parse_space(doc, "bad.yaml")
    msg = str(e.value)
    assert fragment in msg and msg.startswith("bad.yaml") and "\n" not in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_space(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "none.yaml")


def test_objective_strings():
    assert parse_objectives("accuracy,size_bytes:min", "--objectives") == {"accuracy": "max", "size_bytes": "min"}
    with pytest.raises(ConfigError, match="direction must be max or min"):
        parse_objectives({"accuracy": "up"}, "x")


_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                    st.lists(st.one_of(st.integers(-5, 5), st.floats(-1, 1), st.text(max_size=4)), max_size=3))
_specs = st.one_of(_values, st.dictionaries(st.sampled_from(["choice", "uniform", "loguniform", "int", "logint", "x"]),
                                            _values, max_size=2))
_docs = st.one_of(_values, st.fixed_dictionaries({"params": st.dictionaries(
    st.one_of(st.sampled_from(sorted(PARAMS)), st.text(max_size=6)), _specs, max_size=4)}))


@settings(max_examples=300, deadline=None)
@given(_docs)
def test_any_document_is_either_a_space_or_a_config_error(doc):
    try:
        space = parse_space(doc, "fuzz.yaml")
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("fuzz.yaml")
    else:
        assert space.params or space.fixed
        yaml.safe_dump({k: v.args for k, v in space.params.items()})
