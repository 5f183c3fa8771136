"""Transformer encoder shared by SASRec, BERT4Rec and friends.

Blocks are pre-norm (nanoGPT-style, with a final LayerNorm) or post-norm (the original BERT's,
as in the BERT4Rec and ICSRec reference code: LayerNorm after each residual sum, no final one).
Attention is any backend from `recsys.nn.attention`, chosen by name. Init: normal(0, 0.02) for
Linear weights, zero biases, and the residual output projections scaled by 1/sqrt(2 * n_layers)
(GPT-2 / nanoGPT), so the residual stream does not grow with depth.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from recsys.nn.attention import get_attention
from recsys.nn.dropout import Dropout
from recsys.nn.packing import TokenLayout


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(D, mult*D) -> GELU -> Linear(mult*D, D) -> Dropout."""

    def __init__(self, hidden: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden, mult * hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(mult * hidden, hidden)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.proj(self.act(self.fc(x))))  # [B, L, D]
        return out


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention over a left-padded batch, using a named backend."""

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        *,
        attn_dropout: float,
        attention: str,
        causal: bool,
        chunk_size: int = 64,
    ) -> None:
        super().__init__()
        if hidden % n_heads != 0:
            raise ValueError(f"hidden={hidden} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.causal = causal
        self.attn_dropout = attn_dropout
        self.attn_fn = get_attention(attention, chunk_size=chunk_size)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor, mask: Tensor, layout: TokenLayout | None = None) -> Tensor:
        """x [B, L, D] -> [B, L, D]; or, with `layout`, the real tokens x [T, D] -> [T, D]."""
        qkv = self.qkv(x)  # [B, L, 3D] or [T, 3D]
        if layout is not None:
            qkv = layout.unpack(qkv)  # [B, L, 3D], zeros at padding (masked keys, zeroed queries)
        B, L, D3 = qkv.shape
        D, H = D3 // 3, self.n_heads
        q, k, v = qkv.split(D, dim=-1)  # 3 x [B, L, D]
        q = q.view(B, L, H, D // H).transpose(1, 2)  # [B, H, L, Dh]
        k = k.view(B, L, H, D // H).transpose(1, 2)  # [B, H, L, Dh]
        v = v.view(B, L, H, D // H).transpose(1, 2)  # [B, H, L, Dh]
        dropout = self.attn_dropout if self.training else 0.0
        y = self.attn_fn(q, k, v, causal=self.causal, key_padding_mask=mask, dropout=dropout)
        y = y.transpose(1, 2).reshape(B, L, D)  # [B, L, D]
        if layout is not None:
            y = layout.pack(y)  # [T, D]
        out: Tensor = self.proj(y)  # [B, L, D] or [T, D]
        return out


NORMS = ("pre", "post")  # where a block's LayerNorms sit


class TransformerBlock(nn.Module):
    """Pre-norm: x + Dropout(Attn(LN(x))), then x + FFN(LN(x)) (FFN ends in its own dropout).
    Post-norm: LN(x + Dropout(Attn(x))), then LN(x + FFN(x))."""

    def __init__(
        self,
        hidden: int,
        n_heads: int,
        *,
        dropout: float,
        attn_dropout: float,
        attention: str,
        causal: bool,
        ffn_mult: int = 4,
        chunk_size: int = 64,
        norm: str = "pre",
    ) -> None:
        super().__init__()
        self.post_norm = norm == "post"
        self.ln_attn = nn.LayerNorm(hidden)
        self.attn = MultiHeadAttention(
            hidden, n_heads, attn_dropout=attn_dropout, attention=attention, causal=causal, chunk_size=chunk_size
        )
        self.dropout = Dropout(dropout)
        self.ln_ffn = nn.LayerNorm(hidden)
        self.ffn = FeedForward(hidden, ffn_mult, dropout)

    def forward(self, x: Tensor, mask: Tensor, layout: TokenLayout | None = None) -> Tensor:
        """x [B, L, D], or the real tokens [T, D] with their `layout` -> the same shape."""
        if self.post_norm:
            x = self.ln_attn(x + self.dropout(self.attn(x, mask, layout)))
            out: Tensor = self.ln_ffn(x + self.ffn(x))
            return out
        x = x + self.dropout(self.attn(self.ln_attn(x), mask, layout))
        x = x + self.ffn(self.ln_ffn(x))
        return x


class TransformerEncoder(nn.Module):
    """A stack of blocks (pre-norm ones end in a final LayerNorm); outputs at padded positions are zero.

    Args:
        hidden: model width D (divisible by n_heads).
        n_layers: number of blocks.
        n_heads: attention heads per block.
        dropout: residual and FFN dropout.
        attn_dropout: attention-weight dropout (ignored by the linear backends).
        attention: backend name, a key of `recsys.nn.attention.ATTENTION`.
        causal: True for next-item models (SASRec), False for bidirectional ones (BERT4Rec).
        ffn_mult: FFN inner width as a multiple of D.
        chunk_size: chunk length for the chunked linear-attention backends.
        norm: "pre" or "post", where each block's LayerNorms sit (see `TransformerBlock`).
    """

    def __init__(
        self,
        *,
        hidden: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        attn_dropout: float,
        attention: str = "sdpa",
        causal: bool,
        ffn_mult: int = 4,
        chunk_size: int = 64,
        norm: str = "pre",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not one of {list(NORMS)}")
        if n_heads < 1 or hidden % n_heads != 0:
            raise ValueError(f"hidden={hidden} must be divisible by n_heads={n_heads}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.blocks = nn.ModuleList(
            TransformerBlock(
                hidden,
                n_heads,
                dropout=dropout,
                attn_dropout=attn_dropout,
                attention=attention,
                causal=causal,
                ffn_mult=ffn_mult,
                chunk_size=chunk_size,
                norm=norm,
            )
            for _ in range(n_layers)
        )
        self.ln_f: nn.Module = nn.LayerNorm(hidden) if norm == "pre" else nn.Identity()
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # residual output projections (attn and FFN)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, mask: Tensor, layout: TokenLayout | None = None) -> Tensor:
        """Encode x [B, L, D] under mask [B, L] (bool, True = real) -> hidden [B, L, D].

        With `layout` (the mask's `TokenLayout`), x is the real tokens [T, D] and so is the
        result: every layer but attention skips the padding. The same values as the padded call.
        """
        if layout is not None:
            for block in self.blocks:
                x = block(x, mask, layout)  # [T, D]
            packed: Tensor = self.ln_f(x)  # [T, D]
            return packed
        keep = mask[..., None].to(x.dtype)  # [B, L, 1]
        for block in self.blocks:
            # Zeroing padded rows after each block keeps them from accumulating junk; real rows
            # never read them (attention masks padded keys).
            x = block(x, mask) * keep
        out: Tensor = self.ln_f(x) * keep  # [B, L, D]
        return out
