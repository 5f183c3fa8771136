"""Offline analysis of evaluated runs: pure functions of their per-user results (`recsys.eval.per_user`),
runs tables and item embeddings.

What the notebooks call: a leaderboard over seeds, metrics by bucket (history length, target
popularity, item age), catalog coverage and popularity bias of the recommendations, a paired
comparison of two runs on the same users (bootstrap interval of the mean difference and a paired
sign-flip randomization test, the test Smucker et al., CIKM 2007, recommend for IR metrics), and a
2-D map and nearest neighbours of item embeddings. Nothing here scores users or reads a store:
inputs are polars frames and arrays, RNGs are passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data import schema as S
from recsys.data.split import TARGET
from recsys.eval.per_user import RANK, TOPK, TRAIN_COUNT
from recsys.tracking.overrides import behavioural_overrides


def ndcg_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k of each user from the 1-based rank of their one target (0 beyond k)."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def hit_per_user(ranks: np.ndarray, k: int) -> np.ndarray:
    """1.0 where the target is within the top k, else 0.0."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def run_overview(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per run: what it trained (config, model, attention, seed), under which protocol, whether
    it ran at its config's defaults, and its final metrics.

    Args:
        runs: `recsys.tracking.mlflow.dataset_runs` output (`param:<key>`, `tag:<key>` and metric columns).

    Returns:
        run_id, config, model, attention, seed, split, cold_item_share, exclude_seen, overrides (the
        behavioural `k=v` of its command, null when the run did not record its command),
        at_defaults, then the `val/`, `test/` and `eval/` metrics.
    """

    def param(key: str) -> pl.Expr:
        return pl.col(f"param:{key}") if f"param:{key}" in runs.columns else pl.lit(None, pl.String)

    commands = runs["tag:command"].to_list() if "tag:command" in runs.columns else [None] * runs.height
    overrides = [None if c is None else " ".join(behavioural_overrides(c)) for c in commands]
    metrics = [c for c in runs.columns if c.startswith(("val/", "test/", "eval/", "eval_without_newest/"))]
    return runs.select(
        "run_id",
        param("name").alias("config"),
        param("model.name").alias("model"),
        param("model.params.attention").alias("attention"),
        param("train.seed").cast(pl.Int64).alias("seed"),
        param("split.kind").fill_null("leave_one_out").alias("split"),  # runs from before splits were configurable
        param("split.cold_item_share").cast(pl.Float64).fill_null(0.0).alias("cold_item_share"),
        (param("eval.exclude_seen") == "True").alias("exclude_seen"),
        pl.Series("overrides", overrides, dtype=pl.String),
        pl.Series("at_defaults", [None if o is None else o == "" for o in overrides], dtype=pl.Boolean),
        *metrics,
    )


def summarize_seeds(runs: pl.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pl.DataFrame:
    """Mean, sample sd and count of each metric over the runs of each group (one run per seed).

    Args:
        runs: one row per run, with the `by` columns and the metric columns.
        by: the columns that name a configuration (e.g. model, config name, at_defaults).
        metrics: metric columns, e.g. `test/ndcg@10`; the result has `<metric> mean`, `<metric> sd`.
    """
    missing = [c for c in [*by, *metrics] if c not in runs.columns]
    if missing:
        raise KeyError(f"runs lack columns {missing} (have {runs.columns})")
    aggs: list[pl.Expr] = [pl.len().alias("n_runs")]
    for m in metrics:
        aggs += [pl.col(m).mean().alias(f"{m} mean"), pl.col(m).std(ddof=1).alias(f"{m} sd")]
    return runs.group_by(list(by), maintain_order=True).agg(aggs).sort(list(by))


def best_per_group(summary: pl.DataFrame, group: str, metric: str) -> pl.DataFrame:
    """The row with the highest `metric` within each value of `group` (e.g. best config per model)."""
    if metric not in summary.columns:
        raise KeyError(f"no column {metric!r} (have {summary.columns})")
    best = summary.sort(metric, descending=True, nulls_last=True).group_by(group, maintain_order=True).first()
    return best.sort(metric, descending=True, nulls_last=True)


def quantile_edges(values: np.ndarray | pl.Series, n_buckets: int) -> list[float]:
    """Bucket edges at the quantiles of `values`: at most `n_buckets` buckets, duplicates merged.

    The last edge is +inf, so every value falls in a bucket `[edges[i], edges[i + 1])`.
    """
    if n_buckets < 1:
        raise ValueError(f"n_buckets={n_buckets} must be >= 1")
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("no values to bucket")
    qs = np.quantile(v, np.linspace(0.0, 1.0, n_buckets + 1)[:-1], method="lower")  # edges are observed values
    return [*sorted({float(q) for q in qs}), math.inf]


def metrics_by_bucket(users: pl.DataFrame, column: str, edges: Sequence[float], *, k: int = 10) -> pl.DataFrame:
    """NDCG@k and HR@k of the users in each bucket `[edges[i], edges[i + 1])` of `column`.

    Args:
        users: a per-user table (needs `rank` and `column`); users with a null `column` are left out.
        column: e.g. `history_len`, `target_popularity`, `item_age`.
        edges: increasing bucket edges; values outside `[edges[0], edges[-1])` are left out.
        k: cut-off.

    Returns:
        bucket (label), lower, upper, n_users, `ndcg@k`, `hr@k`; one row per bucket, empty ones
        with n_users 0 and null metrics.
    """
    e = [float(x) for x in edges]
    if len(e) < 2 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise ValueError(f"edges must be at least two increasing values, got {list(edges)}")
    if column not in users.columns:
        raise KeyError(f"no column {column!r} in the per-user table (have {users.columns})")
    values = users[column].cast(pl.Float64).to_numpy()
    ranks = users[RANK].to_numpy()
    ndcg, hit = ndcg_per_user(ranks, k), hit_per_user(ranks, k)
    rows = []
    for lo, hi in zip(e, e[1:], strict=False):
        inside = (values >= lo) & (values < hi)
        n = int(inside.sum())
        rows.append(
            {
                "bucket": f"[{_edge(lo)}, {_edge(hi)})",
                "lower": lo,
                "upper": hi,
                "n_users": n,
                f"ndcg@{k}": float(ndcg[inside].mean()) if n else None,
                f"hr@{k}": float(hit[inside].mean()) if n else None,
            }
        )
    return pl.DataFrame(rows, schema_overrides={f"ndcg@{k}": pl.Float64, f"hr@{k}": pl.Float64})


def catalog_coverage(topk: pl.Series, n_items: int, k: int) -> float:
    """Share of the catalog's `n_items` items that appears in at least one user's top k."""
    if n_items < 1:
        raise ValueError(f"n_items={n_items} must be >= 1")
    return topk.list.head(k).explode().drop_nulls().n_unique() / n_items


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all are equal, (n - 1) / n when one holds everything."""
    c = np.sort(np.asarray(counts, dtype=np.float64))
    if c.size == 0 or (c < 0).any():
        raise ValueError("gini needs a non-empty array of non-negative counts")
    total = c.sum()
    if total == 0:
        return 0.0
    n = c.size
    # mean absolute difference over all pairs, from the sorted values: sum_i (2i - n - 1) c_i / (n * total)
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * c) / (n * total))


