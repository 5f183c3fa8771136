"""SASRec over an item tower (ID view + frozen LLM/text view), in the style of LLM-ESR (Liu et al., 2024).

The item representation is `recsys.nn.item_tower.ItemTower`: a learned ID table and a frozen table of
a pretrained model's item vectors (SmolLM2 reading each item's text, or MiniLM), projected to the
model width. Two ways to read a history:

- `fused`: the two views summed (or concatenated and projected) per item, one causal encoder pass,
  scores against the fused table;
- `dual`: the ID view and the text view each through the same encoder, the two hidden states
  concatenated and scored against the concatenated tables, so a score is the ID view's score plus
  the text view's (LLM-ESR's dual-view model, without its self-distillation term).

Everything else is SASRec's: causal transformer, positions, dropout, the next-item objective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender
from recsys.nn.item_tower import ItemTower, ItemTowerConfig, build_text_view
from recsys.nn.item_vectors import sentence_of
from recsys.nn.sequence_encoder import ItemSequenceEncoder, validate_encoder_fields

VIEWS = ("fused", "dual")


@dataclass(frozen=True)
class IDTextSASRecConfig:
    max_len: int = 200  # history length; longer histories keep their most recent items
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2  # SASRec's ML-1M recipe (configs/experiment/sasrec_ml-1m.yaml)
    attn_dropout: float = 0.2
    attention: str = "sdpa"  # any key of recsys.nn.attention.ATTENTION
    chunk_size: int = 64  # for the chunked linear backends
    norm: str = "pre"
    views: str = "fused"  # fused: one sequence of fused items; dual: each view through the encoder
    item_tower: ItemTowerConfig = field(default_factory=ItemTowerConfig)

    def __post_init__(self) -> None:
        validate_encoder_fields(self)
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}, got {self.views!r}")
        if self.views == "dual" and not (self.item_tower.id_embedding and self.item_tower.text):
            raise ValueError("views 'dual' needs both an ID view and a text view in item_tower")


class IDTextSASRec(SequentialRecommender):
    Config = IDTextSASRecConfig
    uses_item_features = True

    def __init__(self, cfg: IDTextSASRecConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_len = cfg.max_len
        self.tower = ItemTower(cfg.item_tower, n_items, cfg.hidden)
        self.net = ItemSequenceEncoder(cfg, n_items, causal=True, item_emb=self.tower)
        self.cache_hit = False  # whether the text vectors came from the disk cache
        if item_features is not None and cfg.item_tower.text:
            if item_features.n_items != n_items:
                raise ValueError(f"item features cover {item_features.n_items} items, the model {n_items}")
            view = build_text_view(cfg.item_tower, item_features, cfg.hidden)
            self.tower.set_text_table(view.table, view.mean, view.proj)
            self.cache_hit = view.cache_hit

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The item text fields the text view reads (what an item added by text may carry)."""
        return self.cfg.item_tower.fields

    @torch.no_grad()
    def add_items(self, items: list[dict[str, str | None]]) -> torch.Tensor:
        """Append new items by their text fields (no retraining): items N + 1 .. N + K, text view only
        (no ID row), their vectors from the same encoder and catalog reduction as every catalog item's.
        Returns their scoring vectors [K, D] (rows of `item_embeddings`)."""
        if not items:
            raise ValueError("no items to add")
        first = len(self.tower.has_id)
        self.tower.add_items([sentence_of(fields, self.text_fields) for fields in items])
        return self.item_embeddings()[first:]

    def observe_training_items(self, items: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Items never trained lose their ID row (`item_tower.ids_for`); e.g. the cold-item protocol's."""
        del counts
        self.tower.keep_ids_of(items)

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] (fused) or [B, L, 2D] (dual: ID view's, then text view's)."""
        if self.cfg.views == "fused":
            hidden: torch.Tensor = self.net(items, mask)  # [B, L, D]
            return hidden
        by_id = self.net(items, mask, embed=self.tower.id_view)  # [B, L, D]
        by_text = self.net(items, mask, embed=self.tower.text_view)  # [B, L, D]
        return torch.cat([by_id, by_text], dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        """The scoring table [N + 1, D] (fused) or [N + 1, 2D] (dual)."""
        if self.cfg.views == "fused":
            return self.tower.item_weight()
        items = torch.arange(len(self.tower.has_id), device=self.tower.has_id.device)
        return torch.cat([self.tower.id_view(items), self.tower.text_view(items)], dim=-1)
