"""Chunked linear attention against its naive recurrence and an explicit quadratic form (FLA style)."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.linear_attention import (
    elu_feature_map,
    linear_attention,
    linear_attention_recurrent_reference,
    retnet_decay,
)

B, H, L, DH = 2, 3, 13, 12  # hidden 36 / 3 heads, odd L


def _inputs(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, DH, generator=g, dtype=dtype) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    return q, k, v, mask


def _quadratic(q, k, v, *, causal: bool, mask: torch.Tensor, decay: torch.Tensor | None, eps: float = 1e-6):
    """The whole L x L weight matrix written out: w_ij = gamma^|i-j| phi(q_i).phi(k_j) over real keys."""
    scores = elu_feature_map(q) @ elu_feature_map(k).transpose(-1, -2)  # [B, H, L, L]
    i = torch.arange(L)
    dist = (i[:, None] - i[None, :]).abs()
    w = torch.ones(H, L, L, dtype=q.dtype) if decay is None else decay[:, None, None] ** dist
    if causal:
        w = w.tril()
    scores = scores * w * mask[:, None, None, :]
    out = (scores @ v) / (scores.sum(-1, keepdim=True) + eps)
    return out * mask[:, None, :, None]


def _out_and_grads(fn, q, k, v, **kw) -> tuple[torch.Tensor, ...]:
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = fn(q, k, v, **kw)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    return (out, *torch.autograd.grad((out * weight).sum(), (q, k, v)))


@pytest.mark.parametrize("chunk_size", [4, 5, 13, 64])  # 4 and 5 do not divide L; 13 and 64 >= L
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("use_decay", [False, True])
def test_chunked_matches_recurrent_reference(chunk_size: int, causal: bool, use_decay: bool) -> None:
    q, k, v, mask = _inputs()
    decay = retnet_decay(H) if use_decay else None
    ref = _out_and_grads(
        linear_attention_recurrent_reference, q, k, v, causal=causal, key_padding_mask=mask, decay=decay
    )
    got = _out_and_grads(
        linear_attention, q, k, v, causal=causal, key_padding_mask=mask, dropout=0.0, chunk_size=chunk_size, decay=decay
    )
    for name, r, g in zip(("out", "dq", "dk", "dv"), ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11, msg=f"{name} differs from the recurrence")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("use_decay", [False, True])
def test_recurrent_reference_matches_quadratic_form(causal: bool, use_decay: bool) -> None:
    q, k, v, mask = _inputs()
    decay = retnet_decay(H) if use_decay else None
    ref = linear_attention_recurrent_reference(q, k, v, causal=causal, key_padding_mask=mask, decay=decay)
    torch.testing.assert_close(ref, _quadratic(q, k, v, causal=causal, mask=mask, decay=decay))


def test_float32_accumulates_close_to_float64() -> None:
    q, k, v, mask = _inputs()
    ref = linear_attention(q, k, v, causal=True, key_padding_mask=mask, dropout=0.0, chunk_size=5)
    q32, k32, v32 = (t.float() for t in (q, k, v))
    out = linear_attention(q32, k32, v32, causal=True, key_padding_mask=mask, dropout=0.0, chunk_size=5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_custom_feature_map_is_used() -> None:
    q, k, v, mask = _inputs()

    def relu_eps(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + 1e-3

    kw = {"causal": True, "key_padding_mask": mask, "feature_map": relu_eps}
    ref = linear_attention_recurrent_reference(q, k, v, **kw)
    out = linear_attention(q, k, v, dropout=0.0, chunk_size=4, **kw)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, linear_attention(q, k, v, causal=True, key_padding_mask=mask, dropout=0.0))


def test_long_sequence_with_decay_stays_finite() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 3000, 8, generator=g) for _ in range(3))
    out = linear_attention(q, k, v, causal=True, key_padding_mask=None, dropout=0.0, decay=retnet_decay(2))
    assert torch.isfinite(out).all()


def test_bad_chunk_size_raises() -> None:
    q, k, v, mask = _inputs()
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, k, v, causal=True, key_padding_mask=mask, dropout=0.0, chunk_size=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fla_kernel_matches_pure_pytorch() -> None:
    pytest.importorskip("fla")
    q, k, v, mask = (t.cuda() for t in _inputs(torch.float32))
    kw = {"causal": True, "key_padding_mask": mask, "dropout": 0.0}
    torch.testing.assert_close(
        linear_attention(q, k, v, use_fla=True, **kw),
        linear_attention(q, k, v, use_fla=False, **kw),
        rtol=1e-3,
        atol=1e-3,
    )
