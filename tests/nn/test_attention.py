"""Every attention backend against the eager reference, plus causality, padding and NaN checks."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.attention import ATTENTION, eager_attention, get_attention
from recsys.nn.linear_attention import linear_attention

B, H, L, DH = 3, 3, 13, 12  # hidden 36 / 3 heads, odd L


def _inputs(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, DH, generator=g, dtype=dtype) for _ in range(3))
    return q, k, v


def _left_padded_mask() -> torch.Tensor:
    """Row 0: 4 pads then 9 items; row 1: no padding; row 2: all padding."""
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :4] = False
    mask[2] = False
    return mask


def _run(name: str, q, k, v, *, causal: bool, mask: torch.Tensor | None) -> torch.Tensor:
    return get_attention(name)(q, k, v, causal=causal, key_padding_mask=mask, dropout=0.0)


def _out_and_grads(fn, q, k, v, **kw) -> tuple[torch.Tensor, ...]:
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, dropout=0.0, **kw)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    dq, dk, dv = torch.autograd.grad((out * weight).sum(), (q, k, v))
    return out, dq, dk, dv


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [True, False])
def test_sdpa_matches_eager_outputs_and_grads(causal: bool, padded: bool) -> None:
    q, k, v = _inputs()
    mask = _left_padded_mask() if padded else None
    ref = _out_and_grads(eager_attention, q, k, v, causal=causal, key_padding_mask=mask)
    got = _out_and_grads(ATTENTION["sdpa"], q, k, v, causal=causal, key_padding_mask=mask)
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9, msg=f"sdpa {name} differs from eager")


def test_eager_is_softmax_attention_on_a_hand_case() -> None:
    q = torch.zeros(1, 1, 2, 1, dtype=torch.float64)  # all scores 0 -> uniform weights
    k = torch.zeros(1, 1, 2, 1, dtype=torch.float64)
    v = torch.tensor([1.0, 3.0], dtype=torch.float64).view(1, 1, 2, 1)
    out = eager_attention(q, k, v, causal=True, key_padding_mask=None, dropout=0.0)
    torch.testing.assert_close(out.flatten(), torch.tensor([1.0, 2.0], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_future_positions_never_change_earlier_outputs(name: str) -> None:
    q, k, v = _inputs()
    mask = _left_padded_mask()
    out = _run(name, q, k, v, causal=True, mask=mask)
    for t in (4, 7, L - 2):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, :, t + 1 :] = torch.randn_like(x[:, :, t + 1 :]) * 5
        out2 = _run(name, q2, k2, v2, causal=True, mask=mask)
        torch.testing.assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], rtol=0, atol=1e-12)
        assert not torch.allclose(out2[:, :, t + 1 :], out[:, :, t + 1 :])


@pytest.mark.parametrize("name", sorted(ATTENTION))
@pytest.mark.parametrize("causal", [True, False])
def test_padded_values_never_change_real_outputs(name: str, causal: bool) -> None:
    q, k, v = _inputs()
    mask = _left_padded_mask()
    out = _run(name, q, k, v, causal=causal, mask=mask)
    pad = ~mask[:, None, :, None]  # [B, 1, L, 1]
    q2, k2, v2 = (torch.where(pad, torch.randn_like(x) * 100, x) for x in (q, k, v))
    out2 = _run(name, q2, k2, v2, causal=causal, mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out2[real], out[real], rtol=1e-10, atol=1e-12)
    assert torch.all(out2[~real] == 0)


@pytest.mark.parametrize("name", sorted(ATTENTION))
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padded_rows_are_zero_and_grads_finite(name: str, causal: bool, dtype: torch.dtype) -> None:
    q, k, v = _inputs(dtype=dtype)
    out, dq, dk, dv = _out_and_grads(get_attention(name), q, k, v, causal=causal, key_padding_mask=_left_padded_mask())
    assert out.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(dq).all()
    assert torch.isfinite(dk).all() and torch.isfinite(dv).all()
    assert torch.all(out[0, :, :4] == 0) and torch.all(out[2] == 0)


def test_dropout_is_used_by_softmax_backends() -> None:
    q, k, v = _inputs()
    torch.manual_seed(0)
    out = eager_attention(q, k, v, causal=True, key_padding_mask=None, dropout=0.5)
    ref = eager_attention(q, k, v, causal=True, key_padding_mask=None, dropout=0.0)
    assert not torch.allclose(out, ref)


def test_get_attention_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="sdpa"):
        get_attention("flash9000")


def test_get_attention_binds_chunk_size_for_linear() -> None:
    q, k, v = _inputs()
    fn = get_attention("linear", chunk_size=5)
    out = fn(q, k, v, causal=True, key_padding_mask=None, dropout=0.0)
    ref = linear_attention(q, k, v, causal=True, key_padding_mask=None, dropout=0.0, chunk_size=5)
    torch.testing.assert_close(out, ref)
    assert get_attention("sdpa", chunk_size=5) is ATTENTION["sdpa"]
