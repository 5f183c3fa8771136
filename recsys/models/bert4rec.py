"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained by masked item prediction.

The network is the shared `ItemSequenceEncoder` with `causal=False` and one extra embedding row,
the mask token at id `n_items + 1` (decided here, not in the data). At inference the mask token
is appended after the history and its hidden state scores the next item.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recsys.models.base import SequentialRecommender
from recsys.nn.sequence_encoder import ItemSequenceEncoder, validate_encoder_fields


@dataclass(frozen=True)
class BERT4RecConfig:
    max_len: int = 50
    hidden: int = 128  # Beauty, on validation: above 64 (the paper's); configs/model/bert4rec.yaml
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.1  # Beauty, on validation at hidden 128: above 0.2 and 0.3
    attn_dropout: float = 0.1
    attention: str = "sdpa"
    chunk_size: int = 64
    norm: str = "pre"  # pre-norm blocks (nanoGPT); "post": BERT's post-norm layout (recsys.nn.blocks)
    mask_prob: float = 0.4  # share of real positions masked in training; Beauty: above 0.2 (the paper's)
    # rows that mask only their last item (the paper's inference-like samples, 0.1 there): worse on Beauty
    last_item_share: float = 0.0
    mask_last: bool = False  # every row also masks its last item beside its random draws (Beauty: worse)
    # rows cut to a uniformly drawn prefix (newest items dropped) before masking, drawn anew each
    # step: the last position, the one inference reads, then sees a different target every epoch
    crop_prob: float = 0.3  # Beauty, on validation over three seeds: above 0 and 0.5
    # the original's output layer: hidden -> dense + GELU + LayerNorm, scored against the tied item
    # table plus a learned per-item bias (kept as one dot product: a constant 1 meets the bias column)
    output_head: bool = False

    def __post_init__(self) -> None:
        validate_encoder_fields(self)
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.last_item_share <= 1.0:
            raise ValueError(f"last_item_share must be in [0, 1], got {self.last_item_share}")
        if not 0.0 <= self.crop_prob <= 1.0:
            raise ValueError(f"crop_prob must be in [0, 1], got {self.crop_prob}")


class BERT4Rec(SequentialRecommender):
    Config = BERT4RecConfig
    objective = "masked"  # recsys.objectives.masked: the model chooses what to mask (mask_items)

    def __init__(self, cfg: BERT4RecConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.mask_token = n_items + 1
        self.net = ItemSequenceEncoder(cfg, n_items, causal=False, n_special=1)
        self.head: nn.Module | None = None
        if cfg.output_head:
            self.head = nn.Sequential(nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.LayerNorm(cfg.hidden))
            self.item_bias = nn.Parameter(torch.zeros(n_items + 1))

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D], or [B, L, D + 1] with the output head (last column 1)."""
        hidden: torch.Tensor = self.net(items, mask)  # [B, L, D]
        if self.head is None:
            return hidden
        out: torch.Tensor = self.head(hidden)
        return torch.cat([out, torch.ones_like(out[..., :1])], dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        """The tied item table [N + 1, D], or [N + 1, D + 1] with the per-item bias column."""
        table = self.net.item_weight()
        if self.head is None:
            return table
        return torch.cat([table, self.item_bias[:, None]], dim=-1)

    def mask_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs and targets [B, L] (0 = no target) for left-padded `items` [B, L].

        A share `crop_prob` of rows is first cut to a random prefix (`crop_to_prefix`). Each real
        item is masked with probability `mask_prob` (and the last one always with `mask_last`); a
        share of rows masks only the last item, and a row where nothing was drawn masks its last
        item, so every row has a target.
        """
        if self.cfg.crop_prob > 0:  # no draw without it: the masks stay those of earlier runs
            items = self.crop_to_prefix(items)
        real = items != 0
        chosen = (torch.rand(items.shape, device=items.device) < self.cfg.mask_prob) & real
        last_only = torch.rand(len(items), device=items.device) < self.cfg.last_item_share
        chosen[last_only] = False
        last_masked = last_only | ~chosen.any(1) | self.cfg.mask_last
        chosen[last_masked, -1] = real[last_masked, -1]
        return items.masked_fill(chosen, self.mask_token), items * chosen

    def crop_to_prefix(self, items: torch.Tensor) -> torch.Tensor:
        """Cut a share `crop_prob` of the left-padded rows `items` [B, L] to their first k items,
        k uniform in 1..length, right-aligned again (the dropped newest items become left padding)."""
        lengths = (items != 0).sum(1)  # [B]
        keep = (torch.rand(len(items), device=items.device) * lengths).long() + 1  # [B] in [1, length]
        cut = torch.rand(len(items), device=items.device) < self.cfg.crop_prob
        shift = torch.where(cut, (lengths - keep).clamp(min=0), 0)  # [B] newest items to drop
        cols = torch.arange(items.shape[1], device=items.device) - shift[:, None]  # [B, L] source column
        return items.gather(1, cols.clamp(min=0)) * (cols >= 0)

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Append the mask token after the history and read its state. Only a batch already
        `max_len` wide drops its oldest column, so the result does not depend on how much left
        padding the batch carries (eval batches are trimmed to their longest history)."""
        start = max(items.shape[1] - (self.max_len - 1), 0)
        tail = torch.full_like(items[:, :1], self.mask_token)
        with_mask = torch.cat([items[:, start:], tail], dim=1)  # [B, min(L, max_len - 1) + 1]
        with_mask_mask = torch.cat([mask[:, start:], torch.ones_like(mask[:, :1])], dim=1)
        return self.encode(with_mask, with_mask_mask)[:, -1]  # [B, D]
