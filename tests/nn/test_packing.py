"""Unpadded encoding (every layer but attention on the real tokens) against the padded reference."""

from __future__ import annotations

import pytest
import torch

from recsys.nn.packing import TokenLayout
from recsys.nn.sequence_encoder import ItemSequenceEncoder
from recsys.registry import build_model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    items = torch.randint(1, 99, (6, 9), generator=torch.Generator().manual_seed(0))
    items[0, :4] = 0
    items[1, :8] = 0  # one real item
    items[2] = 0  # an empty history
    return items, items != 0


def test_layout_packs_the_real_tokens_in_order_and_unpacks_with_zeros() -> None:
    mask = torch.tensor([[False, True, True], [False, False, True]])
    layout = TokenLayout.of(mask)
    x = torch.arange(6.0).view(2, 3, 1)
    assert layout.pack(x).flatten().tolist() == [1.0, 2.0, 5.0]
    assert layout.columns().tolist() == [1, 2, 2]
    assert torch.equal(layout.unpack(layout.pack(x)), x * mask[..., None])


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "icsrec"])
@pytest.mark.parametrize("attention", ["eager", "sdpa", "linear"])
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_unpadded_encoding_equals_the_padded_reference(name: str, attention: str, norm: str) -> None:
    """Outputs and gradients (no dropout, so both runs compute the same function)."""
    torch.manual_seed(0)
    params = {"max_len": 9, "hidden": 32, "n_heads": 4, "attention": attention, "dropout": 0.0, "attn_dropout": 0.0}
    params["norm"] = norm
    model = build_model(name, params, 98)
    net = model.net
    assert isinstance(net, ItemSequenceEncoder)
    items, mask = _batch()
    grads = []
    outs = []
    for unpad in (True, False):
        model.zero_grad()
        out = net(items, mask, unpad=unpad)  # [B, L, D]
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert (outs[0][~mask] == 0).all()  # zeros at padding, as the padded path gives
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6, msg=n)


def test_unpadded_training_mode_keeps_dropout_and_padding_zero() -> None:
    torch.manual_seed(0)
    model = build_model("sasrec", {"max_len": 9, "hidden": 32, "n_heads": 4, "dropout": 0.5}, 98).train()
    items, mask = _batch()
    a, b = model.net(items, mask, unpad=True), model.net(items, mask, unpad=True)
    assert not torch.equal(a, b)  # fresh dropout draws
    assert (a[~mask] == 0).all() and torch.isfinite(a).all()


def test_only_mostly_padding_batches_are_unpadded_by_default() -> None:
    model = build_model("sasrec", {"max_len": 9, "hidden": 32, "n_heads": 4}, 98).eval()
    calls: list[bool] = []  # whether the transformer got a TokenLayout (the unpadded path)
    model.net.encoder.register_forward_pre_hook(lambda _m, args: calls.append(len(args) == 3))
    dense = torch.randint(1, 99, (4, 9))
    sparse = dense.clone()
    sparse[:, :6] = 0  # a third real
    model.net(dense, dense != 0)
    model.net(sparse, sparse != 0)
    model.net.unpad = False
    model.net(sparse, sparse != 0)
    assert calls == [False, True, False]
