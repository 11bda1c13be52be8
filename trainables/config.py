"""The trial configuration: one flat dict whose keys are MLflow params.

Every key a search space, an exported config or the CLI may set is declared once in
:data:`PARAMS`, with its type, allowed values and default. :func:`resolve_config` fills the
defaults and validates a partial config; :class:`ConfigError` is the one-line, user-facing
error every layer raises for bad input (``run_search.py`` turns it into exit code 2).

Example:
    >>> cfg = resolve_config({"student": "ffn", "embedding": "hash", "lr": 0.01})
    >>> cfg["hidden_dim"], cfg["alpha"]
    (100, 0.0)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainables.errors import ConfigError
from trainables.untrusted import short

TASKS = ("sst2", "qqp", "mnli")
STUDENTS = ("bilstm", "rnn", "ffn", "transformer")
EMBEDDINGS = ("hash", "char", "bpe", "glove")
STAGES = ("distill", "prune", "quantize")


@dataclass(frozen=True)
class Param:
    """Declaration of one trial-config key.

    Attributes:
        kind: ``"int"``, ``"float"``, ``"str"`` or ``"bool"``.
        default: value used when the config does not set the key (``None``: resolved from
            the student, see :func:`resolve_config`).
        choices: allowed values for ``str`` keys (``None``: any string).
        low, high: inclusive bounds for numeric keys (``None``: unbounded).
        help: one line for ``--help`` and error messages, with the unit.
    """

    kind: str
    default: Any
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    help: str = ""


PARAMS: dict[str, Param] = {
    # what and how reproducibly
    "task": Param("str", "sst2", TASKS, help="GLUE task"),
    "seed": Param("int", 0, low=0, high=2**32 - 1, help="random seed of the trial (torch, numpy, python)"),
    "max_train_examples": Param("int", 0, low=0, help="use the first N shuffled training rows; 0 = all"),
    # student
    "student": Param("str", "bilstm", STUDENTS, help="student architecture"),
    "embedding": Param("str", "bpe", EMBEDDINGS, help="token embedding type"),
    "embedding_dim": Param("int", 100, low=1, high=4096, help="embedding dimension"),
    "vocab_size": Param("int", 5000, low=16, high=100_000_000,
                        help="vocabulary size (hash: ids words are hashed into, K; bpe: merges target; "
                             "glove/char: most frequent)"),
    "hash_functions": Param("int", 2, low=1, high=16, help="k hash functions of hash embeddings"),
    "hash_buckets": Param("int", 0, low=0, high=100_000_000,
                          help="hash: component vectors B shared by the K ids; 0 = vocab_size x hash_functions / "
                               "embedding_dim (as many weights as the importance table)"),
    "hidden_dim": Param("int", None, low=0, high=8192,
                        help="encoder hidden size (default bilstm 150, rnn 100, ffn 100; transformer: 0, unused)"),
    "classifier_dim": Param("int", None, low=0, high=8192,
                            help="classifier hidden size (default bilstm 200, rnn 100; ffn: 0, unused)"),
    "pooling": Param("str", "last", ("last", "max"), help="bilstm/rnn sentence vector: last states or max over time"),
    "max_length": Param("int", 0, low=0, high=4096, help="tokens kept per sentence; 0 = 64 (char: 256)"),
    "dropout": Param("float", 0.1, low=0.0, high=0.95, help="dropout probability"),
    # optimisation
    "optimizer": Param("str", "adam", ("adam", "adamw", "sgd"), help="optimizer"),
    "lr": Param("float", 1e-3, low=1e-7, high=10.0, help="learning rate"),
    "weight_decay": Param("float", 0.0, low=0.0, high=1.0, help="weight decay"),
    "batch_size": Param("int", 64, low=1, high=65536, help="training batch size (examples)"),
    "max_grad_norm": Param("float", 0.0, low=0.0, high=1e6,
                           help="clip the gradients' global L2 norm to this before each step; 0 = no clipping"),
    "epochs": Param("int", 3, low=1, high=1000, help="maximum training epochs"),
    "patience": Param("int", 2, low=0, high=1000, help="early stopping: epochs without dev improvement; 0 = off"),
    # distillation (Featherweight thesis section 5; Hinton et al. 2015)
    "alpha": Param("float", 0.0, low=0.0, high=1.0, help="weight of the label CE loss; 1 - alpha on distillation"),
    "temperature": Param("float", 1.0, low=1e-3, high=100.0, help="softmax temperature of the kl loss"),
    "distill_loss": Param("str", "mse", ("mse", "kl"), help="mse on raw logits, or T^2 * KL on softened outputs"),
    "stages": Param("str", "distill", help="comma-separated subset of distill,prune,quantize, in that order"),
    "init_run_id": Param("str", "", help="start from the student saved by this MLflow run of the same store "
                                         "(further compression of a selected student); '' = a new student"),
    # transfer-set augmentation (trainables/data/augment.py; Tang et al. 2019, section 3.3)
    "augment_n": Param("int", 0, low=0, high=1000,
                       help="synthetic examples per training sentence, labelled by the teacher; 0 = off"),
    "augment_p": Param("float", 0.1, low=0.0, high=0.5,
                       help="per-word probability of masking, and of GloVe-neighbour replacement (each)"),
    # truncated-transformer student (trainables/models/transformer.py; Sun et al. 2019)
    "transformer_layers": Param("int", 2, low=1, high=48,
                                help="student=transformer: the teacher's first k encoder layers kept"),
    "pkd_beta": Param("float", 0.0, low=0.0, high=100_000.0,
                      help="student=transformer: weight of the Patient-KD [CLS] loss (PKD-Skip); 0 = off"),
    # pruning (stage "prune"; trainables/compression/prune.py; Featherweight thesis chapter 6, Table 6.3)
    "sparsity": Param("float", 0.5, low=0.0, high=0.99,
                      help="fraction of prunable weights set to zero (global scope, and default of each part)"),
    "sparsity_embedding": Param("float", None, low=0.0, high=0.99,
                                help="local scope: fraction of embedding weights pruned (default: see prune_targets)"),
    "sparsity_encoder": Param("float", None, low=0.0, high=0.99,
                              help="local scope: fraction of encoder (LSTM/RNN) weights pruned (default: see prune_targets)"),
    "sparsity_classifier": Param("float", None, low=0.0, high=0.99,
                                 help="local scope: fraction of classifier (Linear) weights pruned (default: see prune_targets)"),
    "prune_targets": Param("str", "uniform", ("uniform", "thesis"),
                           help="unset per-part sparsities: uniform = sparsity; thesis = Featherweight Table 6.3"),
    "prune_method": Param("str", "topv", ("magnitude", "topv"),
                          help="topv: keep the largest (1 - sparsity) fraction; magnitude: prune |w| < prune_threshold x std"),
    "prune_threshold": Param("float", 1.0, low=0.0, high=100.0,
                             help="magnitude method: threshold in standard deviations of the tensor's weights"),
    "prune_scope": Param("str", "local", ("local", "global"),
                         help="local: each tensor to its part's target; global: one ranking over all prunable weights"),
    "prune_structured": Param("bool", False, help="prune whole rows (output units, gate rows, tokens) by L2 norm"),
    "prune_schedule": Param("str", "oneshot", ("oneshot", "gradual", "imp"),
                            help="oneshot after training, gradual over finetune_epochs (Zhu and Gupta 2017), or imp: "
                                 "iterative magnitude pruning with weight rewinding (Frankle and Carbin 2019)"),
    "finetune_epochs": Param("int", 0, low=0, high=1000,
                             help="distillation epochs after pruning (gradual: one pruning step per epoch; "
                                  "imp: retraining epochs per round)"),
    "imp_rounds": Param("int", 3, low=1, high=100, help="imp: prune-rewind-retrain rounds"),
    "rewind_epoch": Param("int", 0, low=0, high=1000,
                          help="imp: rewind surviving weights to their values after this distillation epoch "
                               "(0 = the weights distillation started from; an early stop: its last epoch; "
                               "Frankle et al. 2020)"),
    # quantization (stage "quantize"; trainables/compression/quantize.py)
    "quant_method": Param("str", "affine", ("affine", "int8_dynamic", "fp16"),
                          help="affine: b-bit per-row weights; int8_dynamic: also torch int8 kernels; fp16: half"),
    "bits_embedding": Param("int", 8, low=2, high=32, help="embedding weight bits: 2-8 (affine), 16 (fp16) or 32 (kept)"),
    "bits_encoder": Param("int", 8, low=2, high=32, help="encoder weight bits: 2-8 (affine), 16 (fp16) or 32 (kept)"),
    "bits_classifier": Param("int", 8, low=2, high=32, help="classifier weight bits: 2-8 (affine), 16 (fp16) or 32 (kept)"),
    "qat_epochs": Param("int", 0, low=0, high=1000, help="quantization-aware distillation epochs (fake quant + STE)"),
}

# Per-part pruning targets of the Featherweight thesis, Table 6.3 (fractions): encoder by student,
# classifier ("Linear"), embedding by type. GloVe is not in the table (prune_targets=thesis refuses it).
THESIS_SPARSITY = {
    "encoder": {"bilstm": 0.5, "rnn": 0.1, "ffn": 0.0},
    "classifier": 0.125,
    "embedding": {"hash": 0.0, "char": 0.3, "bpe": 0.4},
}
BITS_ALLOWED = (2, 3, 4, 5, 6, 7, 8, 16, 32)

# keys that define a student's architecture and tokenizer: a trial started from an earlier
# run's student (init_run_id) takes these from that student's saved config
ARCHITECTURE_KEYS = ("student", "embedding", "embedding_dim", "vocab_size", "hash_functions", "hash_buckets",
                     "hidden_dim", "classifier_dim", "pooling", "max_length", "transformer_layers")

#: Longest text value of a string key (characters).
MAX_TEXT = 1000

_DEFAULT_HIDDEN = {"bilstm": 150, "rnn": 100, "ffn": 100, "transformer": 0}  # transformer: the teacher's (unused)
_DEFAULT_CLASSIFIER = {"bilstm": 200, "rnn": 100, "ffn": 0, "transformer": 0}


def _check_value(key: str, value: Any, where: str) -> Any:
    spec = PARAMS[key]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
        raise ConfigError(f"{where}: '{key}' = {value} is out of range")  # before math.isfinite overflows
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or float(value) != int(value):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {short(value)}")
        value = int(value)
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: '{key}' must be a finite number, got {short(value)}")
        value = float(value)
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {short(value)}")
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {short(value)}")
        if len(value) > MAX_TEXT or not value.isprintable():
            raise ConfigError(f"{where}: '{key}' must be printable text of at most {MAX_TEXT} characters, "
                              f"got {short(value)}")
        if spec.choices is not None and value not in spec.choices:
            raise ConfigError(f"{where}: '{key}' = {short(value)} is not allowed; allowed: {', '.join(spec.choices)}")
    if spec.kind in ("int", "float"):
        if spec.low is not None and value < spec.low:
            raise ConfigError(f"{where}: '{key}' = {value!r} is below its minimum {spec.low:g}")
        if spec.high is not None and value > spec.high:
            raise ConfigError(f"{where}: '{key}' = {value!r} is above its maximum {spec.high:g}")
    return value


#: Keys of earlier versions: the type each had and what replaced it (:func:`upgrade_config`
#: translates saved configs).
RETIRED_KEYS = {
    "hash_token_space": ("int", "hash embeddings now read vocab_size as the ids words are hashed into (K) and "
                                "hash_buckets as the shared component vectors (B)"),
}


def upgrade_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier version in today's keys; other configs are returned as a copy.

    Earlier hash embeddings read ``vocab_size`` as the bucket count B and ``hash_token_space``
    (0: 4 x ``vocab_size``) as the hashed ids K. They are now ``hash_buckets`` and ``vocab_size``
    (Svenstrup et al. 2017 name them B and K; the Featherweight thesis's "vocabulary" is K), so
    a saved student keeps its exact shapes: ``{vocab_size: V, hash_token_space: T}`` becomes
    ``{vocab_size: T or 4V, hash_buckets: V}``; for other embeddings the retired key is dropped.
    """
    out = dict(config)
    if "hash_token_space" not in out:
        return out
    token_space = out.pop("hash_token_space")
    if out.get("embedding") == "hash" and "hash_buckets" not in out:
        buckets = int(out.get("vocab_size", PARAMS["vocab_size"].default))
        out["hash_buckets"] = buckets
        out["vocab_size"] = int(token_space) or 4 * buckets
    return out


