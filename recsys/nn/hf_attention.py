"""Our attention backends inside a pretrained Hugging Face encoder (BERT family).

`use_linear_attention(model)` switches every self-attention layer of a loaded `transformers` model
to `recsys.nn.linear_attention` (bidirectional, O(L) memory), keeping its pretrained projections:
the affordable path for long text sequences (Recformer's histories), in place of the paper's
Longformer. Transformers dispatches attention through a registry of functions by name; this module
registers ours under `LINEAR` with a boolean padding mask (True = attend).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from recsys.nn.linear_attention import linear_attention

LINEAR = "recsys_linear"


def hf_linear_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """Transformers' attention-function signature over `linear_attention`.

    Args:
        module: the calling attention layer (unused: no state of its own).
        query, key, value: [B, H, L, Dh].
        attention_mask: None or a padding mask broadcastable to [B, 1, L, L], boolean (True = attend)
            or additive (0 = attend); every query row sees the same keys (bidirectional).
        scaling, dropout: unused: the kernel feature map has no temperature and no attention matrix.

    Returns:
        ([B, L, H, Dh], None): outputs in transformers' layout, and no attention weights.
    """
    del module, scaling, dropout, kwargs
    keep = None
    if attention_mask is not None:
        row = attention_mask[:, 0, 0, :] if attention_mask.dim() == 4 else attention_mask
        keep = row if row.dtype == torch.bool else row == 0
        keep = keep.expand(query.shape[0], key.shape[2])
    out = linear_attention(query, key, value, causal=False, key_padding_mask=keep, dropout=0.0)
    return out.transpose(1, 2).contiguous(), None


def use_linear_attention(model: Any) -> None:
    """Switch a loaded transformers model's self-attention to `hf_linear_attention` (in place)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(LINEAR, hf_linear_attention)
    AttentionMaskInterface.register(LINEAR, sdpa_mask)
    model.set_attn_implementation(LINEAR)
