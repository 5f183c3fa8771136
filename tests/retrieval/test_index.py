"""FAISS indexes against the torch brute-force reference: tie-aware equality, recall, padding, save/load."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.retrieval.index import (
    INDEX_KINDS,
    IndexConfig,
    build_index,
    exact_search,
    load_index,
    recall_at_k,
    save_index,
)
from recsys.retrieval.synthetic import clustered_catalog, clustered_queries

log = logging.getLogger(__name__)

# small parameters so every kind builds in well under a second on a few thousand items
SMALL = {
    "flat": IndexConfig(kind="flat"),
    "ivf_flat": IndexConfig(kind="ivf_flat", nlist=16, nprobe=16),
    "ivf_pq": IndexConfig(kind="ivf_pq", nlist=16, nprobe=16, pq_m=8, refine_factor=8),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=64, ef_search=128),
}


def assert_topk_equal_tie_aware(
    item_emb: np.ndarray,
    queries: np.ndarray,
    scores: np.ndarray,
    items: np.ndarray,
    ref_scores: np.ndarray,
    atol: float,
) -> None:
    """`items` is a valid top-k: scores match the reference rank by rank, every item strictly above the
    k-th score is present, and items in the tie band at the k-th score really score that much."""
    np.testing.assert_allclose(scores, ref_scores, atol=atol)
    true = queries @ item_emb.T  # [B, N + 1]
    true[:, 0] = -np.inf
    for row in range(len(queries)):
        np.testing.assert_allclose(true[row, items[row]], scores[row], atol=atol)  # returned scores are real
        kth = ref_scores[row, -1]
        must = set(np.flatnonzero(true[row] > kth + atol).tolist())
        assert must <= set(items[row].tolist()), f"row {row}: missing items above the k-th score"
        assert len(set(items[row].tolist())) == items.shape[1], f"row {row}: duplicate items"


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="kind"):
        IndexConfig(kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe"):
        IndexConfig(nprobe=0)
    with pytest.raises(ValueError, match="nlist"):
        IndexConfig(nlist=0)
    with pytest.raises(ValueError, match="pq_nbits"):
        IndexConfig(pq_nbits=0)
    with pytest.raises(ValueError, match="pq_m"):
        build_index(np.ones((11, 10), dtype=np.float32), IndexConfig(kind="ivf_pq", nlist=2, pq_m=3))


def test_recall_hand_computed() -> None:
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 2, 9]])) == pytest.approx(2 / 3)
    assert recall_at_k(np.array([[1, 2], [5, 6]]), np.array([[1, 2], [7, 8]])) == pytest.approx(0.5)


def test_flat_equals_torch_bruteforce_with_ties() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 16)).astype(np.float32)
    # every vector appears 4 times: each query has 4-way ties at every score
    emb = np.concatenate([np.zeros((1, 16), np.float32), np.repeat(base, 4, axis=0)])
    queries = rng.standard_normal((32, 16)).astype(np.float32)
    for k in (1, 6, 10, 200):
        ref_scores, ref_items = exact_search(emb, queries, k)
        scores, items = build_index(emb, IndexConfig(kind="flat")).search(queries, k)
        assert items.shape == ref_items.shape == (32, min(k, 200))
        assert_topk_equal_tie_aware(emb, queries, scores, items, ref_scores.numpy(), atol=1e-4)


def test_exact_search_chunks_and_exclusion() -> None:
    rng = np.random.default_rng(1)
    emb = clustered_catalog(500, 8, rng, n_clusters=5)
    queries = clustered_queries(emb, 40, rng)
    exclude = torch.from_numpy(rng.random((40, 501)) < 0.3)
    full_s, full_i = exact_search(emb, queries, 20, exclude=exclude)
    chunk_s, chunk_i = exact_search(emb, queries, 20, exclude=exclude, chunk_elements=501 * 3)
    torch.testing.assert_close(chunk_s, full_s)
    assert torch.equal(chunk_i, full_i)
    assert not exclude.gather(1, full_i).any()
    assert (full_i > 0).all()


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_padding_row_is_never_returned(kind: str) -> None:
    rng = np.random.default_rng(2)
    emb = clustered_catalog(2000, 16, rng, n_clusters=8)
    emb[0] = 100.0  # would win every query if it were indexed
    queries = np.full((5, 16), 1.0, dtype=np.float32)
    index = build_index(emb, SMALL[kind])
    assert index.n_items == 2000
    _, items = index.search(queries, 50)
    assert items.min() >= 1 and items.max() <= 2000


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    emb = clustered_catalog(3000, 16, rng, n_clusters=8)
    queries = clustered_queries(emb, 20, rng)
    index = build_index(emb, SMALL[kind])
    save_index(index, tmp_path / "index.faiss")
    loaded = load_index(tmp_path / "index.faiss", SMALL[kind])
    s1, i1 = index.search(queries, 25)
    s2, i2 = loaded.search(queries, 25)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)


def test_load_missing_index_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FAISS index not found"):
        load_index(tmp_path / "nope.faiss", IndexConfig())


@pytest.fixture(scope="module")
def catalog_100k() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    emb = clustered_catalog(100_000, 64, rng)
    queries = clustered_queries(emb, 300, rng)
    ref_scores, ref_items = exact_search(emb, queries, 100)
    return emb, queries, ref_scores.numpy(), ref_items.numpy()


def test_flat_equals_bruteforce_100k(catalog_100k: tuple[np.ndarray, ...]) -> None:
    emb, queries, ref_scores, _ = catalog_100k
    scores, items = build_index(emb, IndexConfig(kind="flat")).search(queries, 100)
    assert_topk_equal_tie_aware(emb, queries, scores, items, ref_scores, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq", "hnsw"])
def test_approximate_recall_at_default_settings_100k(
    kind: str, catalog_100k: tuple[np.ndarray, ...], record_property: pytest.RecordProperty
) -> None:
    emb, queries, _, ref_items = catalog_100k
    _, items = build_index(emb, IndexConfig(kind=kind)).search(queries, 100)  # type: ignore[arg-type]
    r10 = recall_at_k(items[:, :10], ref_items[:, :10])
    r100 = recall_at_k(items, ref_items)
    record_property("recall@10", r10)
    record_property("recall@100", r100)
    log.warning("%s on 100k clustered items: recall@10=%.4f recall@100=%.4f", kind, r10, r100)
    assert r10 >= 0.95, f"{kind}: recall@10={r10:.4f}"
    assert r100 >= 0.95, f"{kind}: recall@100={r100:.4f}"
