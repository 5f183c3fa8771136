"""SASRec (Kang & McAuley, 2018): a causal transformer over the item history, next-item objective.

Scores are dot products with the (tied) input item embeddings. The loss is chosen by the
trainer (full softmax CE by default, as in eSASRec), not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.models.base import SequentialRecommender
from recsys.nn.sequence_encoder import ItemSequenceEncoder, validate_encoder_fields


@dataclass(frozen=True)
class SASRecConfig:
    max_len: int = 50  # history length; longer histories keep their most recent items
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.5  # high dropout suits sparse Amazon data (SASRec paper)
    attn_dropout: float = 0.5
    attention: str = "sdpa"  # any key of recsys.nn.attention.ATTENTION
    chunk_size: int = 64  # for the chunked linear backends
    norm: str = "pre"  # pre-norm blocks (nanoGPT); "post": BERT's post-norm layout (recsys.nn.blocks)

    def __post_init__(self) -> None:
        validate_encoder_fields(self)


class SASRec(SequentialRecommender):
    Config = SASRecConfig

    def __init__(self, cfg: SASRecConfig, n_items: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.net = ItemSequenceEncoder(cfg, n_items, causal=True)

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden: torch.Tensor = self.net(items, mask)  # [B, L, D]
        return hidden

    def item_embeddings(self) -> torch.Tensor:
        return self.net.item_weight()  # [N + 1, D]
