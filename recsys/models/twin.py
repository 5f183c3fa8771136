"""TWIN (Chang et al., KDD 2023): two-stage target attention over long histories with one item table.

Each candidate searches the history for its top-K behaviours by the dot product of the same
embeddings that later represent them, then attends over those K; an MLP on [candidate, aggregate,
candidate * aggregate] gives the logit. The coupled table is what DARE (`dare.py`) decouples; with
`d_proj > 0` the search runs on linear query / key projections of that table instead (the DARE
paper's "TWIN with projection" baseline). Shared parts: `recsys.nn.target_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.ranker import AUTO, check_count
from recsys.models.target_attention_ranker import TargetAttentionRanker, TwoStageFields
from recsys.nn.target_attention import ItemTable


@dataclass(frozen=True)
class TWINConfig(TwoStageFields):
    d_rep: int = 16  # embedding width (attention and representation alike)
    d_proj: int = 0  # > 0: search on linear query / key projections of this width (TWIN with projection)
    top_k: int = 20  # behaviours kept by the stage-1 search
    max_len: int = 200  # history events scored
    # genre vocabulary + 1 (0 = padding), 0 = no genre embeddings; auto: from the item features
    n_genres: int | Literal["auto"] = AUTO
    # rating levels of the history-ratings input (6: ratings 1..5), 0 = off; auto: from the data
    n_ratings: int | Literal["auto"] = AUTO
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.check_two_stage()
        for name in ("d_rep", "top_k", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_proj < 0:
            raise ValueError(f"d_proj must be >= 0 (0 = no projection), got {self.d_proj}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class TWIN(TargetAttentionRanker):
    """Target attention over the top-K searched behaviours, one table for search and representation."""

    Config = TWINConfig

    def __init__(self, cfg: TWINConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self._side_features(cfg, n_items, item_features)
        self.rep = ItemTable(n_items, self.cfg.n_genres, cfg.d_rep)
        rep_dim, proj_dim = self._width(cfg.d_rep), self._width(cfg.d_proj)  # as wide as DARE's attention table
        self.proj_q = nn.Linear(rep_dim, proj_dim, bias=False) if cfg.d_proj else None
        self.proj_k = nn.Linear(rep_dim, proj_dim, bias=False) if cfg.d_proj else None
        self._rating_and_head()

    def _attention_tables(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.proj_q is not None and self.proj_k is not None:  # TWIN with projection
            return self.proj_q(rep), self.proj_k(rep)
        return rep, rep

    def _top_k(self) -> int | None:
        return int(self.cfg.top_k)
