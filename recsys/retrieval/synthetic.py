"""Seeded synthetic catalogs (gaussian mixtures) for index tests and the serving benchmark."""

from __future__ import annotations

import numpy as np


def clustered_catalog(
    n_items: int, dim: int, rng: np.random.Generator, *, n_clusters: int = 256, spread: float = 0.6
) -> np.ndarray:
    """Item embeddings [n_items + 1, dim] float32 drawn from a gaussian mixture; row 0 = padding (zeros).

    Args:
        n_items: catalog size (rows 1..n_items).
        dim: embedding dimension.
        rng: the only source of randomness.
        n_clusters: mixture components (item "genres").
        spread: within-cluster standard deviation relative to the unit-scale centres.
    """
    return clustered_catalog_with_labels(n_items, dim, rng, n_clusters=n_clusters, spread=spread)[0]


def clustered_catalog_with_labels(
    n_items: int, dim: int, rng: np.random.Generator, *, n_clusters: int = 256, spread: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """`clustered_catalog` and each row's mixture component [n_items + 1] (row 0 = -1)."""
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n_items)
    emb = np.zeros((n_items + 1, dim), dtype=np.float32)
    emb[1:] = centres[labels] + spread * rng.standard_normal((n_items, dim), dtype=np.float32)
    return emb, np.concatenate([[-1], labels])


def clustered_queries(item_emb: np.ndarray, n_queries: int, rng: np.random.Generator) -> np.ndarray:
    """Queries [n_queries, dim] float32 near random catalog items (like a user's recent taste)."""
    rows = rng.integers(1, item_emb.shape[0], size=n_queries)
    noise = 0.5 * rng.standard_normal((n_queries, item_emb.shape[1]), dtype=np.float32)
    return np.ascontiguousarray(item_emb[rows] + noise, dtype=np.float32)
