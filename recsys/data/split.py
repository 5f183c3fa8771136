"""Evaluation splits as pure functions on polars frames.

Leave-one-out (default protocol): per user, test target = last item, validation target = second to
last, train = the rest. Users with fewer than `min_len` (default 3) items are not evaluated: their
whole sequence goes to train and they appear in neither validation nor test (SASRec's policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from recsys.data import schema as S

TARGET = "target"  # the held-out item_idx of a validation/test row
TARGET_TIMESTAMP = "target_timestamp"


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """Leave-one-out split of per-user sequences.

    `train`: user_idx, items, timestamps (the sequence minus the last two items; whole sequence for
    users shorter than `min_len`). `validation` / `test`: user_idx, items (the history before the
    target, oldest first), timestamps, target, target_timestamp.
    """

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    n_train_only_users: int  # users shorter than min_len, kept in train only


def leave_one_out_split(sequences: pl.DataFrame, *, min_len: int = 3) -> LeaveOneOutSplit:
    """Split `sequences` (user_idx, items, timestamps; oldest first) into train / validation / test.

    Args:
        sequences: one row per user, as in `sequences.parquet`.
        min_len: users with fewer items go to train only (must be >= 3 so train keeps an item).
    """
    if min_len < 3:
        raise ValueError(f"min_len must be >= 3 (train, validation and test each need an item), got {min_len}")
    missing = [c for c in (S.USER_IDX, S.ITEMS, S.TIMESTAMPS) if c not in sequences.columns]
    if missing:
        raise ValueError(f"sequences lack columns {missing} (has {sequences.columns})")
    n = pl.col(S.ITEMS).list.len()
    seqs = sequences.select(S.USER_IDX, S.ITEMS, S.TIMESTAMPS)
    evaluated = seqs.filter(n >= min_len)
    short = seqs.filter(n < min_len)
    train = pl.concat(
        [
            evaluated.with_columns(pl.col(S.ITEMS, S.TIMESTAMPS).list.head(n - 2)),
            short,
        ]
    ).sort(S.USER_IDX)
    return LeaveOneOutSplit(
        train=train,
        validation=_holdout(evaluated, from_end=2),
        test=_holdout(evaluated, from_end=1),
        n_train_only_users=short.height,
    )


def _holdout(seqs: pl.DataFrame, *, from_end: int) -> pl.DataFrame:
    """History before the item `from_end` places from the end, and that item as the target."""
    n = pl.col(S.ITEMS).list.len()
    return seqs.select(
        S.USER_IDX,
        pl.col(S.ITEMS).list.head(n - from_end),
        pl.col(S.TIMESTAMPS).list.head(n - from_end),
        pl.col(S.ITEMS).list.get(-from_end).alias(TARGET),
        pl.col(S.TIMESTAMPS).list.get(-from_end).alias(TARGET_TIMESTAMP),
    )


@dataclass(frozen=True)
class TemporalSplit:
    """Global temporal split of interactions at two timestamp cut points."""

    train: pl.DataFrame  # timestamp < valid_cut
    validation: pl.DataFrame  # valid_cut <= timestamp < test_cut
    test: pl.DataFrame  # timestamp >= test_cut
    valid_cut: int
    test_cut: int


def global_temporal_split(
    interactions: pl.DataFrame, *, valid_quantile: float = 0.8, test_quantile: float = 0.9
) -> TemporalSplit:
    """Cut all interactions at timestamp quantiles; rows at a cut timestamp go to the later part.

    Args:
        interactions: rows with a `timestamp` column (e.g. `interactions.parquet`).
        valid_quantile: quantile of timestamps where validation starts.
        test_quantile: quantile of timestamps where test starts (>= valid_quantile).
    """
    if not 0.0 < valid_quantile <= test_quantile < 1.0:
        raise ValueError(
            f"need 0 < valid_quantile <= test_quantile < 1, got valid_quantile={valid_quantile}, "
            f"test_quantile={test_quantile}"
        )
    if interactions.height == 0:
        raise ValueError("interactions is empty")
    ts = pl.col(S.TIMESTAMP)
    cuts = interactions.select(
        ts.quantile(valid_quantile, interpolation="lower").alias("v"),
        ts.quantile(test_quantile, interpolation="lower").alias("t"),
    ).row(0)
    valid_cut, test_cut = int(cuts[0]), int(cuts[1])
    return TemporalSplit(
        train=interactions.filter(ts < valid_cut),
        validation=interactions.filter((ts >= valid_cut) & (ts < test_cut)),
        test=interactions.filter(ts >= test_cut),
        valid_cut=valid_cut,
        test_cut=test_cut,
    )
