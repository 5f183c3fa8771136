"""TransformerEncoder and embeddings: shapes, causality, padding invariance, backends agree."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.nn.attention import ATTENTION
from recsys.nn.blocks import TransformerEncoder
from recsys.nn.embeddings import ItemEmbedding, PositionalEmbedding

B, L, D, HEADS = 3, 13, 36, 3


def _encoder(attention: str, causal: bool) -> TransformerEncoder:
    torch.manual_seed(0)
    enc = TransformerEncoder(
        hidden=D,
        n_layers=2,
        n_heads=HEADS,
        dropout=0.1,
        attn_dropout=0.1,
        attention=attention,
        causal=causal,
        chunk_size=5,
    )
    return enc.double().eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :4] = False
    mask[2] = False  # an all-padding row
    x = torch.randn(B, L, D, generator=g, dtype=torch.float64) * mask[..., None]
    return x, mask


@pytest.mark.parametrize("attention", sorted(ATTENTION))
@pytest.mark.parametrize("causal", [True, False])
def test_shapes_padding_zeroed_and_finite(attention: str, causal: bool) -> None:
    x, mask = _batch()
    x.requires_grad_(True)
    out = _encoder(attention, causal)(x, mask)
    assert out.shape == (B, L, D)
    assert torch.all(out[~mask] == 0)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("attention", sorted(ATTENTION))
def test_encoder_is_causal(attention: str) -> None:
    enc = _encoder(attention, causal=True)
    x, mask = _batch()
    out = enc(x, mask)
    t = 8
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :])
    out2 = enc(x2, mask)
    torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention", sorted(ATTENTION))
@pytest.mark.parametrize("causal", [True, False])
def test_padded_values_never_change_real_outputs(attention: str, causal: bool) -> None:
    enc = _encoder(attention, causal)
    x, mask = _batch()
    x2 = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    torch.testing.assert_close(enc(x2, mask), enc(x, mask), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_encoder_matches_eager_encoder(causal: bool) -> None:
    x, mask = _batch()
    eager, sdpa = _encoder("eager", causal), _encoder("sdpa", causal)
    sdpa.load_state_dict(eager.state_dict())
    torch.testing.assert_close(sdpa(x, mask), eager(x, mask))


def test_dropout_only_in_training() -> None:
    enc = _encoder("sdpa", causal=True)
    x, mask = _batch()
    torch.testing.assert_close(enc(x, mask), enc(x, mask))
    enc.train()
    assert not torch.allclose(enc(x, mask), enc(x, mask))


def test_hidden_not_divisible_by_heads_names_values() -> None:
    with pytest.raises(ValueError, match="hidden=32.*n_heads=3"):
        TransformerEncoder(hidden=32, n_layers=1, n_heads=3, dropout=0.0, attn_dropout=0.0, causal=True)


def test_unknown_attention_raises_key_error() -> None:
    with pytest.raises(KeyError, match="valid names"):
        TransformerEncoder(
            hidden=36, n_layers=1, n_heads=3, dropout=0.0, attn_dropout=0.0, attention="nope", causal=True
        )


def test_item_embedding_padding_row_and_scoring_table() -> None:
    emb = ItemEmbedding(n_items=10, hidden=D, n_special=1)  # e.g. BERT4Rec's mask token = 11
    assert emb.weight.shape == (12, D)
    assert torch.all(emb.weight[0] == 0)
    assert emb.item_weight().shape == (11, D)
    assert emb.weight[1:].std().item() == pytest.approx(0.02, rel=0.3)
    items = torch.tensor([[0, 0, 3, 11]])
    out = emb(items)
    assert torch.all(out[0, :2] == 0)
    out.sum().backward()
    assert torch.all(emb.weight.grad[0] == 0)  # padding row never trains


def test_positional_embedding_is_right_aligned() -> None:
    pos = PositionalEmbedding(max_len=20, hidden=D)
    full = pos(20)
    assert full.shape == (20, D)
    torch.testing.assert_close(pos(L), full[-L:])  # the last column is always position max_len - 1
    with pytest.raises(ValueError, match="max_len=20"):
        pos(21)


def test_model_style_usage_end_to_end() -> None:
    items = torch.tensor([[0, 0, 0, 5, 2, 7, 1], [4, 4, 3, 2, 9, 8, 6]])
    mask = items != 0
    item_emb, pos_emb = ItemEmbedding(9, D), PositionalEmbedding(7, D)
    enc = TransformerEncoder(hidden=D, n_layers=2, n_heads=HEADS, dropout=0.1, attn_dropout=0.1, causal=True)
    x = item_emb(items) * math.sqrt(D) + pos_emb(items.shape[1])
    x = torch.nn.functional.dropout(x, 0.1) * mask[..., None]
    hidden = enc(x, mask)
    logits = hidden @ item_emb.item_weight().T  # [B, L, N + 1]
    assert logits.shape == (2, 7, 10)


def test_post_norm_blocks_end_each_residual_sum_in_a_layernorm() -> None:
    """Post-norm (BERT): every real row leaves the stack LayerNorm'd (mean 0, variance 1 at the
    initial affine), with no final LayerNorm; pre-norm keeps the final one. Both zero the padding."""
    x, mask = _batch()

    def plain(norm: str) -> TransformerEncoder:
        enc = TransformerEncoder(
            hidden=D, n_layers=2, n_heads=HEADS, dropout=0.0, attn_dropout=0.0, causal=True, norm=norm
        )
        return enc.double().eval()

    post = plain("post")
    assert not any(n.startswith("ln_f") for n, _ in post.named_parameters())
    out = post(x, mask)[mask]  # [T, D]
    zeros, ones = torch.zeros(len(out), dtype=torch.float64), torch.ones(len(out), dtype=torch.float64)
    torch.testing.assert_close(out.mean(-1), zeros, atol=1e-9, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), ones, atol=1e-4, rtol=0)
    assert (post(x, mask)[~mask] == 0).all()
    assert any(n.startswith("ln_f") for n, _ in plain("pre").named_parameters())
    with pytest.raises(ValueError, match="norm='mid' is not one of"):
        plain("mid")
