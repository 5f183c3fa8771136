"""DARE (Feng et al., ICLR 2025): decoupled attention and representation embeddings for long histories.

Each candidate searches the history (stage 1: the top-K behaviours by the dot product of *attention*
embeddings), then attends over those K (stage 2: weights from the attention embeddings, values from
separate *representation* embeddings), and an MLP on [candidate, aggregate, candidate * aggregate]
gives the logit. Two tables, so the search width `d_att` can be much smaller than `d_rep`. Its
baselines with one coupled table are `twin.py` and `din.py`; the shared parts are in
`recsys.nn.target_attention`.
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
class DAREConfig(TwoStageFields):
    d_att: int = 16  # attention (search) embedding width; the paper's point: it can be much smaller
    d_rep: int = 16  # representation embedding width
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
        for name in ("d_att", "d_rep", "top_k", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class DARE(TargetAttentionRanker):
    """Target attention over the top-K searched behaviours, with separate attention and
    representation tables."""

    Config = DAREConfig

    def __init__(self, cfg: DAREConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self._side_features(cfg, n_items, item_features)
        self.rep = ItemTable(n_items, self.cfg.n_genres, cfg.d_rep)
        self.att = ItemTable(n_items, self.cfg.n_genres, cfg.d_att)
        self._rating_and_head()

    def _attention_tables(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        del rep  # DARE searches with its own attention table
        att = self.att(self.item_genres)  # [N + 1, A]
        return att, att

    def _top_k(self) -> int | None:
        return int(self.cfg.top_k)
