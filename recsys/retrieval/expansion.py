"""A large catalog grown from a real trained item table: rotated, jittered copies of it.

The catalog is made of groups of `n_base` items. Group g is the whole real table, each row jittered
by isotropic gaussian noise whose norm is about `noise` times that item's nearest-neighbour distance
in the real table, then turned by a random rotation R_g (Haar-distributed; group 0 is not rotated).
So every group has the real table's geometry (norms, angles, neighbour structure), its items are
never exact copies, and the groups overlap in space the way unrelated parts of a big catalog do: a
query's exact top-k mixes items of its own group with items of other groups that happen to score
high, and more so as the catalog grows. A query is a real user vector turned by the rotation of one
group (`expanded_queries`).

Group g is generated from its own random stream (`seed`, g), so a catalog of n items is exactly the
first n rows of a larger one with the same seed, and can be written group by group into a memory map.
"""

from __future__ import annotations

import math

import numpy as np


def nearest_neighbour_distance(vectors: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance of each row [N, D] to its nearest other row, [N] float32 (brute force)."""
    x = np.asarray(vectors, dtype=np.float32)
    sq = (x * x).sum(1)
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        d2 = sq[start : start + chunk, None] - 2 * block @ x.T + sq[None, :]  # [b, N]
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not itself
        out[start : start + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def group_rotation(seed: int, group: int, dim: int) -> np.ndarray:
    """The rotation [D, D] float64 of one group: identity for group 0, else Haar-random (QR of a gaussian)."""
    if group == 0:
        return np.eye(dim)
    rng = np.random.default_rng([seed, group, 0])
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))  # sign fix: without it QR's output is not Haar-distributed


def expanded_catalog(
    base: np.ndarray,
    n_items: int,
    *,
    noise: float = 0.5,
    seed: int = 0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Item embeddings [n_items + 1, D] float32 grown from a real table; row 0 = padding (zeros).

    Args:
        base: [n_base + 1, D] real item embeddings, row 0 = padding (left out).
        n_items: catalog size (rows 1..n_items); groups of n_base rows, the last one cut short.
        noise: jitter norm relative to each real item's nearest-neighbour distance (0 = exact copies).
        seed: the catalog's seed; group g draws from the stream (seed, g).
        out: optional [n_items + 1, D] float32 array to fill (e.g. an `np.memmap`); allocated if None.
    """
    if noise < 0:
        raise ValueError(f"noise={noise!r} must be >= 0")
    if n_items < 1:
        raise ValueError(f"n_items={n_items!r} must be >= 1")
    real = np.asarray(base, dtype=np.float64)[1:]  # [n_base, D]
    n_base, dim = real.shape
    if n_base < 2:
        raise ValueError(f"base has {n_base} items; expected at least 2 (row 0 is padding)")
    if out is None:
        out = np.zeros((n_items + 1, dim), dtype=np.float32)
    elif out.shape != (n_items + 1, dim) or out.dtype != np.float32:
        raise ValueError(f"out has shape {out.shape} {out.dtype}; expected ({n_items + 1}, {dim}) float32")
    out[0] = 0.0
    # per-coordinate sd so that the jitter's norm is ~ noise * (the item's nearest-neighbour distance)
    sigma = noise * nearest_neighbour_distance(real).astype(np.float64) / math.sqrt(dim)  # [n_base]
    for group in range(math.ceil(n_items / n_base)):
        start = group * n_base
        rows = min(n_base, n_items - start)
        rng = np.random.default_rng([seed, group, 1])
        jitter = sigma[:rows, None] * rng.standard_normal((rows, dim))  # [rows, D]
        rotation = group_rotation(seed, group, dim)
        out[1 + start : 1 + start + rows] = ((real[:rows] + jitter) @ rotation.T).astype(np.float32)
    return out


def expanded_queries(
    queries: np.ndarray, n_items: int, n_base: int, rng: np.random.Generator, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Real query vectors [B, D] turned into the groups of an expanded catalog.

    Each query is rotated by the rotation of a group drawn uniformly among the catalog's groups, so it
    sees that group exactly as the original query sees the real table.

    Returns:
        (queries [B, D] float32, group of each query [B] int64).
    """
    q = np.asarray(queries, dtype=np.float64)
    n_groups = math.ceil(n_items / n_base)
    groups = rng.integers(0, n_groups, size=len(q))
    out = np.empty(q.shape, dtype=np.float32)
    for group in np.unique(groups):
        rows = groups == group
        out[rows] = q[rows] @ group_rotation(seed, int(group), q.shape[1]).T
    return out, groups.astype(np.int64)


def item_group(items: np.ndarray, n_base: int) -> np.ndarray:
    """The group of each item_idx (1-based) of an expanded catalog."""
    return (np.asarray(items, dtype=np.int64) - 1) // n_base
