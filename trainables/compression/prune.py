"""Weight pruning of students on :mod:`torch.nn.utils.prune` (the ``prune`` stage).

What is pruned: every parameter with at least two dimensions in the three parts of a
:class:`~trainables.models.students.Student` (:data:`PARTS`): ``embedding`` (tables, hash component
and importance tables, the GloVe projection), ``encoder`` (LSTM/RNN ``weight_ih``/``weight_hh``
of both directions) and ``classifier`` (Linear weights). Biases and other vectors are never
pruned. A tensor is pruned along its rows (dim 0: output units of a Linear, gate rows of an
LSTM/RNN matrix, tokens of an embedding table) when ``prune_structured`` is set.

Methods (config ``prune_method``):

- ``topv``: keep the V = (1 - s) x n weights of largest magnitude (|w|, L1 for elements, L2 norm
  for rows; the "Top-V" pruning of the Featherweight thesis, chapter 6). The target ``s`` is exact: a tensor of
  n weights loses ``round(s * n)`` of them (structured: ``round(s * rows)`` rows).
- ``magnitude``: prune every weight with |w| < lambda x sigma, sigma the standard deviation of
  the tensor's unpruned weights and lambda = ``prune_threshold`` (Han et al. 2015, "Learning both
  Weights and Connections for Efficient Neural Networks": their threshold is a quality parameter
  times the layer's weight standard deviation). Structured: rows whose RMS magnitude
  ``||w_r||_2 / sqrt(cols)`` is below lambda x sigma. The sparsity is an outcome, not a target:
  the per-part keys only switch a part off (0) or on (> 0).

Scopes (``prune_scope``): ``local`` prunes each tensor to its part's target
(``sparsity_embedding``, ``sparsity_encoder``, ``sparsity_classifier``; thesis Table 6.3 gives
BiLSTM 50%, RNN 10%, Linear 12.5%, hash 0%, char 30%, BPE 40%); ``global`` ranks all prunable
weights of the model together against ``sparsity`` (per-part keys unused). Global structured
ranks rows of every tensor by RMS magnitude and prunes the lowest while the pruned weight count
stays within ``round(sparsity * n)``.

Schedules (``prune_schedule``): ``oneshot`` prunes the trained student once, then optionally
distils it ``finetune_epochs`` more epochs with the masks fixed (:func:`trainables.training.distill.train`).
``gradual`` takes ``n = finetune_epochs`` pruning steps, each followed by one distillation
epoch, with the cubic schedule of Zhu and Gupta 2017 ("To prune, or not to prune", eq. 1) from
s_i = 0 at t_0 = 0 and step Delta t = 1 epoch::

    s_k = s_f + (s_i - s_f) * (1 - k / n) ** 3,     k = 1..n      (s_n = s_f exactly)

(for ``magnitude``, lambda follows the same ramp). ``imp`` is iterative magnitude pruning with
weight rewinding (Frankle and Carbin 2019, "The Lottery Ticket Hypothesis", section 2;
rewinding to an early epoch as in Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis"): ``R = imp_rounds`` rounds, each of which prunes the trained
student, resets every weight that survives (and every unpruned parameter: biases, vectors) to
its value at the rewind point, and retrains ``finetune_epochs`` epochs with the masks fixed.
Round r prunes the same fraction of the surviving weights, so its target is::

    s_r = 1 - (1 - s_f) ** (r / R),     r = 1..R      (s_R = s_f exactly)

(for ``magnitude``, lambda_r = lambda x r / R). The rewind point is the state dict passed as
``rewind_state`` (the pipeline takes it after distillation epoch ``rewind_epoch``; 0 = the
weights distillation started from). The optimizer starts afresh each round. Masks only grow.
Before the stage returns, pruning is made permanent (:func:`make_permanent`: ``prune.remove``
and -0.0 -> +0.0), so the model holds plain parameters with exact zeros.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Module(); m.embedding, m.encoder, m.classifier = nn.Embedding(10, 4), nn.Identity(), nn.Linear(4, 2)
    >>> _ = apply_pruning(m, {"embedding": 0.5, "encoder": 0.0, "classifier": 0.25})
    >>> make_permanent(m); sparsity_by_part(m)  # (zeros, weights) per part
    {'embedding': (20, 40), 'encoder': (0, 0), 'classifier': (2, 8)}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from trainables.errors import ConfigError

PARTS = ("embedding", "encoder", "classifier")


@dataclass(frozen=True)
class Prunable:
    """One prunable tensor: ``getattr(module, name)`` in part ``part``; ``key`` is its state-dict name."""

    part: str
    key: str
    module: nn.Module
    name: str

    @property
    def tensor(self) -> torch.Tensor:
        """The (masked, while pruning is not permanent) weight, shape as the parameter."""
        return getattr(self.module, self.name)

    def mask(self) -> torch.Tensor | None:
        """The current pruning mask (same shape, 1 = kept) or ``None`` if not pruned yet."""
        return getattr(self.module, self.name + "_mask", None)


def prunable_tensors(model: nn.Module) -> list[Prunable]:
    """Every parameter with >= 2 dimensions of ``model.embedding``, ``.encoder``, ``.classifier``
    (for a transformer student, the parts its properties name), each once, keyed by its
    state-dict name in ``model``.

    Works before and during pruning (a pruned ``weight`` is registered as ``weight_orig``).

    Raises:
        ValueError: ``model`` lacks one of the parts.
    """
    path_of = {id(m): n for n, m in model.named_modules()}
    out, seen = [], set()
    for part in PARTS:
        sub = getattr(model, part, None)
        if sub is None:
            raise ValueError(f"model has no {part!r} module; expected a Student")
        for mod in sub.modules():
            for pname, p in mod.named_parameters(recurse=False):
                if p.ndim < 2 or id(p) in seen:
                    continue
                seen.add(id(p))
                name = pname[: -len("_orig")] if pname.endswith("_orig") else pname
                key = ".".join(x for x in (path_of[id(mod)], name) if x)
                out.append(Prunable(part, key, mod, name))
    return out


def sparsity_by_part(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{part: (zero weights, prunable weights)}`` over :func:`prunable_tensors` (counts)."""
    out = {part: (0, 0) for part in PARTS}
    for t in prunable_tensors(model):
        z, n = out[t.part]
        w = t.tensor
        out[t.part] = (z + int((w == 0).sum().item()), n + w.numel())
    return out


