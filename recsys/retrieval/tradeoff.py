"""Recall against exact search and latency of a FAISS index, over a range of its search parameter.

The reference is `exact_search` (torch matmul over the same embeddings); recall@k is the share of
the exact top-k the index finds (faiss contrib's way of judging an approximate index, never by eye).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import polars as pl
import torch

from recsys.retrieval.bundle import ServingBundle
from recsys.retrieval.index import IndexConfig, ItemIndex, exact_search, recall_at_k
from recsys.retrieval.recommender import Recommender

SearchParam = Literal["nprobe", "ef_search"]


def bundle_queries(bundle: ServingBundle, n_queries: int, rng: np.random.Generator) -> np.ndarray:
    """Query vectors [n, D] of up to `n_queries` stored users of a bundle, sampled without replacement."""
    users = list(bundle.user_vocab)
    if not users:
        raise ValueError("the bundle stores no user histories to build queries from")
    chosen = rng.choice(len(users), size=min(n_queries, len(users)), replace=False)
    histories = [h for h in (bundle.user_history(users[i]) for i in chosen) if h is not None and len(h)]
    return Recommender(bundle).encode(histories).numpy()


def exact_top_items(item_emb: np.ndarray | torch.Tensor, queries: np.ndarray, k: int) -> np.ndarray:
    """The exact top-k item indices [B, k] by inner product (padding row never returned)."""
    _, items = exact_search(item_emb, queries, k)
    return items.numpy()


def search_sweep(
    index: ItemIndex,
    queries: np.ndarray,
    exact_items: np.ndarray,
    *,
    param: SearchParam | None = None,
    values: Sequence[int] = (),
    single_queries: int = 200,
) -> pl.DataFrame:
    """Recall@k against `exact_items` and latency of `index` at each value of its search parameter.

    Args:
        index: the index to measure (its own search settings are left as they were).
        queries: [B, D] query vectors.
        exact_items: [B, k] exact top-k for those queries (`exact_top_items`); k is taken from it.
        param: "nprobe" (IVF) or "ef_search" (HNSW); None measures the index as it is (one row).
        values: the parameter values to try.
        single_queries: queries timed one at a time for the per-query latency percentiles.

    Returns:
        kind, param, value, `recall@k`, batch_ms_per_query (one search over all queries),
        single_ms_p50 and single_ms_p99 (one query per search, the online case).
    """
    k = int(exact_items.shape[1])
    settings = [(None, index.config)] if param is None else [(v, _with(index.config, param, v)) for v in values]
    if not settings:
        raise ValueError(f"no values given for {param}")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    rows = []
    try:
        for value, cfg in settings:
            probe = ItemIndex(index.index, cfg)  # shares the FAISS index; sets its search parameter
            t0 = time.perf_counter()
            _, got = probe.search(q, k)
            batch_ms = (time.perf_counter() - t0) * 1000 / len(q)
            single = []
            for row in q[:single_queries]:
                t1 = time.perf_counter()
                probe.search(row[None], k)
                single.append((time.perf_counter() - t1) * 1000)
            rows.append(
                {
                    "kind": cfg.kind,
                    "param": param or "",
                    "value": value,
                    f"recall@{k}": recall_at_k(got, exact_items),
                    "batch_ms_per_query": batch_ms,
                    "single_ms_p50": float(np.percentile(single, 50)),
                    "single_ms_p99": float(np.percentile(single, 99)),
                }
            )
    finally:
        ItemIndex(index.index, index.config)  # the index's own search settings back
    return pl.DataFrame(rows, schema_overrides={"value": pl.Int64})


def _with(config: IndexConfig, param: SearchParam, value: int) -> IndexConfig:
    return replace(config, nprobe=value) if param == "nprobe" else replace(config, ef_search=value)
