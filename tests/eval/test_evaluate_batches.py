"""Batched evaluation (rows in history-length order, trimmed batches) against one user at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import EvalBatch
from recsys.eval.evaluate import evaluate, rank_batch, without_newest
from recsys.registry import build_model


def test_length_ordered_batches_rank_like_one_user_at_a_time(planted_dataset: Path) -> None:
    dm = SequenceDataModule(planted_dataset / "processed", max_len=12, batch_size=8, eval_batch_size=7, seed=0)
    dm.setup()
    torch.manual_seed(0)
    model = build_model("sasrec", {"max_len": 12, "hidden": 16, "n_heads": 2}, dm.n_items).eval()
    data = dm.test_set
    lengths = (data.items != 0).sum(1)
    assert len(set(lengths.tolist())) > 1, "the check needs histories of several lengths"
    assert lengths[data.rows_by_length()].diff().ge(0).all()

    batched = torch.cat(
        [rank_batch(model, b, exclude_seen=True, topk=10, item_chunk=50)[0] for b in dm.test_dataloader()]
    )
    singles = torch.cat(
        [
            rank_batch(model, EvalBatch(data.items[i : i + 1], data.targets[i : i + 1], data.seen[i : i + 1]),
                       exclude_seen=True, topk=10, item_chunk=50)[0]
            for i in range(len(data))
        ]
    )  # fmt: skip
    assert torch.equal(batched, singles[data.rows_by_length()])
    fast = evaluate(model, dm.test_dataloader(), split="test")
    assert fast.metrics["test/hr@10"] == (singles <= 10).float().mean().item()
    reference = evaluate(model, dm.test_dataloader(), split="test", reference=True)
    assert reference.metrics == fast.metrics
    assert reference.ranks is not None and fast.ranks is not None and torch.equal(reference.ranks, fast.ranks)
    assert reference.topk_ids is not None and fast.topk_ids is not None
    assert torch.equal(reference.topk_ids, fast.topk_ids)


def test_without_newest_drops_the_last_item_and_keeps_the_candidates() -> None:
    batch = EvalBatch(
        torch.tensor([[0, 3, 4, 5], [1, 2, 6, 7]]), torch.tensor([8, 9]), torch.tensor([[3, 4, 5, 0], [1, 2, 6, 7]])
    )
    out = without_newest(batch)
    assert out.items.tolist() == [[0, 0, 3, 4], [0, 1, 2, 6]]
    assert torch.equal(out.targets, batch.targets) and torch.equal(out.seen, batch.seen)
    with pytest.raises(ValueError, match="at least 2 items, got 1"):
        without_newest(EvalBatch(torch.tensor([[0, 0, 3], [0, 4, 5]]), torch.tensor([1, 2]), torch.tensor([[3], [4]])))
