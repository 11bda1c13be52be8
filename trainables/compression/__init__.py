"""Compression stages after distillation: pruning (:mod:`.prune`, ``torch.nn.utils.prune``) and
quantization (:mod:`.quantize`; ``torch.ao`` is used behind one adapter there)."""

from trainables.compression.prune import prune_student
from trainables.compression.quantize import quantize_student

__all__ = ["prune_student", "quantize_student"]
