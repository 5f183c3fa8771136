"""BERT4Rec's optional output head: dense + GELU + LayerNorm, tied item table plus a per-item bias."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from recsys.model_io import load_model, save_model
from recsys.registry import build_model

PARAMS = {"hidden": 16, "n_heads": 2, "max_len": 6, "dropout": 0.0, "attn_dropout": 0.0, "output_head": True}
N_ITEMS = 30


def _head_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("bert4rec", PARAMS, N_ITEMS).eval()
    with torch.no_grad():
        model.item_bias.normal_()  # zero at init: give the bias something to show
    return model


def test_head_scores_are_transformed_states_times_items_plus_bias() -> None:
    model = _head_model()
    items = torch.tensor([[0, 0, 3, 7, 1, 9], [4, 5, 6, 7, 8, 2]])
    scores = model.encode(items, items != 0) @ model.item_embeddings().T  # [2, 6, N + 1]
    raw = model.net(items, items != 0)  # [2, 6, D] before the head
    dense, _, norm = model.head
    transformed = F.layer_norm(F.gelu(dense(raw)), (16,), norm.weight, norm.bias)
    expected = transformed @ model.net.item_weight().T + model.item_bias
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


def test_head_model_saves_loads_and_trains(tmp_path: Path) -> None:
    model = _head_model()
    save_model(model, "bert4rec", PARAMS, N_ITEMS, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    items = torch.tensor([[0, 2, 3, 4, 5, 6]])
    torch.testing.assert_close(
        loaded.sequence_representation(items, items != 0), model.sequence_representation(items, items != 0)
    )
    assert model.item_embeddings().shape == (N_ITEMS + 1, 17)
    model.train()
    model.item_embeddings().sum().backward()
    assert model.item_bias.grad is not None and torch.all(model.item_bias.grad == 1)
