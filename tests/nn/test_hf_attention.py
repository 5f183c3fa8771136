"""Our linear attention inside a Hugging Face BERT: the hook equals the slow reference recurrence,
padding never leaks into real tokens, and the pretrained projections are kept."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.hf_attention import LINEAR, hf_linear_attention, use_linear_attention
from recsys.nn.linear_attention import linear_attention_recurrent_reference


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_the_hook_equals_the_reference_recurrence(mask_kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=gen) for _ in range(3))  # [B, H, L, Dh]
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 4:] = False
    mask = {
        "none": None,
        "bool": keep[:, None, None, :].expand(2, 1, 6, 6),
        "additive": torch.zeros(2, 1, 1, 6).masked_fill(~keep[:, None, None, :], torch.finfo(torch.float32).min),
    }[mask_kind]
    out, weights = hf_linear_attention(torch.nn.Identity(), q, k, v, mask, scaling=0.5, dropout=0.1)
    ref = linear_attention_recurrent_reference(
        q, k, v, causal=False, key_padding_mask=None if mask is None else keep
    ).transpose(1, 2)  # [B, L, H, Dh], transformers' layout
    assert weights is None and out.shape == (2, 6, 3, 4)
    real = keep[:, :, None, None].expand_as(out) if mask is not None else torch.ones_like(out, dtype=torch.bool)
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=1e-5)


def test_a_bert_switched_to_linear_keeps_its_weights_and_ignores_padding() -> None:
    transformers = pytest.importorskip("transformers", reason="needs the 'text' extra")
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    model = transformers.BertModel(config).eval()
    before = {name: p.clone() for name, p in model.named_parameters()}
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    softmax = model(input_ids=ids, attention_mask=mask).last_hidden_state
    use_linear_attention(model)
    assert model.config._attn_implementation == LINEAR
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
    linear = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(linear, softmax, atol=1e-4)  # another attention runs now
    other_padding = ids.clone()
    other_padding[1, 4:] = 42
    again = model(input_ids=other_padding, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(again[1, :4], linear[1, :4])
    linear.sum().backward()  # gradients flow through the hook
    assert model.encoder.layer[0].attention.self.query.weight.grad is not None
