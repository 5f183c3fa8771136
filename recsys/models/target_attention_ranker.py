"""What DARE, TWIN and DIN share: a ranker that attends from each candidate over the user's history.

Side features (genres, history ratings) are resolved from the data (`auto`), the representation
table holds item + mean-genre vectors, ratings add to the history's values, and an MLP on
[candidate, aggregate, candidate * aggregate] gives the logit. A subclass says how a candidate's
attention query and key tables are made (`_attention_tables`) and how many behaviours the
search keeps (`_top_k`, None = the whole history); the layers are built in the subclass's
`__init__` in its own order, so weights drawn from a seed stay what they were.

As a second stage after retrieval (`TwoStageFields`, all off by default): a recency embedding per
history position (the DARE reference's time embedding, concatenated to the attention and the
representation vectors), the retrieval score and rank of each candidate as inputs of the head, and
a final score that adds `stage1_weight` x the standardised retrieval score to the ranker's logit
(the weight is chosen on validation after training: `recsys.eval.two_stage`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.ranker import Ranker, RankerData, resolve_count
from recsys.nn.target_attention import (
    ItemTable,
    RecencyTable,
    attend,
    attention_logits,
    candidate_mlp,
    genre_table,
    genre_vocabulary_size,
    head_logits,
    recency_positions,
    stage1_features,
    standardized,
    with_ratings,
)

STAGE1_FEATURES = 2  # what `stage1_features` gives per candidate: standardised score, scaled rank


@dataclass(frozen=True)
class TwoStageFields:
    """The second-stage settings every target-attention ranker's config carries (defaults: off)."""

    d_time: int = 0  # recency embedding width (the DARE reference: 16); 0 = none
    stage1_inputs: bool = False  # the candidate's retrieval score and rank are inputs of the head
    stage1_weight: float = 0.0  # final score = logit + this x the standardised retrieval score

    def check_two_stage(self) -> None:
        """Raise `ValueError` naming a bad second-stage field."""
        if self.d_time < 0:
            raise ValueError(f"d_time must be >= 0, got {self.d_time}")
        if not math.isfinite(self.stage1_weight) or self.stage1_weight < 0:
            raise ValueError(f"stage1_weight must be a finite number >= 0, got {self.stage1_weight}")


class TargetAttentionRanker(Ranker):
    """A ranker whose candidates attend over the history (see the module docstring)."""

    uses_item_features = True  # genres; built without them (to load weights), the genre table is the saved one
    rep: ItemTable
    rating: nn.Embedding | None
    mlp: nn.Sequential
    recency: RecencyTable | None

    @classmethod
    def resolve_config(cls, cfg: Any, data: RankerData) -> Any:
        """`n_genres: auto` -> the genre vocabulary of `data.item_features`; `n_ratings: auto` ->
        `data.rating_levels` (0 when the data gives no ratings as an input)."""
        n_genres = resolve_count(cfg.n_genres, genre_vocabulary_size(data.item_features))
        return dataclasses.replace(cfg, n_genres=n_genres, n_ratings=resolve_count(cfg.n_ratings, data.rating_levels))

    def _side_features(self, cfg: Any, n_items: int, item_features: ItemFeatures | None) -> Any:
        """Keep the resolved `cfg` and register the items' genre table; returns the resolved config."""
        self.cfg = cfg = self.resolve_config(cfg, RankerData(item_features))
        assert isinstance(cfg.n_genres, int) and isinstance(cfg.n_ratings, int)  # resolved above
        self.max_len, self.n_items = cfg.max_len, n_items
        genres = (
            genre_table(item_features, cfg.n_genres)
            if item_features is not None and cfg.n_genres
            else torch.zeros(n_items + 1, 1, dtype=torch.long)
        )
        self.register_buffer("item_genres", genres)  # [N + 1, G]
        return cfg

    def _width(self, d: int) -> int:
        """Width of a table of `d`-wide item vectors: doubled by the mean genre vector when genres are on."""
        return d * (2 if self.cfg.n_genres else 1)

    def _rating_and_head(self) -> None:
        """The history-rating embedding (when the data gives ratings), the MLP head and (last, so the
        other layers draw the weights they drew without it) the recency embedding."""
        rep_dim = self._width(self.cfg.d_rep)
        self.rating = nn.Embedding(self.cfg.n_ratings, rep_dim, padding_idx=0) if self.cfg.n_ratings else None
        extra = STAGE1_FEATURES if self.cfg.stage1_inputs else 0
        self.mlp = candidate_mlp(rep_dim + self.cfg.d_time, self.cfg.mlp, self.cfg.dropout, extra)
        self.recency = RecencyTable(self.cfg.max_len, self.cfg.d_time) if self.cfg.d_time else None

    @abc.abstractmethod
    def _attention_tables(self, rep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and key tables [N + 1, A] of the search, given the representation table `rep` [N + 1, R]."""

    @abc.abstractmethod
    def _top_k(self) -> int | None:
        """Behaviours kept by the search; None attends over the whole history."""

    def _attention_logits(
        self, rep: torch.Tensor, items: torch.Tensor, candidates: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Logits [B, C, L] of `candidates` [B, C] over `items` [B, L] at recency `positions` [B, L]; pad = -inf."""
        queries, keys = self._attention_tables(rep)
        q, k = queries[candidates], keys[items]  # [B, C, A], [B, L, A]
        if self.recency is not None:
            q = self.recency.attention(q, torch.zeros_like(candidates))
            k = self.recency.attention(k, positions)
        return attention_logits(q, k, items)

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Search / attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        items = items[:, -self.max_len :]
        return self._attention_logits(self.rep(self.item_genres), items, candidates, recency_positions(items))

    def ranker_logits(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The head's logits [B, C], before the retrieval score is added (what the loss trains)."""
        items = items[:, -self.max_len :]
        positions = recency_positions(items)
        rep = self.rep(self.item_genres)  # [N + 1, R]
        scores = self._attention_logits(rep, items, candidates, positions)  # [B, C, L]
        values = with_ratings(rep[items], ratings, self.rating, self.max_len)  # [B, L, R]
        cand = rep[candidates]  # [B, C, R]
        if self.recency is not None:
            values = self.recency.representation(values, positions)
            cand = self.recency.representation(cand, torch.zeros_like(candidates))
        agg = attend(scores, values, self._top_k())  # [B, C, R']
        extra = stage1_features(stage1_scores) if self.cfg.stage1_inputs else None
        return head_logits(self.mlp, cand, agg, extra)

    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final scores [B, C] of `candidates` [B, C] after histories `items` [B, L] (`ratings` [B, L]
        optional): the head's logit plus `stage1_weight` x the standardised `stage1_scores` [B, C]."""
        logits = self.ranker_logits(items, candidates, stage1_scores, ratings=ratings)
        if self.cfg.stage1_weight:
            logits = logits + self.cfg.stage1_weight * standardized(stage1_scores.float())
        return logits
