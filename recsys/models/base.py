"""The model contract every recommender implements (train, eval and export use only this)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from recsys.data.datasets import TrainBatch, trim_padding

# next_item: every position of a user's window predicts the item after it; masked: the model masks
# items and predicts them; cross_subsequence: one row per prefix of a window (ICSRec), predicting
# only the item after the prefix, with a positive view in `TrainBatch.positives`; window_views:
# next_item rows, each with a positive view of one of its prefixes (`TrainBatch.anchor_from_end`)
Objective = Literal["next_item", "masked", "cross_subsequence", "window_views"]


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

    def representation_by_length(self, items: torch.Tensor, groups: int) -> torch.Tensor:
        """`sequence_representation` [B, D] of left-padded `items` [B, L], computed on `groups` slices
        of rows sorted by length, each trimmed to its own longest row.

        Rows are encoded independently (padding is masked and positions are right-aligned), so the
        result is the same as one call on the padded batch, for a fraction of the cost when lengths
        vary: a batch of mostly short histories is no longer padded to its longest one.
        """
        order = torch.argsort((items != 0).sum(1))  # [B] shortest first
        parts = []
        for rows in order.tensor_split(min(groups, len(order))):
            part = trim_padding(items[rows])
            parts.append(self.sequence_representation(part, part != 0))
        return torch.cat(parts)[torch.argsort(order)]  # back to the input order

    def mask_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked-objective models: (inputs with mask tokens, targets with 0 = no target), both [B, L]."""
        raise NotImplementedError(f"{type(self).__name__} has objective {self.objective!r}, not 'masked'")

    def extra_loss(self, batch: TrainBatch, hidden: torch.Tensor) -> torch.Tensor | None:
        """Optional auxiliary loss added to the main one (contrastive terms); None by default.

        Args:
            batch: the training batch.
            hidden: [B, L, D] hidden states of the inputs the train module built from `batch.items`.
        """
        del batch, hidden
        return None

    def on_train_epoch_start(self, batches: Iterable[TrainBatch], epoch: int = 0) -> None:
        """Called before training epoch `epoch` (0-based) with one unshuffled pass over the training
        rows (ICSRec re-clusters its intents here); a no-op by default, which does not iterate."""
        del batches, epoch
