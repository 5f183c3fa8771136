"""The DataModule loads item features only for models that ask for them."""

from __future__ import annotations

from pathlib import Path

from recsys.data.datamodule import SequenceDataModule


def test_item_features_are_loaded_only_on_request(planted_dataset: Path) -> None:
    kw = {"max_len": 5, "batch_size": 8, "eval_batch_size": 8, "seed": 0}
    plain = SequenceDataModule(planted_dataset / "processed", **kw)
    plain.setup()
    assert plain.item_features is None
    with_text = SequenceDataModule(planted_dataset / "processed", item_features=True, **kw)
    with_text.setup()
    features = with_text.item_features
    assert features is not None and features.n_items == with_text.n_items
    assert features.render(1).startswith("title: Item ")  # the planted items table: "Item <raw id>"
