"""Item sequence -> hidden states: embeddings + positions + a `TransformerEncoder` (shared by models).

SASRec, BERT4Rec and ICSRec are thin wrappers around this module; their configs carry the
fields of `EncoderFields` and are checked by `validate_encoder_fields`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from torch import Tensor, nn

from recsys.nn.attention import ATTENTION
from recsys.nn.blocks import NORMS, TransformerEncoder
from recsys.nn.dropout import Dropout
from recsys.nn.embeddings import ItemEmbedding, PositionalEmbedding
from recsys.nn.item_tower import ItemTower
from recsys.nn.packing import TokenLayout


class EncoderFields(Protocol):
    """The config fields every sequence-encoder model has (read-only: model configs are frozen)."""

    @property
    def max_len(self) -> int: ...

    @property
    def hidden(self) -> int: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def n_heads(self) -> int: ...

    @property
    def dropout(self) -> float: ...

    @property
    def attn_dropout(self) -> float: ...

    @property
    def attention(self) -> str: ...

    @property
    def chunk_size(self) -> int: ...

    @property
    def norm(self) -> str: ...


def validate_encoder_fields(cfg: EncoderFields) -> None:
    """Raise ValueError naming the field when an encoder setting is out of range."""
    for name in ("max_len", "hidden", "n_layers", "n_heads", "chunk_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.hidden % cfg.n_heads:
        raise ValueError(f"hidden={cfg.hidden} must be divisible by n_heads={cfg.n_heads}")
    for name in ("dropout", "attn_dropout"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")
    if cfg.attention not in ATTENTION:
        raise ValueError(f"attention={cfg.attention!r} is not one of {sorted(ATTENTION)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"norm={cfg.norm!r} is not one of {list(NORMS)}")


# a batch whose real tokens are fewer than this share of its [B, L] grid is encoded unpadded
UNPAD_BELOW_REAL_SHARE = 0.5


class ItemSequenceEncoder(nn.Module):
    """Left-padded `items` [B, L] -> hidden [B, L, D]; item table tied for scoring.

    With `norm: pre` (nanoGPT / SASRec) the item embeddings are scaled by sqrt(D) and added to the
    positions; with `norm: post` (BERT's layout, as the BERT4Rec and ICSRec reference code) their
    unscaled sum goes through a LayerNorm, and so does every block's residual sum.

    Args:
        cfg: encoder fields (see `EncoderFields`).
        n_items: real items, ids 1..n_items (0 = padding).
        causal: whether position t only sees positions <= t.
        n_special: extra embedding rows after the items (e.g. a mask token).
        item_emb: the item table to use instead of an ID table of its own (an `ItemTower`: ID and
            text views), looked up by id and tied for scoring the same way.
    """

    def __init__(
        self,
        cfg: EncoderFields,
        n_items: int,
        *,
        causal: bool,
        n_special: int = 0,
        item_emb: ItemTower | None = None,
    ) -> None:
        super().__init__()
        # pre: scale by sqrt(D) as in SASRec / Transformer, so items dominate the positions at init
        self.item_scale = math.sqrt(cfg.hidden) if cfg.norm == "pre" else 1.0
        self.emb_norm: nn.Module = nn.LayerNorm(cfg.hidden) if cfg.norm == "post" else nn.Identity()
        self.item_emb: ItemEmbedding | ItemTower = (
            ItemEmbedding(n_items, cfg.hidden, n_special=n_special) if item_emb is None else item_emb
        )
        self.pos_emb = PositionalEmbedding(cfg.max_len, cfg.hidden)
        self.dropout = Dropout(cfg.dropout)
        self.unpad = True  # skip padding in every layer but attention (mostly-padding batches); False: never
        self.encoder = TransformerEncoder(
            hidden=cfg.hidden,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            attn_dropout=cfg.attn_dropout,
            attention=cfg.attention,
            causal=causal,
            chunk_size=cfg.chunk_size,
            norm=cfg.norm,
        )

    def forward(
        self,
        items: Tensor,
        mask: Tensor,
        *,
        unpad: bool | None = None,
        embed: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Hidden states [B, L, D] of left-padded `items` [B, L] (zeros at padding).

        `embed` looks the items up instead of the item table (one view of an `ItemTower`, read by
        the same blocks as the other view).

        `unpad` runs every layer but attention on the real tokens only (`TokenLayout`); False is the
        padded reference computation, with the same values. By default (None) a batch is unpadded
        when the `unpad` attribute is set and padding is most of it: packing costs index copies in
        every block, more than it saves on a batch with little padding (ICSRec's length-grouped
        batches, with this rule: 129 s vs 153 s padded per Beauty epoch,
        bench/results/train_unpad_icsrec.json).
        """
        embed = self.item_emb if embed is None else embed
        positions = self.pos_emb(items.shape[1])  # [L, D]
        if unpad is None:
            unpad = self.unpad and bool(mask.sum() < UNPAD_BELOW_REAL_SHARE * mask.numel())
        if not unpad:
            x = self.emb_norm(embed(items) * self.item_scale + positions)  # [B, L, D]
            x = self.dropout(x) * mask[..., None]
            hidden: Tensor = self.encoder(x, mask)  # [B, L, D]
            return hidden
        layout = TokenLayout.of(mask)
        x = embed(items.reshape(-1)[layout.flat]) * self.item_scale  # [T, D]
        x = self.dropout(self.emb_norm(x + positions[layout.columns()]))  # [T, D]
        return layout.unpack(self.encoder(x, mask, layout))  # [B, L, D]

    def item_weight(self) -> Tensor:
        return self.item_emb.item_weight()  # [N + 1, D]
