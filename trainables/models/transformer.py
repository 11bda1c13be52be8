"""The truncated-transformer student: the teacher's embeddings and first k layers, distilled.

``student: transformer`` keeps the teacher's WordPiece tokenizer (the ``embedding`` and
``vocab_size`` keys are ignored), its embeddings, its first ``transformer_layers`` = k encoder
layers and its pooler and classification head, loaded with
``AutoModelForSequenceClassification.from_pretrained(teacher, num_hidden_layers=k)``: the
students of Sun et al. 2019 (PKD) also start from the first k layers of the teacher's encoder.
Pair tasks are one joint input ``[CLS] a [SEP] b [SEP]`` with segment ids 0/1, as the teacher reads them.

Loss: the logit distillation of :func:`trainables.training.distill.distill_loss` plus, when
``pkd_beta`` = beta > 0, the Patient-KD term of Sun et al. 2019 ("Patient Knowledge Distillation
for BERT Model Compression", section 3.2, the L_PT term, with the "PKD-Skip" layer choice):

    L_PT = sum_{j=1}^{k-1} || h_s^j / ||h_s^j||_2  -  h_t^{I(j)} / ||h_t^{I(j)}||_2 ||_2^2,  I(j) = ceil(j * L / k)

with h^j the [CLS] hidden state after layer j (student) and I(j) the teacher layer it learns from
(L teacher layers). As in the paper the last student layer is not matched here: the logits
already carry it. The teacher's normalised [CLS] states are small (n x (k-1) x hidden floats), so
each trial computes them once, before training, for its own training rows with the teacher
loaded only when ``pkd_beta > 0`` (bf16 autocast, batches sorted by length; cost logged as
``pkd_teacher_time_s``); nothing is cached across trials.

Its file format is :mod:`trainables.formats.transformer`.

Example:
    >>> pkd_layer_map(2, 6)
    [(1, 3)]
    >>> pkd_layer_map(3, 6)
    [(1, 2), (2, 4)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.data.glue import Split
from trainables.errors import ConfigError
from trainables.models.embeddings import TextEncoder, register_encoder
from trainables.models.students import Student


class WordPieceEncoder(TextEncoder):
    """The teacher's ``tokenizers`` tokenizer: text -> ``[CLS] ... [SEP]`` ids, at most ``max_length``.

    Truncation keeps the special tokens. Padding id 0 is ``[PAD]`` in BERT vocabularies, which
    matches :data:`trainables.models.embeddings.PAD`.
    """

    kind = "wordpiece"

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.num_ids = tokenizer.get_vocab_size()

    @classmethod
    def from_teacher(cls, teacher: str | Path, max_length: int) -> "WordPieceEncoder":
        """Read ``tokenizer.json`` of a teacher folder.

        Raises:
            ConfigError: no ``tokenizer.json`` there.
        """
        from tokenizers import Tokenizer

        path = Path(teacher).expanduser() / "tokenizer.json"
        if not path.is_file():
            raise ConfigError(f"student=transformer needs the teacher's tokenizer.json, not found in {str(teacher)!r}")
        return cls(Tokenizer.from_file(str(path)), max_length)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "wordpiece", "tokenizer": self.tokenizer.to_str(), "max_length": self.max_length}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "WordPieceEncoder":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(obj["tokenizer"]), int(obj["max_length"]))


class TransformerStudent(Student):
    """A Hugging Face sequence classifier behind the students' call signature.

    It is a :class:`~trainables.models.students.Student` (same inputs and output, so the pipeline's
    training, evaluation and speed measurement apply unchanged) holding one submodule,
    ``model`` (e.g. ``BertForSequenceClassification`` with k layers).

    Forward input: ``ids_a`` (batch, La) int64 ``[CLS] a [SEP]`` ids and ``len_a`` (batch,); for
    pair tasks ``ids_b`` (batch, Lb) ``[CLS] b [SEP]`` ids and ``len_b`` (the ``[CLS]`` of b is
    dropped when joining). Output: logits (batch, num_labels).

    Attributes:
        keep_layers: student layers (1-based) whose [CLS] states the forward pass keeps in
            ``cls_states`` (batch, len(keep_layers), hidden) while training (PKD); empty: none.
    """

    def __init__(self, model: nn.Module, pair: bool):
        nn.Module.__init__(self)  # not Student.__init__: no separate embedding/encoder/classifier
        self.model = model
        self.pair = pair
        self.keep_layers: tuple[int, ...] = ()
        self.cls_states: torch.Tensor | None = None

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a transformer student reads both sentences jointly; call it directly")

    # The three parts that pruning and quantization target (trainables.compression.prune.PARTS), as views
    # of ``model``'s own modules (nothing is registered twice; state-dict keys stay ``model.*``).

    @property
    def embedding(self) -> nn.Module:
        """The token, position and segment embeddings (``base_model.embeddings``)."""
        return self.model.base_model.embeddings

    @property
    def encoder(self) -> nn.Module:
        """Every module of the base model besides its embeddings and pooler: the k layers
        (``encoder`` in BERT, ``transformer`` in DistilBERT, ``layers`` in ModernBERT) and
        whatever else sits between (e.g. ELECTRA's ``embeddings_project``), so no weight is
        left out of compression."""
        base = self.model.base_model
        skip = {id(getattr(base, "embeddings", None)), id(getattr(base, "pooler", None))}
        return nn.ModuleList([m for m in base.children() if id(m) not in skip])

    @property
    def classifier(self) -> nn.Module:
        """The pooler (when the model has one) and the classification head: every module of
        ``model`` outside its base model."""
        base = self.model.base_model
        heads = [m for m in self.model.children() if m is not base]
        pooler = getattr(base, "pooler", None)
        return nn.ModuleList(([pooler] if pooler is not None else []) + heads)

    @staticmethod
    def joint_inputs(ids_a: torch.Tensor, len_a: torch.Tensor, ids_b: torch.Tensor | None = None,
                     len_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask, token_type_ids)``, each (batch, T) int64, right-padded.

        Single sentences: T = La. Pairs: row i is ``ids_a[i, :len_a[i]]`` followed by
        ``ids_b[i, 1:len_b[i]]`` (segment 1), T = max(len_a + len_b - 1).
        """
        device = ids_a.device
        la = len_a.to(device)[:, None]
        if ids_b is None:
            pos = torch.arange(ids_a.shape[1], device=device)[None, :]
            mask = (pos < la).long()
            return ids_a * mask, mask, torch.zeros_like(ids_a)
        tail = ids_b[:, 1:]  # drop b's [CLS]
        lb = (len_b.to(device) - 1).clamp(min=0)[:, None]
        width = int((la + lb).max())
        pos = torch.arange(width, device=device)[None, :].expand(ids_a.shape[0], -1)
        from_a = pos < la
        a_part = ids_a.gather(1, pos.clamp(max=ids_a.shape[1] - 1))
        b_part = tail.gather(1, (pos - la).clamp(min=0, max=max(tail.shape[1] - 1, 0))) if tail.shape[1] else a_part
        valid = pos < la + lb
        ids = torch.where(from_a, a_part, b_part) * valid
        return ids, valid.long(), (valid & ~from_a).long()

    def forward(self, ids_a: torch.Tensor, len_a: torch.Tensor, ids_b: torch.Tensor | None = None,
                len_b: torch.Tensor | None = None) -> torch.Tensor:
        ids, mask, types = self.joint_inputs(ids_a, len_a, ids_b if self.pair else None, len_b)
        if getattr(self.model.config, "type_vocab_size", 2) < 2:  # RoBERTa-like: one segment embedding
            types = torch.zeros_like(types)
        keep = bool(self.keep_layers) and self.training
        out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=keep)
        if keep:  # hidden_states[j] is the output of layer j (0: embeddings)
            self.cls_states = torch.stack([out.hidden_states[j][:, 0] for j in self.keep_layers], dim=1)
        return out.logits


