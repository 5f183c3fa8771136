"""DARE (Feng et al., ICLR 2025): decoupled attention and representation embeddings for long histories,
with its baselines TWIN (one coupled table), TWIN with linear projections and DIN (no search).

Scoring is not a dot product with an item table: each candidate searches the history (stage 1,
top-K behaviours by attention-embedding dot product), then attends over those K (stage 2, weights
from attention embeddings, values from representation embeddings), and an MLP on
[candidate, aggregate, candidate * aggregate] gives the logit. So the model implements `score`
(and not `encode` / `item_embeddings`) and serves as a ranking stage after a retrieval model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.base import SequentialRecommender

Variant = Literal["dare", "twin", "twin_proj", "din"]


@dataclass(frozen=True)
class DAREConfig:
    variant: Variant = "dare"  # twin / din: one table for attention and representation (d_att == d_rep)
    d_att: int = 16  # attention (search) embedding width; the paper's point: it can be much smaller
    d_rep: int = 16  # representation embedding width
    top_k: int = 20  # behaviours kept by the stage-1 search (din attends over the whole history)
    max_len: int = 200  # history events scored
    n_genres: int = 0  # genre vocabulary + 1 (0 = padding); 0 turns genre embeddings off
    n_ratings: int = 0  # 6 to embed history ratings 1..5 as a side feature; 0 = off
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_att", "d_rep", "top_k", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.variant in ("twin", "din") and self.d_att != self.d_rep:
            raise ValueError(f"d_att must equal d_rep for variant {self.variant!r} (one table), got {self.d_att}")
        if self.n_genres < 0 or self.n_ratings < 0:
            raise ValueError(f"n_genres and n_ratings must be >= 0, got {self.n_genres}, {self.n_ratings}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def search_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 search: positions [..., k'] of the k highest `scores` [..., L] (padding = -inf) and
    whether each is a real behaviour [..., k']; k' = min(k, L). Among equal scores any may be kept."""
    top, idx = torch.topk(scores, min(k, scores.shape[-1]), dim=-1)
    return idx, torch.isfinite(top)


def search_topk_reference(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow twin of `search_topk`: a full stable sort, ties broken towards the earlier position."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return order, torch.isfinite(scores.gather(-1, order))


def genre_table(features: ItemFeatures, n_genres: int) -> torch.Tensor:
    """[n_items + 1, G] long genre ids (1-based over the sorted genre names, 0 = none) of every item."""
    values = features.text.get("genres", [None] * (features.n_items + 1))
    lists = [[g for g in (v or "").split(", ") if g] for v in values]
    vocab = {name: i + 1 for i, name in enumerate(sorted({g for gs in lists for g in gs}))}
    if len(vocab) + 1 > n_genres:
        raise ValueError(f"n_genres must be >= {len(vocab) + 1} (genres + padding) for this dataset, got {n_genres}")
    table = torch.zeros(len(lists), max(1, max(map(len, lists))), dtype=torch.long)
    for row, gs in enumerate(lists):
        table[row, : len(gs)] = torch.tensor([vocab[g] for g in gs], dtype=torch.long)
    return table


class _Embedder(nn.Module):
    """Item id (+ mean genre) embeddings of one width, as a table [n_items + 1, width * (1 + has genres)]."""

    def __init__(self, n_items: int, n_genres: int, width: int) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, width, padding_idx=0)
        self.genre = nn.Embedding(n_genres, width, padding_idx=0) if n_genres else None
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, item_genres: torch.Tensor) -> torch.Tensor:
        if self.genre is None:
            return self.item.weight
        per_item = self.genre(item_genres).sum(1) / (item_genres != 0).sum(1, keepdim=True).clamp(min=1)  # [N+1, W]
        return torch.cat([self.item.weight, per_item], dim=-1)


