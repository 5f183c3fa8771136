"""Kernelized linear attention: chunked causal, global-summary bidirectional, O(L) memory.

out_i = sum_j w_ij phi(q_i).phi(k_j) v_j / (sum_j w_ij phi(q_i).phi(k_j) + eps), where phi is a
positive feature map (elu + 1 by default), j runs over real keys (j <= i when causal) and w_ij is
1, or gamma_h^|i - j| with a per-head decay (RetNet / Lightning-attention style).

- causal: chunked (FLA "chunk" form). Quadratic inside each chunk of C positions; the K^T V
  state (and its normalizer) entering each chunk comes from a scan over per-chunk summaries.
  The largest tensors are [B, H, L/C, C, C] and [B, H, L/C, Dk, Dv + 1]: linear in L.
- bidirectional: one global summary K^T V over real keys (no decay), or the causal pass run in
  both directions minus the double-counted diagonal (decay).

The normalizer rides along as an extra value column of ones, so numerator and denominator come
out of the same matmuls. Everything accumulates in fp32 (or fp64 for fp64 inputs). Padded keys
are zeroed after the feature map, so they contribute nothing; padded query rows output 0.
There is no attention matrix to drop out, so `dropout` is accepted for the shared signature and
ignored. `linear_attention_recurrent_reference` is the naive step-by-step twin for tests. On
CUDA with `fla` installed, the causal no-decay case may run fla's chunk kernel (untested here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

FeatureMap = Callable[[Tensor], Tensor]


def elu_feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0 (Katharopoulos et al., 2020)."""
    return F.elu(x) + 1.0


def retnet_decay(n_heads: int, device: torch.device | None = None) -> Tensor:
    """Per-head decay gamma_h = 1 - 2^(-5 - h), as in RetNet: [H] in (0.96, 1)."""
    return 1.0 - torch.pow(2.0, -5.0 - torch.arange(n_heads, dtype=torch.float64, device=device))


def _prepare(
    q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, feature_map: FeatureMap
) -> tuple[Tensor, Tensor, Tensor]:
    """Feature-mapped q, k in the accumulation dtype, padded keys zeroed, v with a ones column."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    q, k, v = feature_map(q.to(dtype)), feature_map(k.to(dtype)), v.to(dtype)
    if key_padding_mask is not None:
        k = k * key_padding_mask[:, None, :, None].to(dtype)  # [B, H, L, Dk]
    v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # [B, H, L, Dv + 1]
    return q, k, v


def _finish(num: Tensor, key_padding_mask: Tensor | None, eps: float, dtype: torch.dtype) -> Tensor:
    """num [B, H, L, Dv + 1] (last column = normalizer) -> out [B, H, L, Dv], padded rows zero."""
    out = num[..., :-1] / (num[..., -1:] + eps)
    if key_padding_mask is not None:
        out = out * key_padding_mask[:, None, :, None].to(out.dtype)
    return out.to(dtype)


def _decayed_scan(x: Tensor, a: Tensor) -> Tensor:
    """Inclusive scan s_n = a * s_{n-1} + x_n along dim 2 (Hillis-Steele, log2(N) steps, stable)."""
    N, d = x.shape[2], 1
    while d < N:
        x = torch.cat([x[:, :, :d], x[:, :, d:] + a**d * x[:, :, :-d]], dim=2)
        d *= 2
    return x


def _chunked_causal(q: Tensor, k: Tensor, v: Tensor, chunk_size: int, decay: Tensor | None) -> Tensor:
    """Unnormalized causal sum_{j<=i} w_ij (q_i.k_j) v_j for prepared q, k [B,H,L,Dk], v [B,H,L,Dv']."""
    B, H, L, Dk = q.shape
    Dv = v.shape[-1]
    C = min(chunk_size, L)
    N = math.ceil(L / C)
    pad = N * C - L  # zero rows at the end: zero keys add nothing, their query rows are dropped
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc, kc, vc = q.view(B, H, N, C, Dk), k.view(B, H, N, C, Dk), v.view(B, H, N, C, Dv)

    idx = torch.arange(C, device=q.device)
    diff = idx[:, None] - idx[None, :]  # [C, C], i - j
    if decay is None:
        intra_w = (diff >= 0).to(q.dtype)  # [C, C]
        k_w, q_w, a = kc, qc, None
    else:
        g = decay.to(q.dtype)[:, None, None]  # [H, 1, 1]
        intra_w = torch.where(diff >= 0, g ** diff.clamp(min=0), 0.0)[:, None]  # [H, 1, C, C]
        k_w = kc * (g ** (C - 1 - idx)[:, None])[:, None]  # key j decays to chunk end: gamma^(C-1-j)
        q_w = qc * (g ** (idx + 1)[:, None])[:, None]  # state at chunk start decays to query i
        a = g[:, :, 0, None, None] ** C  # [H, 1, 1, 1]: one whole chunk of decay

    intra = ((qc @ kc.transpose(-1, -2)) * intra_w) @ vc  # [B, H, N, C, Dv']
    kv = k_w.transpose(-1, -2) @ vc  # [B, H, N, Dk, Dv'] per-chunk summaries
    kv = kv.cumsum(dim=2) if a is None else _decayed_scan(kv, a)  # state after chunk n
    state = torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, :-1]], dim=2)  # state entering chunk n
    inter = q_w @ state  # [B, H, N, C, Dv']
    return (intra + inter).reshape(B, H, N * C, Dv)[:, :, :L]