def sparsity_metrics(model: nn.Module) -> dict[str, float]:
    """``sparsity_achieved`` (all prunable weights) and ``sparsity_achieved_<part>``: zero fractions in [0, 1]."""
    parts = sparsity_by_part(model)
    zeros, total = sum(z for z, _ in parts.values()), sum(n for _, n in parts.values())
    out = {"sparsity_achieved": zeros / total if total else 0.0}
    out.update({f"sparsity_achieved_{p}": (z / n if n else 0.0) for p, (z, n) in parts.items()})
    return out


# --- pruning methods (torch.nn.utils.prune.BasePruningMethod subclasses) -------------------


class StdThreshold(prune.BasePruningMethod):
    """Prune elements with |w| < ``threshold`` x std of the unpruned elements (Han et al. 2015).

    ``compute_mask`` receives the tensor (torch hands only its unpruned entries once a mask
    exists) and returns a mask of the same shape.
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, threshold: float):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        kept = t[default_mask.bool()]
        sigma = kept.std() if kept.numel() > 1 else kept.new_zeros(())
        mask = default_mask.clone()
        mask[t.abs() < self.threshold * sigma] = 0
        return mask


class RowStdThreshold(prune.BasePruningMethod):
    """Prune rows (dim 0) whose RMS magnitude ``||w_r||_2 / sqrt(cols)`` is below ``threshold`` x std.

    The std is over the elements of the rows still kept, so the threshold is in the same units
    as :class:`StdThreshold`'s.
    """

    PRUNING_TYPE = "structured"
    dim = 0

    def __init__(self, threshold: float):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.threshold = threshold

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        rows = t.reshape(t.shape[0], -1)
        sigma = rows.std() if rows.numel() > 1 else rows.new_zeros(())
        rms = rows.pow(2).mean(dim=1).sqrt()
        mask = default_mask.clone()
        mask[rms < self.threshold * sigma] = 0
        return mask


# --- one pruning step --------------------------------------------------------------------------


def _zero_count(t: Prunable, structured: bool) -> int:
    """Weights (or rows, when ``structured``) already pruned by a mask of ``t``."""
    mask = t.mask()
    if mask is None:
        return 0
    if structured:
        return int((mask.reshape(mask.shape[0], -1).sum(dim=1) == 0).sum().item())
    return int((mask == 0).sum().item())


def _global_structured_mask(tensors: list[Prunable], method: str, sparsity: float,
                            threshold: float) -> list[torch.Tensor]:
    """Row masks for global structured pruning (torch has no global structured method).

    Every row of every tensor gets the score ``||w_r||_2 / sqrt(cols)`` (comparable across widths).
    ``topv``: prune rows in ascending score while the pruned weight count stays <= round(s * n).
    ``magnitude``: prune rows with score < threshold x std of all kept weights.
    """
    rows = [t.tensor.detach().cpu().reshape(t.tensor.shape[0], -1) for t in tensors]  # masks built on the CPU
    scores = torch.cat([r.pow(2).mean(dim=1).sqrt() for r in rows])
    widths = torch.cat([torch.full((r.shape[0],), r.shape[1], dtype=torch.long) for r in rows])
    already = torch.cat([(r.abs().sum(dim=1) == 0) if t.mask() is not None
                         else torch.zeros(r.shape[0], dtype=torch.bool) for t, r in zip(tensors, rows)])
    if method == "topv":
        total = int(widths.sum())
        budget = round(sparsity * total)
        order = torch.argsort(scores, stable=True)
        cum = torch.cumsum(widths[order], 0)
        drop = torch.zeros_like(scores, dtype=torch.bool)
        drop[order[cum <= budget]] = True
        drop |= already
    else:
        kept = torch.cat([r[~a].reshape(-1) for r, a in zip(rows, torch.split(already, [r.shape[0] for r in rows]))])
        sigma = kept.std() if kept.numel() > 1 else kept.new_zeros(())
        drop = (scores < threshold * sigma) | already
    masks, start = [], 0
    for t, r in zip(tensors, rows):
        keep = ~drop[start: start + r.shape[0]]
        start += r.shape[0]
        masks.append(keep[:, None].expand_as(r).reshape(t.tensor.shape).to(t.tensor.device, t.tensor.dtype))
    return masks


def apply_pruning(model: nn.Module, targets: Mapping[str, float] | None = None, *, method: str = "topv",
                  scope: str = "local", structured: bool = False, sparsity: float = 0.0,
                  threshold: float = 1.0) -> list[Prunable]:
    """Prune ``model`` in place (masks via :mod:`torch.nn.utils.prune`; call again to prune more).

    Args:
        targets: ``local`` scope: part -> fraction of that part's weights (rows) to prune, in [0, 1).
            A tensor ends with ``round(f * n)`` zeros; masks from earlier calls count towards it.
        method: ``topv`` or ``magnitude`` (see the module docstring).
        scope: ``local`` (per tensor) or ``global`` (one ranking over all prunable tensors).
        structured: prune whole rows (dim 0, L2 norm) instead of elements.
        sparsity: ``global`` scope ``topv``: fraction of all prunable weights to prune.
        threshold: ``magnitude``: lambda, in standard deviations.

    Returns:
        The pruned tensors (every prunable tensor gets a mask, possibly all ones).

    Raises:
        ValueError: unknown method/scope, a target outside [0, 1), a part without a target.
    """
    if method not in ("topv", "magnitude"):
        raise ValueError(f"unknown prune_method {method!r}; allowed: magnitude, topv")
    if scope not in ("local", "global"):
        raise ValueError(f"unknown prune_scope {scope!r}; allowed: local, global")
    tensors = prunable_tensors(model)
    _refresh_masked(tensors)  # rank the current weights, not those of the last forward pass
    if scope == "global":
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if structured:
            for t, mask in zip(tensors, _global_structured_mask(tensors, method, sparsity, threshold)):
                prune.custom_from_mask(t.module, t.name, mask)
        elif method == "topv":
            total = sum(t.tensor.numel() for t in tensors)
            done = sum(_zero_count(t, False) for t in tensors)
            prune.global_unstructured([(t.module, t.name) for t in tensors], pruning_method=prune.L1Unstructured,
                                      amount=max(round(sparsity * total) - done, 0))
        else:
            prune.global_unstructured([(t.module, t.name) for t in tensors], pruning_method=StdThreshold,
                                      threshold=threshold)
        return tensors
    targets = dict(targets or {})
    for t in tensors:
        if t.part not in targets:
            raise ValueError(f"no sparsity target for part {t.part!r}")
        frac = float(targets[t.part])
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"sparsity of {t.part} must be in [0, 1), got {frac}")
        if method == "magnitude":
            if frac == 0.0:  # a part with target 0 is left alone by both methods
                if t.mask() is None:
                    prune.identity(t.module, t.name)
            elif structured:
                RowStdThreshold.apply(t.module, t.name, threshold=threshold)
            else:
                StdThreshold.apply(t.module, t.name, threshold=threshold)
            continue
        units = t.tensor.shape[0] if structured else t.tensor.numel()
        amount = max(round(frac * units) - _zero_count(t, structured), 0)
        if structured:
            prune.ln_structured(t.module, t.name, amount=amount, n=2, dim=0)
        else:
            prune.l1_unstructured(t.module, t.name, amount=amount)
    return tensors


def make_permanent(model: nn.Module) -> None:
    """Remove every pruning re-parametrisation: ``weight_orig * weight_mask`` becomes the plain
    ``weight`` parameter, and pruned entries are +0.0 (not -0.0) so that a stored sparse tensor
    is restored bit for bit."""
    for module in model.modules():
        names = [h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
    with torch.no_grad():
        for t in prunable_tensors(model):
            w = t.tensor
            w[w == 0] = 0.0


def cubic_schedule(step: int, steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu and Gupta 2017, eq. 1: target after pruning step ``step`` of ``steps`` (1-based).

    ``s_t = s_f + (s_i - s_f) * (1 - step / steps) ** 3``; ``step = steps`` gives ``final``.

    Raises:
        ValueError: ``step`` outside 1..steps.
    """
    if not 1 <= step <= steps:
        raise ValueError(f"step must be in 1..{steps}, got {step}")
    return final + (initial - final) * (1.0 - step / steps) ** 3