def default_hash_buckets(vocab_size: int, hash_functions: int, embedding_dim: int) -> int:
    """B = K k / d, at least 1: the component table (B x d) holds as many weights as the
    importance table (K x k) (the default of Svenstrup et al.'s reference PyTorch port)."""
    return max(1, (vocab_size * hash_functions) // embedding_dim)


def check_key(key: str, where: str = "config") -> None:
    """Raise :class:`ConfigError` if ``key`` is not a trial-config key."""
    if key in RETIRED_KEYS:
        raise ConfigError(f"{where}: {key!r} is no longer a key: {RETIRED_KEYS[key][1]}")
    if key not in PARAMS:
        raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(PARAMS))}")


def check_value(key: str, value: Any, where: str = "config") -> Any:
    """Validate one value of ``key`` and return it coerced to the declared type.

    Raises:
        ConfigError: unknown key, wrong type, value outside bounds or choices.
    """
    check_key(key, where)
    return _check_value(key, value, where)


def parse_param(key: str, raw: str, where: str = "config") -> Any:
    """An MLflow param string (MLflow stores every param as text) as the type :data:`PARAMS`
    declares for ``key``: ``"3"`` or ``"3.0"`` -> 3 for an int, ``"0.5"`` -> 0.5, ``"True"`` -> True.
    Bounds and choices are not checked here (:func:`resolve_config` does).

    A retired key (:data:`RETIRED_KEYS`, logged by runs of earlier versions) parses as the type
    it had, so that :func:`resolve_config` can translate it (:func:`upgrade_config`).

    Raises:
        ConfigError: ``key`` is not a trial-config key, or ``raw`` does not parse as its type.
    """
    if key in RETIRED_KEYS:
        kind = RETIRED_KEYS[key][0]
    else:
        check_key(key, where)
        kind = PARAMS[key].kind
    try:
        if kind == "int":
            number = float(raw)
            if not number.is_integer():
                raise ValueError(raw)
            return int(number)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return {"true": True, "false": False}[raw.strip().lower()]
        return raw
    except (ValueError, KeyError, AttributeError, OverflowError):
        raise ConfigError(f"{where}: param {key}={raw!r} is not a valid {kind}") from None


