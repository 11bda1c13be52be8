"""The one adapter over ``torch.ao.quantization`` (deprecated in torch 2.13, still working).

Everything in featherweight that runs torch's int8 dynamic kernels (quantized students with the
``int8_dynamic`` runtime, int8 teacher labelling) goes through :func:`to_int8_dynamic`, so the
day torch removes ``torch.ao.quantization`` one function changes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> q = to_int8_dynamic(nn.Sequential(nn.Linear(4, 2)).eval())
    >>> q(torch.ones(1, 4)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def to_int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.LSTM`` and ``nn.Linear`` modules are torch dynamic int8 modules.

    Weights are int8 per output channel (zero point 0), activations are quantized per batch at
    run time (``per_channel_dynamic_qconfig``; the fbgemm kernels use AVX2/AVX-512 VNNI where the
    CPU has them). Other modules (embeddings, ``nn.RNN``, layer norms, attention's softmax) are
    unchanged. CPU only; the result has no trainable parameters and is for inference.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {nn.LSTM: per_channel_dynamic_qconfig, nn.Linear: per_channel_dynamic_qconfig}
        return quantize_dynamic(model, spec, dtype=torch.qint8).eval()


__all__ = ["to_int8_dynamic"]
