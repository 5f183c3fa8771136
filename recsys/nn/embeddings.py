"""Item and position embeddings for left-padded sequences (item id 0 = padding).

Init: normal(0, 0.02) as in GPT-2 / nanoGPT, with the padding row kept at zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ItemEmbedding(nn.Embedding):
    """Item table with row 0 = padding, rows 1..n_items = items, then `n_special` extra tokens.

    Args:
        n_items: number of real items (ids 1..n_items).
        hidden: embedding width D.
        n_special: extra rows after the items, e.g. BERT4Rec's mask token at id n_items + 1.
    """

    def __init__(self, n_items: int, hidden: int, n_special: int = 0) -> None:
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        if n_special < 0:
            raise ValueError(f"n_special must be >= 0, got {n_special}")
        self.n_items = n_items
        super().__init__(n_items + 1 + n_special, hidden, padding_idx=0)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, mean=0.0, std=0.02)
        with torch.no_grad():
            self.weight[0].zero_()

    def item_weight(self) -> Tensor:
        """Rows for padding + real items, [n_items + 1, D] (no special tokens): the scoring table."""
        return self.weight[: self.n_items + 1]


class PositionalEmbedding(nn.Module):
    """Learned absolute positions for left-padded sequences.

    Positions are right-aligned: the last column (the most recent item) always gets index
    `max_len - 1`. For a full window (L == max_len) that is exactly the column index, as in
    SASRec.pytorch; a shorter batch (L < max_len, e.g. at serving time) reuses the positions its
    columns would have in the full window, so the most recent item keeps its trained position.
    Padded columns get a position too; the caller zeroes them with the mask.

    Args:
        max_len: the longest sequence the model sees.
        hidden: embedding width D.
    """

    def __init__(self, max_len: int, hidden: int) -> None:
        super().__init__()
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, hidden))
        nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, L: int) -> Tensor:
        """Position embeddings [L, D] for the L columns of a left-padded batch (broadcasts over B)."""
        if not 1 <= L <= self.max_len:
            raise ValueError(f"sequence length L={L} must be in [1, max_len={self.max_len}]")
        return self.weight[self.max_len - L :]  # [L, D]