def parse_stages(stages: str | Sequence[str], where: str = "config") -> tuple[str, ...]:
    """Parse ``"distill,prune"`` into ``("distill", "prune")``, checking names and order.

    Raises:
        ConfigError: unknown stage, repeated stage, stages out of order, or empty.
    """
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    if not names:
        raise ConfigError(f"{where}: 'stages' is empty; allowed: {', '.join(STAGES)}")
    for name in names:
        if name not in STAGES:
            raise ConfigError(f"{where}: stage {name!r} is not allowed; allowed: {', '.join(STAGES)}")
    if len(set(names)) != len(names) or sorted(names, key=STAGES.index) != names:
        raise ConfigError(f"{where}: 'stages' must list each of {', '.join(STAGES)} at most once, in that order")
    return tuple(names)


def resolve_config(partial: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate ``partial`` and fill every missing key with its default.

    Student-dependent defaults (``hidden_dim``, ``classifier_dim``, ``max_length``) are made
    explicit so that the resolved config alone reproduces a trial.

    Args:
        partial: any subset of :data:`PARAMS` keys.
        where: the source named in error messages (a file path, ``"--config"``...).

    Returns:
        A new dict with every key of :data:`PARAMS`, sorted by key.

    Raises:
        ConfigError: unknown key or invalid value (the message names key and allowed values).
    """
    cfg: dict[str, Any] = {}
    for key, value in upgrade_config(partial).items():
        cfg[key] = check_value(key, value, where)
    for key, spec in PARAMS.items():
        cfg.setdefault(key, spec.default)
    student = cfg["student"]
    if cfg["hidden_dim"] is None:
        cfg["hidden_dim"] = _DEFAULT_HIDDEN[student]
    if cfg["classifier_dim"] is None:
        cfg["classifier_dim"] = _DEFAULT_CLASSIFIER[student]
    if cfg["hash_buckets"] == 0 and cfg["embedding"] == "hash":
        cfg["hash_buckets"] = default_hash_buckets(cfg["vocab_size"], cfg["hash_functions"], cfg["embedding_dim"])
    if cfg["max_length"] == 0:
        cfg["max_length"] = 256 if cfg["embedding"] == "char" else 64
    cfg["stages"] = ",".join(parse_stages(cfg["stages"], where))
    if cfg["hidden_dim"] < 1 and student != "transformer":
        raise ConfigError(f"{where}: 'hidden_dim' = {cfg['hidden_dim']} is below its minimum 1 for student={student}")
    _resolve_compression(cfg, where)
    return dict(sorted(cfg.items()))


def _resolve_compression(cfg: dict[str, Any], where: str) -> None:
    """Make per-part sparsity targets explicit and check the pruning/quantization keys together."""
    for part in ("embedding", "encoder", "classifier"):
        key = f"sparsity_{part}"
        if cfg[key] is not None:
            continue
        if cfg["prune_targets"] == "uniform":
            cfg[key] = cfg["sparsity"]
        elif part == "classifier":
            cfg[key] = THESIS_SPARSITY["classifier"]
        else:
            table = THESIS_SPARSITY[part]
            name = cfg["student"] if part == "encoder" else cfg["embedding"]
            if name not in table:
                raise ConfigError(f"{where}: prune_targets=thesis has no {part} target for {name!r} "
                                  f"(Featherweight Table 6.3); set '{key}'")
            cfg[key] = table[name]
    for key in ("bits_embedding", "bits_encoder", "bits_classifier"):
        if cfg[key] not in BITS_ALLOWED:
            raise ConfigError(f"{where}: '{key}' = {cfg[key]} is not allowed; allowed: "
                              f"{', '.join(map(str, BITS_ALLOWED))}")
    if "prune" in cfg["stages"] and cfg["prune_schedule"] == "gradual" and cfg["finetune_epochs"] < 1:
        raise ConfigError(f"{where}: prune_schedule=gradual needs finetune_epochs >= 1 (one pruning step per epoch)")
    if "prune" in cfg["stages"] and cfg["prune_schedule"] == "imp":
        if cfg["finetune_epochs"] < 1:
            raise ConfigError(f"{where}: prune_schedule=imp needs finetune_epochs >= 1 (retraining epochs per round)")
        last = cfg["epochs"] if "distill" in cfg["stages"] else 0
        if cfg["rewind_epoch"] > last:
            raise ConfigError(f"{where}: rewind_epoch={cfg['rewind_epoch']} is after the last distillation epoch "
                              f"({last}); use 0..{last}")


#: The keys each cross-key rule of :func:`resolve_config` reads (a rule reads no key outside its
#: group). Every other key is checked alone. :func:`check_config_grid` relies on it; the test
#: ``tests/trainables/test_config.py::test_rule_groups_find_every_refused_grid_config`` checks it
#: against a brute-force search over random grids.
RULE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("student", "hidden_dim"),
    ("prune_targets", "student", "embedding", "sparsity_embedding", "sparsity_encoder", "sparsity_classifier"),
    ("stages", "prune_schedule", "finetune_epochs", "rewind_epoch", "epochs"),
)
#: Most configs :func:`check_config_grid` resolves for one group (a larger product is refused).
MAX_GRID_CONFIGS = 100_000


def check_config_grid(candidates: Mapping[str, Sequence[Any]], where: str = "config",
                      shown: Sequence[str] | None = None) -> int:
    """Resolve every config a grid of candidate values can form, as far as the rules can tell apart.

    Each value is checked alone (:func:`check_value`); then, for each group of
    :data:`RULE_GROUPS` (and each other key on its own), every combination of its keys'
    candidates is resolved with :func:`resolve_config` (the function every trial calls first),
    the other keys held at their first candidate. A config that resolves here resolves in a
    trial, and every combination a trial would refuse is found, since a rule reads only its
    group's keys.

    Args:
        candidates: key -> the values it can take (a key that is absent takes its default).
        where: the source named in errors (a space file).
        shown: keys named in errors when they take part (default: every key of ``candidates``).

    Returns:
        How many configs were resolved.

    Raises:
        ConfigError: a value, or a combination, that a trial would refuse; the message names the
            combination (``student=ffn, hidden_dim=0``) and the rule's own message.
    """
    grid = {k: [check_value(k, v, where) for v in values] for k, values in candidates.items()}
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"{where}: '{key}' has no value")
    shown = set(grid if shown is None else shown)
    base = {k: v[0] for k, v in grid.items()}
    grouped = {k for group in RULE_GROUPS for k in group}
    groups = [tuple(k for k in g if k in grid) for g in RULE_GROUPS] + [(k,) for k in grid if k not in grouped]
    groups = [g for g in groups if g] or [tuple(grid)]
    resolve_config(base, where)  # the fixed values with each searched key's first value: its own message names them
    resolved = 1
    for group in groups:
        sizes = [len(grid[k]) for k in group]
        if math.prod(sizes) > MAX_GRID_CONFIGS:
            raise ConfigError(f"{where}: {' x '.join(map(str, sizes))} combinations of {', '.join(group)} are more "
                              f"than {MAX_GRID_CONFIGS:,} to check; use fewer choices")
        for combo in itertools.product(*(grid[k] for k in group)):
            point = {**base, **dict(zip(group, combo))}
            named = ", ".join(f"{k}={point[k]}" for k in group if k in shown)
            resolve_config(point, f"{where}: a trial with {named}" if named else where)
            resolved += 1
    return resolved
