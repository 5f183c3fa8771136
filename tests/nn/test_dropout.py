"""The CPU dropout path against its definition and against PyTorch's dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recsys.nn.attention import eager_attention, sdpa_attention
from recsys.nn.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keeps_one_minus_p_and_scales_like_torch(p: float) -> None:
    x = torch.ones(400_000)
    torch.manual_seed(0)
    ours = dropout(x, p)
    theirs = F.dropout(x, p, training=True)
    sigma = (p * (1 - p) / x.numel()) ** 0.5
    for out in (ours, theirs):
        kept = out != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
        torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    assert not torch.equal(ours, theirs)  # the masks differ: only the distribution is shared


def test_matches_its_definition_for_a_seed() -> None:
    x = torch.randn(3, 7, 5)
    torch.manual_seed(1)
    out = dropout(x, 0.3)
    torch.manual_seed(1)
    keep = torch.rand(x.shape) >= 0.3
    torch.testing.assert_close(out, torch.where(keep, x / 0.7, torch.zeros_like(x)))


def test_gradient_is_the_scaled_mask() -> None:
    x = torch.randn(64, 9, requires_grad=True)
    torch.manual_seed(2)
    out = dropout(x, 0.4)
    out.sum().backward()
    assert x.grad is not None
    expected = (out.detach() != 0).float() / 0.6
    torch.testing.assert_close(x.grad, expected)


def test_identity_outside_training_and_at_zero() -> None:
    x = torch.randn(4, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    module = Dropout(0.5).eval()
    assert module(x) is x


def test_edge_probabilities_and_dtype() -> None:
    assert torch.count_nonzero(dropout(torch.ones(100), 1.0)) == 0
    y = dropout(torch.ones(1000, dtype=torch.bfloat16), 0.5)
    assert y.dtype == torch.bfloat16
    assert set(y.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_is_named(p: float) -> None:
    with pytest.raises(ValueError, match=str(p)):
        dropout(torch.ones(2), p)
    with pytest.raises(ValueError, match=str(p)):
        Dropout(p)


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_with_dropout_on_cpu_is_eager_with_the_same_mask(causal: bool) -> None:
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 3, 11, 4) for _ in range(3))
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[0, :4] = False  # left padding
    torch.manual_seed(4)
    fast = sdpa_attention(q, k, v, causal=causal, key_padding_mask=mask, dropout=0.3)
    torch.manual_seed(4)
    ref = eager_attention(q, k, v, causal=causal, key_padding_mask=mask, dropout=0.3)
    torch.testing.assert_close(fast, ref)
    no_drop = eager_attention(q, k, v, causal=causal, key_padding_mask=mask, dropout=0.0)
    assert not torch.allclose(fast, no_drop)  # dropout was applied
