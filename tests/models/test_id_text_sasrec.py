"""SASRec over the item tower (ID + text views): fused and dual views, the tied table, cold items."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.config import ConfigError
from recsys.data.item_features import ItemFeatures
from recsys.registry import build_model


def _features(n_items: int) -> ItemFeatures:
    titles = [None, *[f"Item {i} {['red', 'blue', 'green'][i % 3]}" for i in range(1, n_items + 1)]]
    return ItemFeatures(n_items, ["", *map(str, range(1, n_items + 1))], {"title": titles}, None, 0)


@pytest.mark.parametrize("views", ["fused", "dual"])
def test_id_text_sasrec_ties_the_tower_and_scores_a_cold_item_by_text(
    views: str, tiny_llama_backbone: Path, tmp_path: Path
) -> None:
    tower = {"text": str(tiny_llama_backbone), "fields": ["title"], "cache_dir": str(tmp_path), "text_dim": 32}
    params = {"max_len": 6, "hidden": 16, "n_heads": 2, "views": views, "item_tower": tower}
    model = build_model("id_text_sasrec", params, 40, item_features=_features(40)).eval()
    width = 16 if views == "fused" else 32  # dual: the ID view's state, then the text view's
    items = torch.tensor([[0, 0, 3, 5, 9, 1], [4, 5, 6, 7, 8, 9]])
    assert model.encode(items, items != 0).shape == (2, 6, width)
    table = model.item_embeddings()
    assert table.shape == (41, width) and torch.equal(table[0], torch.zeros(width))
    if views == "fused":
        assert model.net.item_emb is model.tower  # the encoder reads (and scores with) the tower's table
    model.tower.drop_ids(torch.tensor([9]))
    text = model.tower.text_view(torch.tensor(9))
    expected = text if views == "fused" else torch.cat([torch.zeros(16), text])
    torch.testing.assert_close(model.item_embeddings()[9], expected)
    with pytest.raises(ConfigError, match="dual"):
        build_model("id_text_sasrec", {**params, "views": "dual", "item_tower": {**tower, "id_embedding": False}}, 40)
