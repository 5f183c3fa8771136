"""Inverted dropout with a faster CPU path (same distribution as `torch.nn.functional.dropout`).

On CPU, PyTorch's dropout draws its mask with `bernoulli_`, which costs more than the matmuls of
a small encoder: on one core, fwd+bwd over a [256, 50, 64] activation takes ~17 ms against ~7 ms
for a mask built from `torch.rand` (measured while developing this module). Both keep each element
with probability 1 - p and scale kept ones by 1 / (1 - p); only the random stream differs. Other
devices keep PyTorch's fused kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Zero each element of `x` with probability `p` and scale the rest by 1 / (1 - p) (when training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, training=True)
    # the mask is drawn in float32 whatever x's dtype, so p is not rounded (bf16 has 8 bits)
    keep = (torch.rand(x.shape, device=x.device) >= p).to(x.dtype) * (1.0 / (1.0 - p))  # [*x.shape]
    return x * keep


class Dropout(nn.Module):
    """`nn.Dropout` with the CPU path of `dropout`."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
