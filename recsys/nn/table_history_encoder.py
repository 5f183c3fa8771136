"""A causal encoder over rows of another module's item table: SASRec's blocks reading vectors it does not own.

Left-padded `items` [B, L] come with their rows of a table owned elsewhere ([B, L, W], e.g. a text + ID
item tower's fused vectors: only the history's rows, never the whole catalog), projected to `hidden`,
scaled by sqrt(hidden) and added to learned positions as SASRec does, through a causal
`TransformerEncoder`; every position's state is projected back to W, so it scores the same table by dot
products. Items without an ID row (cold, added by text) still have a row: the encoder reads and
scores them by it.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from recsys.nn.blocks import TransformerEncoder
from recsys.nn.dropout import Dropout
from recsys.nn.embeddings import PositionalEmbedding


class TableHistoryEncoder(nn.Module):
    """History items [B, L] + their rows [B, L, W] -> user states [B, L, W], one per position (causal).

    Args:
        width: W, the width of the table's rows (and of the output).
        max_len: the longest history read (positions).
        hidden, n_layers, n_heads, dropout: the transformer's.
    """

    def __init__(self, width: int, max_len: int, *, hidden: int, n_layers: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.scale = math.sqrt(hidden)
        self.proj_in = nn.Linear(width, hidden, bias=False)
        self.pos_emb = PositionalEmbedding(max_len, hidden)
        self.dropout = Dropout(dropout)
        self.encoder = TransformerEncoder(
            hidden=hidden, n_layers=n_layers, n_heads=n_heads, dropout=dropout, attn_dropout=dropout, causal=True
        )
        self.proj_out = nn.Linear(hidden, width, bias=False)

    def forward(self, items: Tensor, rows: Tensor) -> Tensor:
        """States [B, L', W] of left-padded histories `items` [B, L] with their table rows `rows` [B, L, W]
        (padding: zeros): their last L' = min(L, max_len) items are read."""
        items, rows = items[:, -self.max_len :], rows[:, -self.max_len :]
        mask = items != 0
        x = self.proj_in(rows) * self.scale + self.pos_emb(items.shape[1])  # [B, L, H]
        x = self.dropout(x) * mask[..., None]
        out: Tensor = self.proj_out(self.encoder(x, mask))
        return out
