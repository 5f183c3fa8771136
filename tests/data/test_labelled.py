"""Labelled-candidate datasets: the paper recipe, the explicit-label recipe and the negative sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import chisquare

from recsys.data import schema as S
from recsys.data.labelled import (
    TEST,
    TRAIN,
    VAL,
    LabelledConfig,
    build_labelled,
    explicit_samples,
    load_labelled,
    paper_samples,
    sample_negatives,
)
from recsys.data.processed import write_processed


def test_sampler_never_draws_an_interacted_item() -> None:
    counts = np.arange(21)  # item i has count i; 0 = padding never drawn
    interacted = np.array([20, 19, 3, 11])  # the most frequent ones among them
    draws = sample_negatives(np.random.default_rng(0), counts, interacted, 5000)
    assert not np.isin(draws, interacted).any()
    assert (draws != 0).all()


def test_sampler_follows_item_frequency() -> None:
    counts = np.array([0, 1, 2, 4, 8, 16, 32, 64, 5, 10])
    interacted = np.array([7, 2])
    n = 20_000
    draws = sample_negatives(np.random.default_rng(1), counts, interacted, n)
    allowed = np.setdiff1d(np.flatnonzero(counts), interacted)
    observed = np.array([(draws == i).sum() for i in allowed])
    expected = counts[allowed] / counts[allowed].sum() * n
    assert chisquare(observed, expected).pvalue > 0.01  # consistent with frequency-proportional draws
    uniform = np.full(len(allowed), n / len(allowed))
    assert chisquare(observed, uniform).pvalue < 1e-12  # and far from uniform draws (the test has power)


def test_sampler_refuses_when_nothing_is_left() -> None:
    with pytest.raises(ValueError, match="no item left"):
        sample_negatives(np.random.default_rng(0), np.array([0, 3, 4]), np.array([1, 2]), 3)


def _sequences(rng: np.random.Generator, n_users: int, n_items: int) -> list[np.ndarray]:
    lengths = rng.integers(60, 90, size=n_users)
    lengths[0] = 40  # below min_events: left out
    return [rng.integers(1, n_items + 1, size=n) for n in lengths]


def test_paper_recipe_targets_splits_and_negatives() -> None:
    rng = np.random.default_rng(0)
    seqs = _sequences(rng, 12, 300)
    cfg = LabelledConfig(processed="-", output_dir="-", min_events=50, n_train=9, stride=5, seed=3)
    samples = paper_samples(seqs, 300, cfg)
    assert set(samples["user_idx"].unique().to_list()) == set(range(1, 12))
    for user in range(1, 12):
        rows = samples.filter(pl.col("user_idx") == user)
        seq = seqs[user]
        pos = rows.filter(pl.col("label") == 1)
        assert (
            (pos["split"] == TRAIN).sum() == 9
            and (pos["split"] == VAL).sum() == 1
            and (pos["split"] == TEST).sum() == 1
        )
        by_split = dict(zip(pos["split"].to_list(), pos["position"].to_list(), strict=False))
        assert by_split[TEST] == len(seq) - 1 and by_split[VAL] == len(seq) - 2
        assert sorted(pos.filter(pl.col("split") == TRAIN)["position"].to_list()) == [
            len(seq) - 3 - 5 * i for i in range(8, -1, -1)
        ]
        assert all(seq[p] == i for p, i in zip(pos["position"], pos["item_idx"], strict=True))
        neg = rows.filter(pl.col("label") == 0)
        assert neg.height == 2 * pos.height
        assert not np.isin(neg["item_idx"].to_numpy(), seq).any()
    assert paper_samples(seqs, 300, cfg).equals(samples)  # seeded


def test_explicit_recipe_labels_and_global_time_split() -> None:
    inter = pl.DataFrame(
        {
            S.USER_IDX: [0, 0, 0, 1, 1, 1, 1, 2, 2, 2],
            S.ITEM_IDX: [1, 2, 3, 1, 4, 5, 2, 3, 4, 5],
            S.TIMESTAMP: [1, 2, 9, 3, 4, 5, 10, 6, 7, 8],
            S.RATING: [5.0, 3.0, 4.0, 1.0, 4.0, 2.0, 5.0, 4.0, 3.5, 4.5],
        }
    )
    cfg = LabelledConfig(processed="-", output_dir="-", recipe="explicit", val_frac=0.2, test_frac=0.2)
    out = explicit_samples(inter, cfg)
    assert out["label"].to_list() == [1, 0, 1, 0, 1, 0, 1, 1, 0, 1]
    assert out["position"].to_list() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    # 10 events: the last 2 in time (t 9, 10) are test, the 2 before (t 7, 8) validation
    assert out["split"].to_list() == [TRAIN, TRAIN, TEST, TRAIN, TRAIN, TRAIN, TEST, TRAIN, VAL, VAL]


def _write_tiny_processed(root: Path) -> None:
    inter = pl.DataFrame(
        {
            S.USER_IDX: [0] * 6 + [1] * 4,
            S.ITEM_IDX: [1, 2, 3, 4, 5, 6, 2, 3, 1, 6],
            S.TIMESTAMP: list(range(6)) + [2, 3, 4, 5],
            S.RATING: [5.0, 3.0, 4.0, 1.0, 4.0, 2.0, 5.0, 4.0, 3.0, 4.0],
        }
    )
    seqs = inter.group_by(S.USER_IDX, maintain_order=True).agg(pl.col(S.ITEM_IDX).alias(S.ITEMS))
    write_processed(
        root,
        interactions=inter,
        sequences=seqs,
        items=pl.DataFrame({S.ITEM_IDX: list(range(1, 7)), S.RAW_ID: [str(i) for i in range(1, 7)]}),
        users=pl.DataFrame({S.USER_IDX: [0, 1], S.RAW_ID: ["a", "b"]}),
        meta={"schema_version": S.SCHEMA_VERSION, "n_items": 6, "n_users": 2},
    )


def test_build_save_load_rebuilds_histories(tmp_path: Path) -> None:
    _write_tiny_processed(tmp_path / "proc")
    cfg = LabelledConfig(
        processed=str(tmp_path / "proc"),
        output_dir=str(tmp_path / "lab"),
        recipe="explicit",
        val_frac=0.2,
        test_frac=0.2,
    )
    data = load_labelled(build_labelled(cfg))
    assert (
        json.loads((tmp_path / "lab" / "labelled_meta.json").read_text())["samples"]["train"]
        == data.split("train").height
    )
    row = data.samples.filter((pl.col(S.USER_IDX) == 0) & (pl.col("position") == 4))
    batch = data.batch(row, max_history=3)
    assert batch.items.tolist() == [[2, 3, 4]]  # the 3 events before position 4
    assert batch.ratings.tolist() == [[3, 4, 1]]
    assert batch.candidates.tolist() == [5] and batch.labels.tolist() == [1.0]
    first = data.batch(data.samples.filter((pl.col(S.USER_IDX) == 1) & (pl.col("position") == 1)), max_history=3)
    assert first.items.tolist() == [[0, 0, 2]]  # left-padded


def test_paper_recipe_never_draws_a_forbidden_item() -> None:
    rng = np.random.default_rng(5)
    seqs = _sequences(rng, 6, 40)
    held_out = [np.r_[s, np.arange(1, 11)] for s in seqs]  # items 1..10 held out of every sequence
    cfg = LabelledConfig(processed="-", output_dir="-", min_events=50, n_train=9, stride=5, seed=0)
    negatives = paper_samples(seqs, 40, cfg, forbidden=held_out).filter(pl.col("label") == 0)
    assert negatives.height > 0 and negatives["item_idx"].min() > 10