def pkd_layer_map(k: int, teacher_layers: int) -> list[tuple[int, int]]:
    """PKD-Skip pairs ``(student layer j, teacher layer ceil(j * L / k))`` for j = 1 .. k-1 (1-based)."""
    return [(j, math.ceil(j * teacher_layers / k)) for j in range(1, k)]


def pkd_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
    """Patient-KD loss L_PT (Sun et al. 2019, section 3.2): squared distance of L2-normalised [CLS] states.

    Args:
        student_cls, teacher_cls: (batch, layers, hidden); the teacher's may be normalised already.

    Returns:
        Scalar: the sum over layers, mean over the batch.
    """
    s = nn.functional.normalize(student_cls, dim=-1)
    t = nn.functional.normalize(teacher_cls.to(s.dtype), dim=-1)
    return ((s - t) ** 2).sum(dim=(1, 2)).mean()


def _load_hf(teacher: str, **kwargs: Any) -> Any:
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the dropped layers are reported as unused weights
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(teacher, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"cannot load teacher {teacher!r} for the transformer student ({first})") from None
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def check_teacher_layers(teacher: str, k: int, where: str = "config") -> Any:
    """Check that ``teacher`` (a folder or hub name) has at least ``k`` encoder layers; reads its
    configuration only (no weights).

    Returns:
        The teacher's ``transformers`` config.

    Raises:
        ConfigError: the configuration cannot be read, has no ``num_hidden_layers``, or fewer than ``k``.
    """
    from transformers import AutoConfig

    try:
        tconf = AutoConfig.from_pretrained(teacher)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f"{where}: cannot read the configuration of teacher {teacher!r} ({first})") from None
    total = getattr(tconf, "num_hidden_layers", None)
    if total is None:
        raise ConfigError(f"teacher {teacher!r} ({tconf.model_type}) has no num_hidden_layers; "
                          f"student=transformer needs a BERT-like teacher")
    if k > total:
        raise ConfigError(f"{where}: transformer_layers={k} exceeds the teacher's {total} layers")
    return tconf


