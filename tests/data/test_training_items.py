"""The training sequences' items and their counts, which models read when training starts (ID rows, the
popularity prior, negatives over trained items)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from recsys.data.datamodule import SequenceDataModule
from recsys.data.schema import ITEMS


def test_training_items_and_counts_are_those_of_the_training_sequences(planted_dataset: Path) -> None:
    dm = SequenceDataModule(planted_dataset / "processed", max_len=5, batch_size=4, eval_batch_size=4, seed=0)
    with pytest.raises(RuntimeError, match="need setup\\(\\) first"):
        dm.training_items()
    dm.setup()
    assert dm.sequence_split is not None
    slow = Counter(item for seq in dm.sequence_split.train[ITEMS].to_list() for item in seq)
    counts = dm.training_item_counts()
    assert len(counts) == dm.n_items + 1 and counts[0] == 0
    assert {i: int(c) for i, c in enumerate(counts.tolist()) if c} == dict(slow)
    assert dm.training_items().tolist() == sorted(slow)
