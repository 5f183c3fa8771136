"""The model contract every recommender implements (train, eval and export use only this)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from recsys.data.datasets import trim_padding


class SequentialRecommender(nn.Module):
    """A plain `nn.Module` that turns item sequences into hidden states scored against item embeddings.

    Sequences are left-padded: `items` [B, L] long with 0 = pad, the most recent item in the last
    column, and `mask` [B, L] bool with True = real item. Scores are `hidden @ item_embeddings().T`.
    How the model is trained is its `objective`, a key of `recsys.objectives.OBJECTIVES`; anything
    the objective needs beyond this contract it asks for by a `Protocol` of its own.
    """

    Config: ClassVar[type[Any]]  # the model's frozen config dataclass, defined in its own file
    objective: str = "next_item"
    uses_item_features: bool = False  # True: the DataModule loads `ItemFeatures` (text, attributes) for it
    max_len: int

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, D] for left-padded `items` [B, L] and `mask` [B, L]."""
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        """Output item embeddings [n_items + 1, D]; row 0 (padding) is never recommended."""
        raise NotImplementedError

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One vector [B, D] per history, used to score the next item (last hidden state)."""
        return self.encode(items, mask)[:, -1]

    def observe_training_items(self, items: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Told the distinct item ids [K] of the training sequences before training starts, and how often
        each item occurs in them ([N + 1], where given); a model with per-item state taken only from training
        (e.g. ID rows beside text, a popularity prior) uses them; a no-op here."""
        del items, counts

    def score(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores [B, C] of `candidates` [B, C] (item ids) after the left-padded histories `items` [B, L].

        A dot product with the item table here; a model that ranks given candidates some other way
        (target attention over the history) overrides it and serves as a ranking stage.
        """
        user = self.sequence_representation(items, items != 0)  # [B, D]
        return torch.einsum("bd,bcd->bc", user, self.item_embeddings()[candidates])


def representation_by_length(model: SequentialRecommender, items: torch.Tensor, groups: int) -> torch.Tensor:
    """`model.sequence_representation` [B, D] of left-padded `items` [B, L], computed on `groups`
    slices of rows sorted by length, each trimmed to its own longest row.

    Rows are encoded independently (padding is masked and positions are right-aligned), so the
    result is the same as one call on the padded batch, for a fraction of the cost when lengths
    vary: a batch of mostly short histories is no longer padded to its longest one.
    """
    order = torch.argsort((items != 0).sum(1))  # [B] shortest first
    parts = []
    for rows in order.tensor_split(min(groups, len(order))):
        part = trim_padding(items[rows])
        parts.append(model.sequence_representation(part, part != 0))
    return torch.cat(parts)[torch.argsort(order)]  # back to the input order
