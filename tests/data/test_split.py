"""Splits on tiny hand-made data."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.data import schema as S
from recsys.data.split import (
    TARGET,
    SplitConfig,
    cold_items,
    cold_start,
    leave_one_out_split,
    split_sequences,
    temporal_split,
)


def _seqs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            S.USER_IDX: [0, 1, 2],
            S.ITEMS: [[1, 2, 3, 4], [5, 6], [7, 8, 9]],
            S.TIMESTAMPS: [[10, 20, 30, 40], [1, 2], [5, 6, 7]],
        }
    )


def test_leave_one_out() -> None:
    split = leave_one_out_split(_seqs())
    assert split.train.rows() == [(0, [1, 2], [10, 20]), (1, [5, 6], [1, 2]), (2, [7], [5])]
    assert split.validation.select(S.USER_IDX, S.ITEMS, TARGET).rows() == [(0, [1, 2], 3), (2, [7], 8)]
    assert split.test.select(S.USER_IDX, S.ITEMS, TARGET).rows() == [(0, [1, 2, 3], 4), (2, [7, 8], 9)]
    assert split.test["target_timestamp"].to_list() == [40, 7]
    assert split.protocol["train_only_users"] == 1  # user 1 (2 items) is trained on, never evaluated


def test_leave_one_out_rejects_bad_args() -> None:
    with pytest.raises(ValueError, match="min_len"):
        leave_one_out_split(_seqs(), min_len=2)
    with pytest.raises(ValueError, match="lack columns"):
        leave_one_out_split(_seqs().drop(S.TIMESTAMPS))


def _timed() -> pl.DataFrame:
    """Three users on one clock 0..9; the 0.6 / 0.8 quantiles (lower) of the 12 timestamps are 6 and 7."""
    return pl.DataFrame(
        {
            S.USER_IDX: [0, 1, 2],
            S.ITEMS: [[1, 2, 3, 4, 5, 6], [7, 8, 9], [10, 11, 12]],
            S.TIMESTAMPS: [[0, 2, 4, 5, 7, 9], [1, 3, 6], [7, 7, 8]],
        }
    )


def test_temporal_split_ranks_the_first_item_after_each_cut_with_the_history_before_it() -> None:
    split = temporal_split(_timed(), valid_quantile=0.6, test_quantile=0.8)
    assert (split.protocol["valid_cut"], split.protocol["test_cut"]) == (6, 7)
    # train: items before the validation cut; user 2 starts after it and trains on nothing
    assert split.train.select(S.USER_IDX, S.ITEMS).rows() == [(0, [1, 2, 3, 4]), (1, [7, 8])]
    # validation: first item in [6, 7) after a history before 6 (user 0's next item is at 7: none)
    assert split.validation.select(S.USER_IDX, S.ITEMS, TARGET).rows() == [(1, [7, 8], 9)]
    # test: first item at or after 7 (ties at the cut go to test), the whole history before it
    assert split.test.select(S.USER_IDX, S.ITEMS, TARGET).rows() == [(0, [1, 2, 3, 4], 5)]
    assert split.test[TARGET + "_timestamp"].to_list() == [7]


def test_split_config_picks_the_split_and_checks_quantiles() -> None:
    assert split_sequences(_seqs(), SplitConfig(), 9).protocol["split"] == "leave_one_out"
    assert split_sequences(_timed(), SplitConfig("temporal", 0.6, 0.8), 12).protocol["split"] == "temporal"
    with pytest.raises(ValueError, match="valid_quantile"):
        SplitConfig("temporal", valid_quantile=0.9, test_quantile=0.5)


def test_cold_start_removes_cold_items_from_training_and_evaluates_only_their_targets() -> None:
    split = cold_start(leave_one_out_split(_seqs()), [2, 9])
    assert split.train.select(S.ITEMS, S.TIMESTAMPS).rows() == [([1], [10]), ([5, 6], [1, 2]), ([7], [5])]
    assert split.validation.rows() == []  # targets 3 and 8 are warm
    assert split.test.select(S.USER_IDX, S.ITEMS, TARGET).rows() == [(2, [7, 8], 9)]  # history stays whole
    assert split.protocol["cold_items"] == 2


def test_cold_items_are_a_seeded_share() -> None:
    first = cold_items(1000, 0.1, seed=3)
    assert len(first) == 100 and first == cold_items(1000, 0.1, seed=3) != cold_items(1000, 0.1, seed=4)
    assert all(1 <= i <= 1000 for i in first)