def from_teacher(teacher: str, config: Mapping[str, Any], num_labels: int, pair: bool
                 ) -> tuple[WordPieceEncoder, TransformerStudent]:
    """The tokenizer and a student of the teacher's embeddings, first k layers, pooler and head.

    Uses config keys ``transformer_layers`` (k), ``max_length``, ``dropout`` (hidden and
    classifier dropout) and ``seed``.

    Raises:
        ConfigError: no teacher folder, k above the teacher's layer count, a teacher without
            ``num_hidden_layers``, or a label count that differs from the task's.
    """
    if not teacher:
        raise ConfigError("student=transformer needs the teacher's folder (TrialData.teacher_path is unset)")
    k = int(config["transformer_layers"])
    tconf = check_teacher_layers(teacher, k)
    if tconf.num_labels != num_labels:
        raise ConfigError(f"teacher {teacher!r} has {tconf.num_labels} labels, the task {num_labels}")
    torch.manual_seed(int(config["seed"]))
    model = _load_hf(teacher, num_hidden_layers=k, hidden_dropout_prob=float(config["dropout"]))
    return WordPieceEncoder.from_teacher(teacher, int(config["max_length"])), TransformerStudent(model, pair)


@torch.no_grad()
def teacher_cls_states(teacher: Any, tokenizer: Any, split: Split, layers: Sequence[int], rows: np.ndarray | None = None,
                       batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """L2-normalised [CLS] states of the teacher after ``layers`` (1-based) on ``split`` (its ``rows``).

    Batches are formed over length-sorted rows, under bf16 autocast on CPU (the teacher's recipe).

    Returns:
        float32 tensor (n, len(layers), hidden) in row order.
    """
    from trainables.data.teacher import _autocast

    idx = np.arange(len(split)) if rows is None else np.asarray(rows)
    texts_a = [split.text_a[i] for i in idx]
    texts_b = [split.text_b[i] for i in idx] if split.is_pair else None
    order = np.argsort([len(a) + (len(texts_b[i]) if texts_b else 0) for i, a in enumerate(texts_a)], kind="stable")
    device = next(teacher.parameters()).device
    out = torch.empty(len(idx), len(layers), teacher.config.hidden_size)
    for s in range(0, len(order), batch_size):
        sel = order[s: s + batch_size]
        args = [[texts_a[i] for i in sel]] + ([[texts_b[i] for i in sel]] if texts_b else [])
        enc = tokenizer(*args, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        with _autocast():
            hidden = teacher(**enc, output_hidden_states=True).hidden_states
        cls = torch.stack([hidden[j][:, 0].float() for j in layers], dim=1).cpu()
        out[torch.from_numpy(sel)] = nn.functional.normalize(cls, dim=-1)
    return out


def prepare(teacher: str | None, config: Mapping[str, Any], train: Split, rows: np.ndarray | None, num_labels: int,
            pair: bool) -> tuple[WordPieceEncoder, TransformerStudent, Callable[[torch.Tensor], torch.Tensor] | None,
                                 dict[str, float]]:
    """Everything :func:`trainables.trial.stages.prepare` needs for ``student: transformer``.

    Args:
        teacher: the teacher folder (``TrialData.teacher_path``).
        config: the resolved trial config (``transformer_layers``, ``pkd_beta``, ...).
        train, rows: the training split and the trial's rows of it (``None``: all), in the order
            of the trial's encoded training set.

    Returns:
        ``(encoder, model, aux_loss, metrics)``: ``aux_loss`` maps a batch's row indices to
        ``pkd_beta * L_PT`` (``None`` when ``pkd_beta`` is 0 or k = 1: no intermediate layer),
        ``metrics`` holds ``pkd_teacher_time_s`` (seconds) when the teacher states were computed.

    Raises:
        ConfigError: see :func:`from_teacher`.
    """
    encoder, model = from_teacher(teacher or "", config, num_labels, pair)
    aux_loss, metrics = patient_kd(teacher, config, model, train, rows)
    return encoder, model, aux_loss, metrics


def patient_kd(teacher: str | None, config: Mapping[str, Any], model: TransformerStudent, train: Split,
               rows: np.ndarray | None) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, dict[str, float]]:
    """The Patient-KD loss of ``model`` (a new student, or one from ``init_run_id``) against the teacher.

    Returns:
        ``(aux_loss, metrics)``: see :func:`prepare`; ``(None, {})`` when ``pkd_beta`` is 0 or the
        student has one layer.

    Raises:
        ConfigError: ``pkd_beta`` > 0 without a teacher folder, or a teacher that cannot be loaded.
    """
    beta, k = float(config["pkd_beta"]), int(config["transformer_layers"])
    if beta <= 0 or k < 2:
        return None, {}
    if not teacher:
        raise ConfigError("pkd_beta > 0 needs the teacher's folder (TrialData.teacher_path is unset)")
    from trainables.data.teacher import load_teacher

    start = time.perf_counter()
    t_model, t_tok = load_teacher(teacher)
    pairs = pkd_layer_map(k, t_model.config.num_hidden_layers)
    states = teacher_cls_states(t_model, t_tok, train, [t for _, t in pairs], rows)
    del t_model
    model.keep_layers = tuple(j for j, _ in pairs)
    seconds = time.perf_counter() - start

    def aux_loss(idx: torch.Tensor) -> torch.Tensor:
        return beta * pkd_loss(model.cls_states, states[idx].to(model.cls_states.device))

    return aux_loss, {"pkd_teacher_time_s": seconds}


register_encoder("wordpiece", WordPieceEncoder.from_json)
