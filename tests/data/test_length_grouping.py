"""Length-grouped training batches: every row once per epoch, seeded, and tighter than a plain shuffle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.data.datamodule import LengthGroupedBatches, SequenceDataModule, ShardedShuffle
from recsys.objectives import build_objective


def _epoch(sampler: LengthGroupedBatches) -> list[list[int]]:
    return [list(b) for b in sampler]


def test_every_row_once_per_epoch_and_seeded() -> None:
    lengths = torch.randint(1, 50, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = LengthGroupedBatches(ShardedShuffle(1000, seed=3), lengths, batch_size=32, pool=4)
    first, second = _epoch(sampler), _epoch(sampler)
    for epoch in (first, second):
        assert sorted(r for b in epoch for r in b) == list(range(1000))
        assert len(epoch) == len(sampler) == 32  # 31 full batches and one of 8
    assert first != second  # a fresh order each epoch
    again = LengthGroupedBatches(ShardedShuffle(1000, seed=3), lengths, batch_size=32, pool=4)
    assert _epoch(again) == first


def test_batches_are_tighter_than_a_plain_shuffle() -> None:
    lengths = torch.randint(1, 50, (4096,), generator=torch.Generator().manual_seed(1))
    grouped = _epoch(LengthGroupedBatches(ShardedShuffle(4096, seed=0), lengths, batch_size=64, pool=16))
    rows = list(ShardedShuffle(4096, seed=0))
    plain = [rows[i : i + 64] for i in range(0, 4096, 64)]

    def mean_width(batches: list[list[int]]) -> float:  # what a trimmed batch costs: its longest row
        return sum(int(lengths[b].max()) for b in batches) / len(batches)

    assert mean_width(grouped) < 0.6 * mean_width(plain)


def test_a_pool_of_one_batch_keeps_the_plain_batches() -> None:
    lengths = torch.arange(100) % 7
    grouped = _epoch(LengthGroupedBatches(ShardedShuffle(100, seed=5), lengths, batch_size=10, pool=1))
    rows = list(ShardedShuffle(100, seed=5))
    plain = {frozenset(rows[i : i + 10]) for i in range(0, 100, 10)}
    assert {frozenset(b) for b in grouped} == plain


def test_bad_pool_is_named(planted_dataset: Path) -> None:
    with pytest.raises(ValueError, match="-1"):
        SequenceDataModule(
            planted_dataset / "processed", max_len=5, batch_size=4, eval_batch_size=4, seed=0, length_pool=-1
        )


@pytest.mark.parametrize("objective", ["next_item", "cross_subsequence"])
def test_datamodule_trains_on_grouped_batches(planted_dataset: Path, objective: str) -> None:
    rows = build_objective(objective).train_rows
    kw = {"max_len": 12, "batch_size": 16, "eval_batch_size": 64, "seed": 0, "rows": rows}
    grouped = SequenceDataModule(planted_dataset / "processed", length_pool=8, **kw)
    plain = SequenceDataModule(planted_dataset / "processed", **kw)
    grouped.setup()
    plain.setup()
    g_batches, p_batches = list(grouped.train_dataloader()), list(plain.train_dataloader())
    assert sum(len(b.items) for b in g_batches) == sum(len(b.items) for b in p_batches) == len(grouped.train_set)
    assert sum(b.items.numel() for b in g_batches) < sum(b.items.numel() for b in p_batches)  # less padding


@pytest.mark.parametrize("n", [513, 512, 7])
def test_ddp_shards_have_equal_batch_counts(n: int) -> None:
    shards = [list(ShardedShuffle(n, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(ShardedShuffle(n, seed=0, rank=1, world_size=2))
    assert set(shards[0]) | set(shards[1]) == set(range(n))  # every row is seen; at most one repeated
    assert len(shards[0]) + len(shards[1]) - n == n % 2
    lengths = torch.arange(n) % 5
    counts = [
        len(_epoch(LengthGroupedBatches(ShardedShuffle(n, seed=0, rank=r, world_size=2), lengths, 256, 4)))
        for r in range(2)
    ]
    assert counts[0] == counts[1]
