"""Longer inputs for a pretrained Hugging Face encoder (BERT family) than its position table holds.

`extend_positions(model, n)` grows the learned absolute position table to `n` rows by repeating the
pretrained rows (row i takes row i mod the old size), as Longformer extended RoBERTa's 512 positions
to 4,096 (Beltagy et al., 2020, section 5): positions the encoder was trained on stay exactly as they
were, and each new one starts from a position it knows, so fine-tuning starts from sensible inputs.
Recformer needs it for 50-item histories (~670 tokens) on all-MiniLM-L6-v2 (512 positions).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def extend_positions(model: Any, n_positions: int) -> None:
    """Grow `model`'s absolute position embeddings to `n_positions` rows, in place (a no-op when it
    already has as many). Raises if the model has no learned absolute position table."""
    embeddings = getattr(model, "embeddings", None)
    old = getattr(embeddings, "position_embeddings", None)
    if not isinstance(old, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no learned absolute position table to extend")
    if n_positions <= old.num_embeddings:
        return
    rows = torch.arange(n_positions) % old.num_embeddings
    new = nn.Embedding(n_positions, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[rows.to(old.weight.device)])
    assert embeddings is not None
    embeddings.position_embeddings = new
    device = old.weight.device
    embeddings.position_ids = torch.arange(n_positions, device=device)[None]
    if hasattr(embeddings, "token_type_ids"):
        embeddings.token_type_ids = torch.zeros(1, n_positions, dtype=torch.long, device=device)
    model.config.max_position_embeddings = n_positions
