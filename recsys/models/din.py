"""DIN (Zhou et al., KDD 2018): target attention of each candidate over the whole history.

Weights are the softmax of candidate-behaviour dot products over every behaviour (no search), the
values the same embeddings; an MLP on [candidate, aggregate, candidate * aggregate] gives the
logit. The reference the searching rankers (`dare.py`, `twin.py`) approximate on long histories.
Shared parts: `recsys.nn.target_attention`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from recsys.data.item_features import ItemFeatures
from recsys.models.ranker import AUTO, check_count
from recsys.models.target_attention_ranker import TargetAttentionRanker, TwoStageFields
from recsys.nn.target_attention import ItemTable


@dataclass(frozen=True)
class DINConfig(TwoStageFields):
    d_rep: int = 16  # embedding width (attention and representation alike)
    max_len: int = 200  # history events attended over
    # genre vocabulary + 1 (0 = padding), 0 = no genre embeddings; auto: from the item features
    n_genres: int | Literal["auto"] = AUTO
    # rating levels of the history-ratings input (6: ratings 1..5), 0 = off; auto: from the data
    n_ratings: int | Literal["auto"] = AUTO
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.check_two_stage()
        for name in ("d_rep", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class DIN(TargetAttentionRanker):
    """Target attention of each candidate over the whole history, one table."""

    Config = DINConfig

    def __init__(self, cfg: DINConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self._side_features(cfg, n_items, item_features)
        self.rep = ItemTable(n_items, self.cfg.n_genres, cfg.d_rep)
        self._rating_and_head()

    def _attention_tables(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rep, rep

    def _top_k(self) -> int | None:
        return None  # the whole history
