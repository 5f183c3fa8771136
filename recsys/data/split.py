"""Evaluation splits of per-user sequences, as pure functions on polars frames.

Both give the same shape (`SequenceSplit`): training sequences, and validation / test rows of a
history (oldest first) and the target that follows it.

- Leave-one-out (the default protocol): per user, test target = last item, validation target =
  second to last, train = the rest. Users with fewer than `min_len` (default 3) items are not
  evaluated: their whole sequence trains (SASRec's policy).
- Global temporal: two cut times at quantiles of all interaction timestamps. Training sequences
  are every user's items before the validation cut; a user's validation target is their first
  item at or after the validation cut (and before the test cut), their test target the first at or
  after the test cut, each with the user's whole history before it. Users with no item before a
  cut are not evaluated at that cut. Nothing after a cut leaks into what ranks at it.

Cold start (`cold_item_share` > 0, on top of either split): a seeded random share of the items is
removed from every training sequence, and validation and test keep only the users whose target is
one of those items; their histories stay whole (a model may read a cold item it can embed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from recsys.data import schema as S

TARGET = "target"  # the held-out item_idx of a validation/test row
TARGET_TIMESTAMP = "target_timestamp"


@dataclass(frozen=True)
class SplitConfig:
    """Which split the DataModule trains and evaluates on."""

    kind: Literal["leave_one_out", "temporal"] = "leave_one_out"
    valid_quantile: float = 0.8  # temporal: quantile of all timestamps where validation starts
    test_quantile: float = 0.9  # temporal: quantile where test starts (>= valid_quantile)
    cold_item_share: float = 0.0  # > 0: this share of items never trains; evaluate on users whose target is one
    cold_seed: int = 0  # draws the cold items
    # > 0: the last `holdout_tail` items of every training sequence train nothing either (leave-one-out): a
    # stage-1 model for a ranker's training lists, whose targets those items are (recsys.data.candidate_lists)
    holdout_tail: int = 0

    def __post_init__(self) -> None:
        if self.holdout_tail < 0:
            raise ValueError(f"holdout_tail must be >= 0, got {self.holdout_tail}")
        if self.holdout_tail and self.kind != "leave_one_out":
            raise ValueError(f"holdout_tail needs the leave_one_out split, got kind={self.kind!r}")
        if not 0.0 <= self.cold_item_share < 1.0:
            raise ValueError(f"cold_item_share must be in [0, 1), got {self.cold_item_share}")
        if not 0.0 < self.valid_quantile <= self.test_quantile < 1.0:
            raise ValueError(
                f"need 0 < valid_quantile <= test_quantile < 1, got valid_quantile={self.valid_quantile}, "
                f"test_quantile={self.test_quantile}"
            )


@dataclass(frozen=True)
class SequenceSplit:
    """`train`: user_idx, items, timestamps (what trains). `validation` / `test`: user_idx, items (the
    history before the target, oldest first), timestamps, target, target_timestamp."""

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    protocol: dict[str, Any] = field(default_factory=dict)  # the split's name and settings, recorded with results


def split_sequences(sequences: pl.DataFrame, cfg: SplitConfig, n_items: int) -> SequenceSplit:
    """The split `cfg` names, of `sequences` (one row per user, as in `sequences.parquet`) over items 1..n_items."""
    if cfg.kind == "temporal":
        split = temporal_split(sequences, valid_quantile=cfg.valid_quantile, test_quantile=cfg.test_quantile)
    else:
        split = leave_one_out_split(sequences)
    if cfg.holdout_tail:
        split = without_tail(split, cfg.holdout_tail)
    if cfg.cold_item_share > 0:
        split = cold_start(split, cold_items(n_items, cfg.cold_item_share, cfg.cold_seed))
        split.protocol.update(cold_item_share=cfg.cold_item_share, cold_seed=cfg.cold_seed)
    return split


def without_tail(split: SequenceSplit, tail: int) -> SequenceSplit:
    """`split` with the last `tail` items of every training sequence removed (at least one item stays)."""
    keep = (pl.col(S.ITEMS).list.len() - tail).clip(lower_bound=1)
    train = split.train.with_columns(pl.col(S.ITEMS, S.TIMESTAMPS).list.head(keep))
    return SequenceSplit(train, split.validation, split.test, {**split.protocol, "holdout_tail": tail})


def cold_items(n_items: int, share: float, seed: int) -> list[int]:
    """A seeded random `share` of the items 1..n_items (at least one), sorted."""
    rng = np.random.default_rng(seed)
    count = max(1, round(share * n_items))
    return sorted(int(i) for i in rng.choice(np.arange(1, n_items + 1), size=count, replace=False))


def cold_start(split: SequenceSplit, cold: list[int]) -> SequenceSplit:
    """`split` with the `cold` items removed from training and only cold targets evaluated."""
    cold_list = pl.lit(pl.Series(cold, dtype=pl.Int64))
    keep = ~pl.element().is_in(cold_list)
    train = split.train.with_columns(
        pl.col(S.TIMESTAMPS).list.gather(pl.col(S.ITEMS).list.eval(pl.arg_where(keep))),
        pl.col(S.ITEMS).list.eval(pl.element().filter(keep)),
    )
    is_cold = pl.col(TARGET).is_in(cold)
    return SequenceSplit(
        train=train,
        validation=split.validation.filter(is_cold),
        test=split.test.filter(is_cold),
        protocol={**split.protocol, "cold_items": len(cold)},
    )


def leave_one_out_split(sequences: pl.DataFrame, *, min_len: int = 3) -> SequenceSplit:
    """Split `sequences` (user_idx, items, timestamps; oldest first) into train / validation / test.

    Args:
        sequences: one row per user, as in `sequences.parquet`.
        min_len: users with fewer items go to train only (must be >= 3 so train keeps an item).
    """
    if min_len < 3:
        raise ValueError(f"min_len must be >= 3 (train, validation and test each need an item), got {min_len}")
    seqs = _checked(sequences)
    n = pl.col(S.ITEMS).list.len()
    evaluated = seqs.filter(n >= min_len)
    short = seqs.filter(n < min_len)
    train = pl.concat([evaluated.with_columns(pl.col(S.ITEMS, S.TIMESTAMPS).list.head(n - 2)), short])
    return SequenceSplit(
        train=train.sort(S.USER_IDX),
        validation=_holdout(evaluated, n - 2),
        test=_holdout(evaluated, n - 1),
        protocol={"split": "leave_one_out", "min_len": min_len, "train_only_users": short.height},
    )


def temporal_split(
    sequences: pl.DataFrame, *, valid_quantile: float = 0.8, test_quantile: float = 0.9
) -> SequenceSplit:
    """Global temporal split of `sequences` at two timestamp quantiles (see the module docstring).

    Rows at a cut timestamp belong to the later part (ties at a cut are never split apart).
    """
    SplitConfig("temporal", valid_quantile, test_quantile)  # checks the quantiles
    seqs = _checked(sequences)
    stamps = seqs[S.TIMESTAMPS].explode().drop_nulls()
    if stamps.len() == 0:
        raise ValueError("sequences hold no interactions")
    valid_cut = int(stamps.quantile(valid_quantile, interpolation="lower"))  # type: ignore[arg-type]
    test_cut = int(stamps.quantile(test_quantile, interpolation="lower"))  # type: ignore[arg-type]
    before = {  # per user: items before the cut = the index of the first item at or after it
        cut: pl.col(S.TIMESTAMPS).list.eval((pl.element() < cut).sum()).list.first() for cut in (valid_cut, test_cut)
    }
    n = pl.col(S.ITEMS).list.len()
    at_valid = seqs.with_columns(before[valid_cut].alias("k"), before[test_cut].alias("k_test"))
    validation = at_valid.filter((pl.col("k") >= 1) & (pl.col("k") < pl.col("k_test")))
    test = at_valid.filter((pl.col("k_test") >= 1) & (pl.col("k_test") < n))
    train = at_valid.with_columns(pl.col(S.ITEMS, S.TIMESTAMPS).list.head(pl.col("k"))).filter(pl.col("k") >= 1)
    return SequenceSplit(
        train=train.select(S.USER_IDX, S.ITEMS, S.TIMESTAMPS).sort(S.USER_IDX),
        validation=_holdout(validation, pl.col("k")),
        test=_holdout(test, pl.col("k_test")),
        protocol={
            "split": "temporal",
            "valid_quantile": valid_quantile,
            "test_quantile": test_quantile,
            "valid_cut": valid_cut,
            "test_cut": test_cut,
        },
    )


def _checked(sequences: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in (S.USER_IDX, S.ITEMS, S.TIMESTAMPS) if c not in sequences.columns]
    if missing:
        raise ValueError(f"sequences lack columns {missing} (has {sequences.columns})")
    return sequences.select(S.USER_IDX, S.ITEMS, S.TIMESTAMPS)


def _holdout(seqs: pl.DataFrame, index: pl.Expr) -> pl.DataFrame:
    """The item at position `index` of each row as the target, the items before it as the history."""
    return seqs.select(
        S.USER_IDX,
        pl.col(S.ITEMS).list.head(index),
        pl.col(S.TIMESTAMPS).list.head(index),
        pl.col(S.ITEMS).list.get(index).alias(TARGET),
        pl.col(S.TIMESTAMPS).list.get(index).alias(TARGET_TIMESTAMP),
    )
