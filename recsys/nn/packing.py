"""Where the real tokens of a left-padded batch sit, so layers that work token by token skip padding.

Short-history data is mostly padding once a batch is padded to its longest row (Beauty: 85% of a
shuffled training batch's positions). Embeddings, LayerNorm, the QKV / output projections, the
FFN and dropout act on each position alone, so they run on the packed real tokens [T, D]; only
attention needs the padded [B, L] grid, and gets it back with `unpack` (zeros at padding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class TokenLayout(NamedTuple):
    """The real positions of a [B, L] batch.

    Attributes:
        flat: [T] flat positions (row * L + column) of the real tokens, in row-major order.
        batch: B.
        length: L.
    """

    flat: Tensor
    batch: int
    length: int

    @staticmethod
    def of(mask: Tensor) -> TokenLayout:
        """The layout of `mask` [B, L] (bool, True = real token)."""
        B, L = mask.shape
        return TokenLayout(mask.reshape(-1).nonzero().squeeze(1), B, L)

    def pack(self, x: Tensor) -> Tensor:
        """[B, L, C] -> the real tokens [T, C]."""
        return x.reshape(self.batch * self.length, -1)[self.flat]

    def unpack(self, x: Tensor) -> Tensor:
        """The real tokens [T, C] -> [B, L, C], zeros at padded positions."""
        out = x.new_zeros(self.batch * self.length, x.shape[-1])
        out = out.index_copy(0, self.flat, x)  # out of place: autograd routes gradients to x
        return out.view(self.batch, self.length, -1)

    def columns(self) -> Tensor:
        """[T] column of each real token (its position in the padded window)."""
        return torch.remainder(self.flat, self.length)
