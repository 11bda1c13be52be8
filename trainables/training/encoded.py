"""A split as padded id tensors (:class:`Encoded`), and the students' batched prediction.

Example:
    >>> from trainables.models.embeddings import build_encoder
    >>> from trainables.data.glue import Split
    >>> split = Split("sst2", "dev", ["a b", "b"], None, np.array([1, 0]))
    >>> enc = encode_split(split, build_encoder("char", ["a b"], 8), max_length=4)
    >>> enc.ids_a.shape, enc.len_a.tolist()
    (torch.Size([2, 3]), [3, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from trainables.data.glue import Split
from trainables.models.embeddings import TextEncoder, pad_batch


@dataclass
class Encoded:
    """A split as padded id tensors, ready for a student.

    Attributes:
        ids_a, len_a: (n, L) int64 ids and (n,) lengths of the first sentences.
        ids_b, len_b: the same for the second sentences of pair tasks, else ``None``.
        labels: (n,) int64 gold labels.
        teacher: (n, num_labels) float32 teacher logits, or ``None`` (evaluation only).
    """

    ids_a: torch.Tensor
    len_a: torch.Tensor
    labels: torch.Tensor
    ids_b: torch.Tensor | None = None
    len_b: torch.Tensor | None = None
    teacher: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, idx: torch.Tensor | slice, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        """Student inputs of rows ``idx`` on ``device``, each side cut to the longest sentence of the batch.

        Lengths stay on the CPU (``pack_padded_sequence`` wants them there).
        """
        la = self.len_a[idx]
        out = [self.ids_a[idx][:, : int(la.max())].to(device), la]
        if self.ids_b is not None:
            lb = self.len_b[idx]
            out += [self.ids_b[idx][:, : int(lb.max())].to(device), lb]
        return tuple(out)


def encode_split(split: Split, encoder: TextEncoder, max_length: int, teacher: np.ndarray | None = None,
                 rows: np.ndarray | None = None) -> Encoded:
    """Tokenise ``split`` (or its ``rows``) with ``encoder``, keeping at most ``max_length`` tokens."""
    take = (lambda xs: [xs[i] for i in rows]) if rows is not None else (lambda xs: xs)
    ids_a, len_a = pad_batch(encoder.encode_batch(take(split.text_a)), max_length)
    # copies: arrays shared through Ray's object store are read-only
    enc = Encoded(ids_a, len_a, torch.tensor(split.labels if rows is None else split.labels[rows]))
    if split.is_pair:
        enc.ids_b, enc.len_b = pad_batch(encoder.encode_batch(take(split.text_b)), max_length)
    if teacher is not None:
        enc.teacher = torch.tensor(teacher if rows is None else teacher[rows])
    return enc


@torch.no_grad()
def predict(model: nn.Module, data: Encoded, batch_size: int = 512) -> np.ndarray:
    """Logits (n, num_labels) of ``model`` on ``data``, in eval mode."""
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    out = [model(*data.inputs(slice(s, s + batch_size), device)).float().cpu() for s in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()
