"""ETL steps on tiny hand-made logs."""

from __future__ import annotations

import polars as pl
import pytest

from recsys.data import schema as S
from recsys.data.polars_etl import (
    assign_dense_ids,
    build_sequences,
    dedupe,
    filter_min_rating,
    item_vocab,
    k_core,
    k_core_survivors,
    order_chronologically,
    user_vocab,
    validate,
)
from recsys.data.steps import VALUE_REASONS, value_checks


def _log(rows: list[tuple[object, object, object]]) -> pl.LazyFrame:
    users, items, ts = zip(*rows, strict=True)
    return pl.LazyFrame(
        {S.USER: users, S.ITEM: items, S.TIMESTAMP: ts},
        schema={S.USER: pl.Int64, S.ITEM: pl.Int64, S.TIMESTAMP: pl.Int64},
    ).with_row_index(S.ROW)


def test_validate_flags_each_bad_row_kind() -> None:
    lf = (
        pl.LazyFrame(
            {
                S.USER: ["1", "x", "2", "3", "4", "5", "", "6"],
                S.ITEM: ["10", "11", "1.5", "12", "13", "14", "15", "16"],
                S.TIMESTAMP: ["100", "100", "100", "abc", "-5", "100", "100", "100"],
                S.RATING: ["5", "4", "3", "2", "1", "good", "3", "4"],
            }
        )
        .with_row_index(S.ROW)
        .with_columns(pl.lit(None, pl.String).alias(S.REJECT))
    )
    out = validate(lf).collect()
    assert out[S.REJECT].to_list() == [
        None,
        "bad_user_id",
        "bad_item_id",
        "bad_timestamp",
        "negative_timestamp",
        "bad_rating",
        "missing_value",
        None,
    ]
    assert out.schema[S.USER] == pl.Int64 and out.schema[S.TIMESTAMP] == pl.Int64
    assert out["raw_" + S.USER][1] == "x"  # raw text kept for the rejected sample


def test_value_checks_keep_the_shared_order_and_drop_what_does_not_apply() -> None:
    assert tuple(c.reason for c in value_checks(has_rating=True, max_timestamp=10)) == VALUE_REASONS
    assert [c.reason for c in value_checks(has_rating=False, max_timestamp=None)] == list(VALUE_REASONS[:5])
    (future,) = [c for c in value_checks(has_rating=False, max_timestamp=10) if c.reason == "future_timestamp"]
    assert (future.test, future.bound) == ("above", 10)


def test_validate_future_timestamp_only_with_a_bound() -> None:
    lf = _log([(1, 1, 5), (1, 2, 50)]).with_columns(pl.lit(None, pl.String).alias(S.REJECT))
    assert validate(lf, max_timestamp=10).collect()[S.REJECT].to_list() == [None, "future_timestamp"]
    assert validate(lf, max_timestamp=50).collect()[S.REJECT].to_list() == [None, None]
    assert validate(lf).collect()[S.REJECT].to_list() == [None, None]


def test_validate_string_ids_and_datetimes() -> None:
    lf = pl.LazyFrame(
        {S.USER: ["a"], S.ITEM: ["b"], S.TIMESTAMP: ["1970-01-01T00:01:40"], S.REJECT: [None], S.ROW: [0]},
        schema_overrides={S.REJECT: pl.String},
    )
    out = validate(lf, id_type="str", timestamp_type="datetime").collect()
    assert out.row(0, named=True)[S.TIMESTAMP] == 100 and out[S.REJECT][0] is None


def test_filter_min_rating() -> None:
    lf = _log([(1, 1, 0), (1, 2, 1)]).with_columns(pl.Series(S.RATING, [3.0, 4.0]))
    assert filter_min_rating(lf, 4.0).collect()[S.ITEM].to_list() == [2]
    assert filter_min_rating(lf, None).collect().height == 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("keep_all", [0, 1, 2, 3, 4]),
        ("first", [1, 2, 4]),  # earliest per (user, item); the tie at ts=5 keeps the earlier row
        ("last", [0, 3, 4]),  # latest; the tie at ts=5 keeps the later row
    ],
)
@pytest.mark.parametrize("engine", ["in-memory", "streaming"])
def test_dedupe_policies(policy: str, expected: list[int], engine: str) -> None:
    lf = _log([(1, 7, 9), (1, 7, 2), (1, 8, 5), (1, 8, 5), (2, 7, 1)])
    out = dedupe(lf, policy).collect(engine=engine)  # type: ignore[arg-type]
    assert sorted(out[S.ROW].to_list()) == expected


def test_k_core_needs_several_rounds() -> None:
    # 2-core. Round 1: user 3 (one row) goes; that leaves item 30 with one row, so round 2 drops it,
    # which leaves user 2 with one row, dropped in round 3. Users 1 and 4 with items 10/20 survive.
    rows = [(1, 10, 0), (1, 20, 1), (4, 10, 2), (4, 20, 3), (2, 30, 4), (2, 10, 5), (3, 30, 6)]
    lf = _log(rows)
    res = k_core_survivors(lf.collect(), 2, 2)
    assert sorted(res.users[S.USER].to_list()) == [1, 4]
    assert sorted(res.items[S.ITEM].to_list()) == [10, 20]
    assert res.rounds >= 3 and res.rows_out == 4
    out = k_core(lf, 2, 2).collect()
    assert sorted(out[S.ROW].to_list()) == [0, 1, 2, 3]


def test_k_core_everything_removed() -> None:
    res = k_core_survivors(_log([(1, 1, 0), (2, 2, 1)]).collect(), 5, 5)
    assert res.rows_out == 0


def test_dense_ids_sorted_numerically_and_pad_free() -> None:
    lf = _log([(20, 100, 0), (3, 9, 1), (20, 9, 2)])
    users, items = user_vocab(lf).collect(), item_vocab(lf).collect()
    assert users.rows() == [(0, 3), (1, 20)]  # (user_idx, user): 0-based
    assert items.rows() == [(1, 9), (2, 100)]  # (item_idx, item): 1-based, 0 = padding, numeric order
    out = assign_dense_ids(lf, users.lazy(), items.lazy()).collect()
    assert S.PAD_ID not in out[S.ITEM_IDX].to_list()


def test_order_ties_keep_input_order_and_sequences() -> None:
    lf = _log([(1, 5, 10), (1, 3, 10), (1, 4, 1), (2, 9, 3)])
    users, items = user_vocab(lf), item_vocab(lf)
    seq = lf.pipe(assign_dense_ids, users, items).pipe(order_chronologically).pipe(build_sequences).collect()
    # user 1: item 4 (t=1), then the tie at t=10 in file order: 5 then 3 -> idx 3, 2 (items sorted 3,4,5,9)
    assert seq.rows() == [(0, [2, 3, 1], [1, 10, 10]), (1, [4], [3])]