class DARE(SequentialRecommender):
    """A target-attention ranker over long histories; `Config.variant` picks DARE or a baseline."""

    Config = DAREConfig
    objective = "labelled_candidates"
    uses_item_features = True  # genres; may be built without (then genres are all 0, e.g. to load weights)

    def __init__(self, config: DAREConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self.config = config
        self.max_len = config.max_len
        genres = (
            genre_table(item_features, config.n_genres)
            if item_features is not None and config.n_genres
            else torch.zeros(n_items + 1, 1, dtype=torch.long)
        )
        self.register_buffer("item_genres", genres)  # [N + 1, G]
        self.rep = _Embedder(n_items, config.n_genres, config.d_rep)
        self.att = _Embedder(n_items, config.n_genres, config.d_att) if config.variant == "dare" else None
        rep_dim = config.d_rep * (2 if config.n_genres else 1)
        att_dim = config.d_att * (2 if config.n_genres else 1)
        self.proj_q = nn.Linear(rep_dim, att_dim, bias=False) if config.variant == "twin_proj" else None
        self.proj_k = nn.Linear(rep_dim, att_dim, bias=False) if config.variant == "twin_proj" else None
        self.att_dim = att_dim if config.variant in ("dare", "twin_proj") else rep_dim
        self.rating = nn.Embedding(config.n_ratings, rep_dim, padding_idx=0) if config.n_ratings else None
        layers: list[nn.Module] = []
        width = 3 * rep_dim
        for hidden in config.mlp:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("DARE scores given candidates (score / logits); it has no hidden states")

    def item_embeddings(self) -> torch.Tensor:
        raise NotImplementedError("DARE scores given candidates (score / logits); it has no item table")

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value tables [N + 1, A], [N + 1, A], [N + 1, R], computed once per call."""
        rep = self.rep(self.item_genres)
        if self.att is not None:  # DARE: a table of its own
            att = self.att(self.item_genres)
            return att, att, rep
        if self.proj_q is not None and self.proj_k is not None:  # TWIN with linear projections
            return self.proj_q(rep), self.proj_k(rep), rep
        return rep, rep, rep  # TWIN / DIN: the representation table itself

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Search / attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        q_tab, k_tab, _ = self._tables()
        return self._scores(q_tab[candidates], k_tab[items], items)

    def _scores(self, q: torch.Tensor, k: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bca,bla->bcl", q, k) / math.sqrt(self.att_dim)  # [B, C, L]
        return scores.masked_fill((items == 0)[:, None, :], float("-inf"))

    def logits(
        self, items: torch.Tensor, candidates: torch.Tensor, ratings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after histories `items` [B, L] (`ratings` [B, L] optional)."""
        items = items[:, -self.max_len :]
        q_tab, k_tab, rep = self._tables()
        scores = self._scores(q_tab[candidates], k_tab[items], items)  # [B, C, L]
        values = rep[items]  # [B, L, R]
        if self.rating is not None and ratings is not None:
            values = values + self.rating(ratings[:, -self.max_len :].clamp(0, self.config.n_ratings - 1))
        if self.config.variant == "din":  # target attention over the whole history
            weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an empty history gives zeros
            agg = torch.einsum("bcl,blr->bcr", weights, values)
        else:
            idx, real = search_topk(scores, self.config.top_k)  # [B, C, K]
            top = scores.gather(-1, idx).masked_fill(~real, float("-inf"))
            weights = torch.softmax(top, dim=-1).nan_to_num(0.0)  # [B, C, K]
            picked = values[torch.arange(len(idx))[:, None, None], idx]  # [B, C, K, R]
            agg = (weights[..., None] * picked).sum(2)  # [B, C, R]
        cand = rep[candidates]  # [B, C, R]
        out: torch.Tensor = self.mlp(torch.cat([cand, agg, cand * agg], dim=-1))  # [B, C, 1]
        return out.squeeze(-1)

    def score(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after the left-padded histories `items` [B, L]."""
        return self.logits(items, candidates)
