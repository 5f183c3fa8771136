"""Analysis functions on constructed cases whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recsys.eval.analysis import (
    best_per_group,
    catalog_coverage,
    embedding_map,
    gini,
    metrics_by_bucket,
    ndcg_per_user,
    nearest_items,
    paired_comparison,
    popularity_percentiles,
    quantile_edges,
    recommendation_bias,
    run_overview,
    summarize_seeds,
)


def users_table(ranks: list[int], **columns: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"user_idx": list(range(len(ranks))), "rank": ranks, **columns})


def test_ndcg_per_user_by_hand() -> None:
    got = ndcg_per_user(np.array([1, 3, 10, 11]), 10)
    np.testing.assert_allclose(got, [1.0, 0.5, 1 / math.log2(11), 0.0])


def test_paired_comparison_identical_runs_interval_contains_zero() -> None:
    rng = np.random.default_rng(0)
    ranks = rng.integers(1, 50, size=300).tolist()
    a = users_table(ranks)
    result = paired_comparison(a, a, rng=np.random.default_rng(1), n_resamples=500)
    assert result.diff == 0.0 and result.ci_low <= 0.0 <= result.ci_high
    assert result.p_value == 1.0 and not result.significant


def test_paired_comparison_better_on_every_user_interval_above_zero() -> None:
    rng = np.random.default_rng(0)
    ranks_a = rng.integers(2, 10, size=200)  # every target within the top 10, never first
    a = users_table(ranks_a.tolist())
    b = users_table((ranks_a - 1).tolist()).sample(fraction=1.0, shuffle=True, seed=3)  # row order must not matter
    result = paired_comparison(a, b, rng=np.random.default_rng(1), n_resamples=500)
    assert result.ci_low > 0.0 and result.significant
    assert result.diff > 0 and result.mean_b > result.mean_a
    assert result.p_value == pytest.approx(1 / 501)  # no sign flip reaches the observed mean
    reverse = paired_comparison(b, a, rng=np.random.default_rng(1), n_resamples=500)
    assert reverse.ci_high < 0.0 and reverse.diff == pytest.approx(-result.diff)


def test_paired_comparison_refuses_different_users() -> None:
    a = users_table([1, 2, 3])
    b = users_table([1, 2, 3]).with_columns(pl.col("user_idx") + 1)
    with pytest.raises(ValueError, match="different users"):
        paired_comparison(a, b, rng=np.random.default_rng(0))


def test_metrics_by_bucket_by_hand() -> None:
    # history 1-2: ranks 1 and 20 -> ndcg (1 + 0) / 2; history 5+: rank 3 -> 0.5; bucket [3, 5) empty
    users = users_table([1, 20, 3], history_len=[1, 2, 7])
    got = metrics_by_bucket(users, "history_len", [1, 3, 5, math.inf], k=10)
    assert got["bucket"].to_list() == ["[1, 3)", "[3, 5)", "[5, inf)"]
    assert got["n_users"].to_list() == [2, 0, 1]
    assert got["ndcg@10"].to_list() == [0.5, None, 0.5]
    assert got["hr@10"].to_list() == [0.5, None, 1.0]


def test_quantile_edges_cover_all_values() -> None:
    values = np.array([1, 1, 1, 2, 3, 4, 5, 6, 7, 100])
    edges = quantile_edges(values, 4)
    assert edges[0] == 1 and edges[-1] == math.inf and edges == sorted(set(edges))
    table = metrics_by_bucket(users_table([1] * 10, history_len=values.tolist()), "history_len", edges)
    assert table["n_users"].sum() == 10


def test_gini_known_values() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(3 / 4)  # (n - 1) / n
    assert gini(np.array([0, 0])) == 0.0


def test_popularity_percentiles_and_bias() -> None:
    np.testing.assert_allclose(popularity_percentiles(np.array([1, 2, 3, 4])), [25, 50, 75, 100])
    items = pl.DataFrame({"item_idx": [1, 2, 3, 4], "train_count": [1, 2, 3, 4]})
    users = pl.DataFrame({"user_idx": [0, 1], "target": [1, 2], "rank": [1, 1], "topk": [[4, 3], [4, 3]]})
    bias = recommendation_bias(users, items, k=2)
    assert bias["coverage@2"] == 0.5
    assert bias["pop_percentile@2"] == pytest.approx(87.5)  # items 4 (100) and 3 (75)
    assert bias["gini@2"] == pytest.approx(gini(np.array([0, 0, 2, 2])))
    assert bias["target_pop_percentile"] == pytest.approx(37.5)
    assert catalog_coverage(users["topk"], 4, 1) == 0.25


def test_seed_summary_and_best_per_model() -> None:
    runs = pl.DataFrame(
        {
            "model": ["a", "a", "a", "b"],
            "config": ["a1", "a1", "a2", "b1"],
            "test/ndcg@10": [0.1, 0.3, 0.25, 0.15],
        }
    )
    summary = summarize_seeds(runs, ["model", "config"], ["test/ndcg@10"])
    a1 = summary.filter(pl.col("config") == "a1").row(0, named=True)
    assert a1["n_runs"] == 2 and a1["test/ndcg@10 mean"] == pytest.approx(0.2)
    assert a1["test/ndcg@10 sd"] == pytest.approx(math.sqrt(0.02))
    best = best_per_group(summary, "model", "test/ndcg@10 mean")
    assert best["config"].to_list() == ["a2", "b1"]


def test_nearest_items_and_map() -> None:
    emb = np.array([[0, 0], [1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)  # row 0 = padding
    ids, sims = nearest_items(emb, [1], k=3)
    assert ids[0].tolist() == [2, 3, 4] and sims[0, 0] > sims[0, 1] > sims[0, 2]
    for method in ("pca", "tsne"):
        coords = embedding_map(emb[1:], method=method)
        assert coords.shape == (4, 2) and np.isfinite(coords).all()


def test_run_overview_reads_protocol_and_defaults() -> None:
    runs = pl.DataFrame(
        {
            "run_id": ["r1", "r2", "r3"],
            "param:name": ["sasrec_x"] * 3,
            "param:model.name": ["sasrec"] * 3,
            "param:train.seed": ["42", "43", "42"],
            "param:eval.exclude_seen": ["True"] * 3,
            "tag:command": ["python -m pipelines.train --config x.yaml", "... train.seed=43", None],
            "val/ndcg@10": [0.1, 0.2, 0.3],
            "train/loss": [1.0, 1.0, 1.0],
        }
    )
    got = run_overview(runs)
    assert got["at_defaults"].to_list() == [True, True, None]  # r3 did not record its command
    assert got["split"].to_list() == ["leave_one_out"] * 3 and got["cold_item_share"].to_list() == [0.0] * 3
    assert got["seed"].to_list() == [42, 43, 42] and got["exclude_seen"].all()
    assert "val/ndcg@10" in got.columns and "train/loss" not in got.columns