def popularity_percentiles(train_counts: np.ndarray) -> np.ndarray:
    """Each item's popularity percentile in (0, 100]: the share of items with a count <= its count."""
    c = np.asarray(train_counts)
    order = np.sort(c)
    return 100.0 * np.searchsorted(order, c, side="right") / c.size


def recommendation_bias(users: pl.DataFrame, items: pl.DataFrame, *, k: int = 10) -> dict[str, float]:
    """What the top-k lists recommend: coverage, average popularity percentile and Gini of exposure.

    Args:
        users: a per-user table (its `topk` lists).
        items: the run's item table (item_idx 1..n, train_count).
        k: cut-off.

    Returns:
        `coverage@k` (share of the catalog recommended at least once), `pop_percentile@k` (mean
        popularity percentile of the recommended items, 50 for a popularity-blind recommender on
        a uniform catalog, near 100 when it recommends only the head), `gini@k` (of how often each
        catalog item is recommended; 0 = every item equally often), and the same percentile of the
        users' targets (`target_pop_percentile`), what an unbiased recommender would match.
    """
    items = items.sort(S.ITEM_IDX)
    n_items = items.height
    if items[S.ITEM_IDX].to_list() != list(range(1, n_items + 1)):
        raise ValueError("the item table must hold item_idx 1..n_items")
    pct = np.concatenate([[np.nan], popularity_percentiles(items[TRAIN_COUNT].to_numpy())])  # [n_items + 1]
    recommended = users[TOPK].list.head(k).explode().drop_nulls().to_numpy().astype(np.int64)
    exposure = np.bincount(recommended, minlength=n_items + 1)[1:]
    targets = users[TARGET].to_numpy().astype(np.int64)
    return {
        f"coverage@{k}": float((exposure > 0).mean()),
        f"pop_percentile@{k}": float(pct[recommended].mean()) if recommended.size else math.nan,
        f"gini@{k}": gini(exposure),
        "target_pop_percentile": float(pct[targets].mean()) if targets.size else math.nan,
    }


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on the same users: B - A of a per-user metric."""

    metric: str  # e.g. "ndcg@10"
    n_users: int
    mean_a: float
    mean_b: float
    diff: float  # mean_b - mean_a
    ci_low: float  # bootstrap percentile interval of `diff`
    ci_high: float
    confidence: float
    p_value: float  # two-sided paired sign-flip randomization test of mean difference 0
    n_resamples: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.ci_low > 0.0 or self.ci_high < 0.0


def paired_comparison(
    a: pl.DataFrame,
    b: pl.DataFrame,
    *,
    rng: np.random.Generator,
    k: int = 10,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare NDCG@k of two runs user by user (B - A).

    Args:
        a: per-user table of run A (user_idx, rank).
        b: per-user table of run B, over the same users (same dataset, split and stage).
        rng: draws the bootstrap resamples and the random sign flips.
        k: NDCG cut-off.
        n_resamples: bootstrap resamples, and sign-flip draws for the p-value.
        confidence: of the interval, e.g. 0.95.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must be in (0, 1)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples} must be >= 1")
    users_a, users_b = set(a[S.USER_IDX].to_list()), set(b[S.USER_IDX].to_list())
    if users_a != users_b:
        raise ValueError(
            f"the runs were evaluated on different users ({len(users_a)} vs {len(users_b)}, "
            f"{len(users_a ^ users_b)} not shared): compare runs of the same dataset, split and stage"
        )
    joined = a.select(S.USER_IDX, pl.col(RANK).alias("a")).join(
        b.select(S.USER_IDX, pl.col(RANK).alias("b")), on=S.USER_IDX
    )
    if joined.height == 0:
        raise ValueError("no users to compare")
    ga, gb = ndcg_per_user(joined["a"].to_numpy(), k), ndcg_per_user(joined["b"].to_numpy(), k)
    d = gb - ga  # [U]
    n = d.size
    boot = np.empty(n_resamples)
    flips = np.empty(n_resamples)
    chunk = max(1, (1 << 22) // n)  # resamples drawn at once: about 4M indices in memory
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        boot[start : start + m] = d[rng.integers(0, n, size=(m, n))].mean(axis=1)
        signs = rng.integers(0, 2, size=(m, n)) * 2 - 1
        flips[start : start + m] = (signs * d).mean(axis=1)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    observed = abs(float(d.mean()))
    extreme = int(np.sum(np.abs(flips) >= observed - 1e-12))  # tolerance: identical runs flip to exactly 0
    return PairedComparison(
        metric=f"ndcg@{k}",
        n_users=n,
        mean_a=float(ga.mean()),
        mean_b=float(gb.mean()),
        diff=float(d.mean()),
        ci_low=float(lo),
        ci_high=float(hi),
        confidence=confidence,
        p_value=(extreme + 1) / (n_resamples + 1),
        n_resamples=n_resamples,
    )


def embedding_map(item_emb: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates [N, 2] of item vectors [N, D] (pass rows 1..n_items: the padding row is no item).

    Args:
        item_emb: [N, D] item embeddings.
        method: "pca" (linear, fast, global layout) or "tsne" (local neighbourhoods, slower).
        seed: of t-SNE's initialisation and optimisation.
    """
    x = np.asarray(item_emb, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"item_emb has shape {x.shape}; need [N >= 3, D]")
    if method == "pca":
        from sklearn.decomposition import PCA

        return np.asarray(PCA(n_components=2, random_state=seed).fit_transform(x))
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (x.shape[0] - 1) / 3)  # t-SNE needs perplexity < n_samples
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return np.asarray(tsne.fit_transform(x))
    raise ValueError(f"method={method!r}; expected 'pca' or 'tsne'")


def nearest_items(item_emb: np.ndarray, items: Sequence[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k items most cosine-similar to each of `items` (itself and the padding row left out).

    Args:
        item_emb: [n_items + 1, D] item embeddings, row 0 = padding.
        items: item indices 1..n_items.
        k: neighbours per item.

    Returns:
        (item_idx [len(items), k], cosine similarity [len(items), k]), most similar first.
    """
    e = np.asarray(item_emb, dtype=np.float64)
    n_items = e.shape[0] - 1
    idx = np.asarray(items, dtype=np.int64)
    if idx.size and (idx.min() < 1 or idx.max() > n_items):
        raise ValueError(f"items must be in 1..{n_items}, got {sorted(set(idx.tolist()))}")
    k = min(k, n_items - 1)
    unit = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sims = unit[idx] @ unit.T  # [Q, n_items + 1]
    sims[:, 0] = -np.inf
    sims[np.arange(idx.size), idx] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def _edge(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"