def imp_schedule(round_: int, rounds: int, final: float) -> float:
    """Iterative magnitude pruning: the target after round ``round_`` of ``rounds`` (1-based),
    pruning the same fraction of the surviving weights each round: ``1 - (1 - final) ** (round_ / rounds)``
    (Frankle and Carbin 2019, section 2: "each round prunes p^(1/n)% of the weights that survive").

    Raises:
        ValueError: ``round_`` outside 1..rounds, or ``final`` outside [0, 1).
    """
    if not 1 <= round_ <= rounds:
        raise ValueError(f"round must be in 1..{rounds}, got {round_}")
    if not 0.0 <= final < 1.0:
        raise ValueError(f"final sparsity must be in [0, 1), got {final}")
    return 1.0 - (1.0 - final) ** (round_ / rounds)


def rewind(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Reset every parameter and buffer of ``model`` to its value in ``state`` (a state dict of
    the same, unpruned, architecture), keeping pruning masks: a pruned tensor's ``<name>_orig``
    takes ``state[<name>]``, so its surviving weights are rewound and its pruned ones stay 0.

    Raises:
        KeyError: ``state`` lacks one of the model's tensors.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():  # persistent buffers only, as `state`
            if name.endswith("_mask"):
                continue
            source = name[: -len("_orig")] if name.endswith("_orig") else name
            if source not in state:
                raise KeyError(f"rewind state has no tensor {source!r}")
            tensor.copy_(state[source])
    _refresh_masked(prunable_tensors(model))


def _refresh_masked(tensors: list[Prunable]) -> None:
    """Recompute each pruned weight as ``<name>_orig x <name>_mask``, as the pruning forward
    pre-hook does. After ``load_state_dict`` or :func:`rewind` the attribute holds the weights of
    the last forward pass until the next one, and :mod:`torch.nn.utils.prune` ranks that attribute."""
    for t in tensors:
        mask = t.mask()
        if mask is not None:
            setattr(t.module, t.name, getattr(t.module, t.name + "_orig") * mask)


def part_targets(config: Mapping[str, Any]) -> dict[str, float]:
    """``{part: sparsity_<part>}`` from a resolved config (fractions)."""
    return {part: float(config[f"sparsity_{part}"]) for part in PARTS}


@dataclass
class PruneResult:
    """Outcome of :func:`prune_student`.

    Attributes:
        sparsity: :func:`sparsity_metrics` of the final model (fractions).
        steps: per pruning step: ``step``, the targets used and the achieved ``sparsity_achieved``.
        history: rows of the fine-tuning epochs (:class:`trainables.training.distill.TrainResult` history).
        train_time_s: wall time of fine-tuning, seconds.
    """

    sparsity: dict[str, float]
    steps: list[dict[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0


def prune_student(model: nn.Module, config: Mapping[str, Any], train_data: Any = None, val_data: Any = None,
                  on_epoch: Callable[[dict[str, float]], None] | None = None,
                  rewind_state: Mapping[str, torch.Tensor] | None = None) -> PruneResult:
    """The ``prune`` stage: prune ``model`` per ``config``, fine-tune, make pruning permanent.

    Uses config keys ``sparsity, sparsity_embedding, sparsity_encoder, sparsity_classifier,
    prune_method, prune_threshold, prune_scope, prune_structured, prune_schedule,
    finetune_epochs, imp_rounds`` and, when fine-tuning, those of :func:`trainables.training.distill.train`.

    Args:
        train_data, val_data: :class:`trainables.training.distill.Encoded` splits (train with teacher
            logits); required when ``finetune_epochs > 0``.
        on_epoch: passed to :func:`trainables.training.distill.train` (epoch numbers count across steps).
        rewind_state: ``imp``: the state dict the surviving weights are reset to each round.

    Raises:
        ConfigError: fine-tuning requested without data, gradual or imp without fine-tuning
            epochs, or imp without ``rewind_state``.
    """
    from trainables.training.distill import train

    epochs = int(config["finetune_epochs"])
    gradual = config["prune_schedule"] == "gradual"
    if epochs and (train_data is None or val_data is None):
        raise ConfigError("finetune_epochs > 0 needs training and validation data")
    if gradual and epochs < 1:
        raise ConfigError("prune_schedule=gradual needs finetune_epochs >= 1 (one pruning step per epoch)")
    imp = config["prune_schedule"] == "imp"
    if imp and (epochs < 1 or rewind_state is None):
        raise ConfigError("prune_schedule=imp needs finetune_epochs >= 1 (retraining per round) and a rewind_state")
    final_targets, final_sparsity = part_targets(config), float(config["sparsity"])
    final_threshold = float(config["prune_threshold"])
    kwargs = dict(method=config["prune_method"], scope=config["prune_scope"],
                  structured=bool(config["prune_structured"]))
    result = PruneResult(sparsity={})
    n_steps = epochs if gradual else int(config["imp_rounds"]) if imp else 1
    for step in range(1, n_steps + 1):
        if imp:
            targets = {p: imp_schedule(step, n_steps, f) for p, f in final_targets.items()}
            sparsity, threshold = imp_schedule(step, n_steps, final_sparsity), final_threshold * step / n_steps
        else:
            ramp = cubic_schedule(step, n_steps, 1.0)  # fraction of the final target reached at this step
            targets = {p: f * ramp for p, f in final_targets.items()}
            sparsity, threshold = final_sparsity * ramp, final_threshold * ramp
        apply_pruning(model, targets, sparsity=sparsity, threshold=threshold, **kwargs)
        if imp:
            rewind(model, rewind_state)
        result.steps.append({"step": step, **{f"target_{p}": v for p, v in targets.items()},
                             "sparsity_achieved": sparsity_metrics(model)["sparsity_achieved"]})
        tune_epochs = 1 if gradual else epochs
        if tune_epochs:
            offset = len(result.history)

            def relay(row: dict[str, float], offset: int = offset) -> None:
                if on_epoch is not None:
                    on_epoch({**row, "epoch": row["epoch"] + offset})

            fit = train(model, train_data, val_data, {**config, "epochs": tune_epochs}, relay)
            result.history += [{**r, "epoch": r["epoch"] + offset} for r in fit.history]
            result.train_time_s += fit.train_time_s
    make_permanent(model)
    result.sparsity = sparsity_metrics(model)
    return result

