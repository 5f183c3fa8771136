"""Random cuts: every read of a user's row is a window of their sequence ending at a drawn target."""

from __future__ import annotations

import pytest
import torch

from recsys.data.datasets import RandomCuts

SEQS = [list(range(1, 41)), [5, 6], list(range(100, 110))]  # lengths 40, 2, 10


def _contiguous_in(row: list[int], seq: list[int]) -> bool:
    items = [i for i in row if i != 0]
    start = seq.index(items[0])
    return seq[start : start + len(items)] == items


def test_every_row_is_a_contiguous_window_ending_at_a_target_after_the_first_item() -> None:
    rows = RandomCuts(SEQS, max_len=6, generator=torch.Generator().manual_seed(0))
    ends: set[int] = set()
    for _ in range(200):
        batch = rows[[0, 1, 2]].items  # [3, <= 7], left-padded
        assert batch.shape[1] <= 7
        for row, seq in zip(batch.tolist(), SEQS, strict=True):
            items = [i for i in row if i != 0]
            assert 2 <= len(items) <= 7 and _contiguous_in(row, seq)
            assert items[-1] != seq[0]  # the target has at least one item before it
        ends.add(batch[0, -1].item())
        assert batch[1, -2:].tolist() == [5, 6]  # a 2-item sequence has one possible cut
    assert len(ends) > 30  # targets spread over the long sequence, not only its end


def test_draws_follow_the_generator() -> None:
    def draw(seed: int) -> torch.Tensor:
        return RandomCuts(SEQS, max_len=6, generator=torch.Generator().manual_seed(seed))[[0, 2]].items

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_cuts_per_user_repeat_each_user_at_independent_targets() -> None:
    rows = RandomCuts(SEQS, max_len=6, generator=torch.Generator().manual_seed(0), cuts=4)
    assert len(rows) == 12 and rows.lengths().tolist() == [7, 2, 7] * 4
    batch = rows[[0, 3, 6, 9]].items  # user 0's four rows
    assert all(_contiguous_in(row, SEQS[0]) for row in batch.tolist())
    assert len({row[-1] for row in batch.tolist()}) > 1  # four cuts, not one copied
    assert rows[[1, 4]].items[:, -2:].tolist() == [[5, 6], [5, 6]]
    with pytest.raises(ValueError, match="cuts must be >= 1, got 0"):
        RandomCuts(SEQS, max_len=6, generator=torch.Generator(), cuts=0)