def _fla_causal(q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """fla's chunk kernel for the unnormalized causal sum, or None when fla is not importable."""
    try:
        from fla.ops.linear_attn import chunk_linear_attn
    except ImportError:
        return None
    # fla takes [B, T, H, D]; scale=1 and normalize=False leave the sum raw (ones column included).
    o, _ = chunk_linear_attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=1.0, normalize=False)
    out: Tensor = o.transpose(1, 2)
    return out


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    key_padding_mask: Tensor | None,
    dropout: float,
    chunk_size: int = 64,
    feature_map: FeatureMap = elu_feature_map,
    decay: Tensor | None = None,
    eps: float = 1e-6,
    use_fla: bool = True,
) -> Tensor:
    """Normalized linear attention with the shared backend signature.

    Args:
        q, k, v: [B, H, L, Dh].
        causal: chunked causal attention if True, global summary if False.
        key_padding_mask: [B, L] bool, True = real token; None = all real.
        dropout: ignored (no attention matrix); kept for the shared signature.
        chunk_size: chunk length C for the causal path (any L works, C need not divide it).
        feature_map: positive map applied to q and k.
        decay: optional per-head decay gamma [H] in (0, 1], e.g. `retnet_decay(H)`.
        eps: added to the normalizer.
        use_fla: allow fla's CUDA kernel for the causal no-decay case when it imports.
    """
    del dropout
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = q.dtype
    qf, kf, vf = _prepare(q, k, v, key_padding_mask, feature_map)
    num = None
    if causal and decay is None and use_fla and q.is_cuda:
        num = _fla_causal(qf, kf, vf)
    if num is None and causal:
        num = _chunked_causal(qf, kf, vf, chunk_size, decay)
    elif num is None and decay is None:
        num = qf @ (kf.transpose(-1, -2) @ vf)  # [B, H, L, Dk] @ [B, H, Dk, Dv'] -> [B, H, L, Dv']
    elif num is None:
        fwd = _chunked_causal(qf, kf, vf, chunk_size, decay)
        bwd = _chunked_causal(qf.flip(2), kf.flip(2), vf.flip(2), chunk_size, decay).flip(2)
        num = fwd + bwd - (qf * kf).sum(-1, keepdim=True) * vf  # the diagonal was counted twice
    return _finish(num, key_padding_mask, eps, dtype)


def linear_decay_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    key_padding_mask: Tensor | None,
    dropout: float,
    chunk_size: int = 64,
) -> Tensor:
    """Linear attention with RetNet's fixed per-head decay (`retnet_decay`), same signature."""
    decay = retnet_decay(q.shape[1], q.device)
    return linear_attention(
        q, k, v, causal=causal, key_padding_mask=key_padding_mask, dropout=dropout, chunk_size=chunk_size, decay=decay
    )


def linear_attention_recurrent_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    key_padding_mask: Tensor | None,
    feature_map: FeatureMap = elu_feature_map,
    decay: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Naive step-by-step recurrence S_t = gamma S_{t-1} + k_t v_t^T (both directions if not causal)."""
    dtype = q.dtype
    qf, kf, vf = _prepare(q, k, v, key_padding_mask, feature_map)
    B, H, L, Dk = qf.shape
    g = torch.ones(H, dtype=qf.dtype, device=qf.device) if decay is None else decay.to(qf.dtype)
    g = g[None, :, None, None]  # [1, H, 1, 1]

    def scan(qs: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
        S = qs.new_zeros(B, H, Dk, vs.shape[-1])  # [B, H, Dk, Dv']
        outs = []
        for t in range(L):
            S = g * S + ks[:, :, t, :, None] * vs[:, :, t, None, :]
            outs.append((qs[:, :, t, None, :] @ S)[:, :, 0])  # [B, H, Dv']
        return torch.stack(outs, dim=2)  # [B, H, L, Dv']

    num = scan(qf, kf, vf)
    if not causal:
        num = num + scan(qf.flip(2), kf.flip(2), vf.flip(2)).flip(2) - (qf * kf).sum(-1, keepdim=True) * vf
    return _finish(num, key_padding_mask, eps, dtype)
