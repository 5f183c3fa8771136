"""The model contract every recommender implements (train, eval and export use only this)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Objective = Literal["next_item", "masked"]


class SequentialRecommender(nn.Module):
    """A plain `nn.Module` that turns item sequences into hidden states scored against item embeddings.

    Sequences are left-padded: `items` [B, L] long with 0 = pad, the most recent item in the last
    column, and `mask` [B, L] bool with True = real item. Scores are `hidden @ item_embeddings().T`.
    """

    objective: Objective = "next_item"  # which training batches the model learns from
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

    def mask_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked-objective models: (inputs with mask tokens, targets with 0 = no target), both [B, L]."""
        raise NotImplementedError(f"{type(self).__name__} has objective {self.objective!r}, not 'masked'")

    def extra_loss(self, items: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
        """Optional auxiliary objective added to the main loss (contrastive terms); None by default."""
        del items, mask, hidden
        return None
