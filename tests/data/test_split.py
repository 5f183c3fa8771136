"""Splits on tiny hand-made data."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.data import schema as S
from recsys.data.split import TARGET, global_temporal_split, leave_one_out_split


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
    assert split.n_train_only_users == 1  # user 1 (2 items) is trained on, never evaluated


def test_leave_one_out_rejects_bad_args() -> None:
    with pytest.raises(ValueError, match="min_len"):
        leave_one_out_split(_seqs(), min_len=2)
    with pytest.raises(ValueError, match="lack columns"):
        leave_one_out_split(_seqs().drop(S.TIMESTAMPS))


def test_global_temporal_split_cuts_at_quantiles_ties_together() -> None:
    inter = pl.DataFrame({S.USER_IDX: [0] * 10, S.ITEM_IDX: range(1, 11), S.TIMESTAMP: [0, 1, 2, 3, 4, 5, 6, 7, 7, 9]})
    split = global_temporal_split(inter, valid_quantile=0.6, test_quantile=0.8)
    assert (split.valid_cut, split.test_cut) == (5, 7)
    assert split.train[S.TIMESTAMP].to_list() == [0, 1, 2, 3, 4]
    assert split.validation[S.TIMESTAMP].to_list() == [5, 6]
    assert split.test[S.TIMESTAMP].to_list() == [7, 7, 9]  # both rows at the cut go to test
    with pytest.raises(ValueError, match="valid_quantile"):
        global_temporal_split(inter, valid_quantile=0.9, test_quantile=0.5)
