"""The expanded catalog against direct computations: isometric groups, prefix property, noise scale."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.retrieval.expansion import (
    expanded_catalog,
    expanded_queries,
    group_rotation,
    item_group,
    nearest_neighbour_distance,
)
from recsys.retrieval.index import exact_search

DIM = 8
N_BASE = 37  # odd, so the last group is cut short


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    emb = np.zeros((N_BASE + 1, DIM), dtype=np.float32)
    emb[1:] = np.random.default_rng(0).standard_normal((N_BASE, DIM))
    return emb


def test_nearest_neighbour_distance_matches_a_double_loop(base: np.ndarray) -> None:
    x = base[1:].astype(np.float64)
    slow = [min(np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if j != i) for i in range(len(x))]
    np.testing.assert_allclose(nearest_neighbour_distance(base[1:], chunk=5), slow, rtol=1e-4)


def test_rotations_are_orthogonal_and_group_zero_is_identity() -> None:
    np.testing.assert_array_equal(group_rotation(3, 0, DIM), np.eye(DIM))
    r = group_rotation(3, 2, DIM)
    np.testing.assert_allclose(r @ r.T, np.eye(DIM), atol=1e-12)
    assert not np.allclose(r, group_rotation(3, 5, DIM))


def test_without_noise_every_group_is_the_real_table_rotated(base: np.ndarray) -> None:
    n_items = 3 * N_BASE + 5
    emb = expanded_catalog(base, n_items, noise=0.0, seed=7)
    assert emb.shape == (n_items + 1, DIM) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], 0.0)
    real = base[1:].astype(np.float64)
    for group in range(4):
        rows = emb[1 + group * N_BASE : 1 + (group + 1) * N_BASE].astype(np.float64)
        expected = real[: len(rows)] @ group_rotation(7, group, DIM).T  # row by row, directly
        np.testing.assert_allclose(rows, expected, atol=1e-5)
        np.testing.assert_allclose(rows @ rows.T, real[: len(rows)] @ real[: len(rows)].T, atol=1e-4)  # isometric
    np.testing.assert_array_equal(item_group(np.array([1, N_BASE, N_BASE + 1, n_items]), N_BASE), [0, 0, 1, 3])


def test_a_small_catalog_is_the_prefix_of_a_larger_one(base: np.ndarray) -> None:
    big = expanded_catalog(base, 5 * N_BASE, noise=0.5, seed=1)
    small = expanded_catalog(base, 2 * N_BASE + 3, noise=0.5, seed=1)
    np.testing.assert_array_equal(small, big[: len(small)])
    out = np.zeros_like(small)
    assert expanded_catalog(base, 2 * N_BASE + 3, noise=0.5, seed=1, out=out) is out
    np.testing.assert_array_equal(out, small)


def test_jitter_norm_is_noise_times_the_nearest_neighbour_distance() -> None:
    rng = np.random.default_rng(2)
    base = np.zeros((201, 64), dtype=np.float32)
    base[1:] = rng.standard_normal((200, 64))
    emb = expanded_catalog(base, 200 * 20, noise=0.5, seed=0)
    nn = nearest_neighbour_distance(base[1:]).astype(np.float64)
    ratios = []
    for group in range(20):
        rows = emb[1 + group * 200 : 1 + (group + 1) * 200].astype(np.float64) @ group_rotation(0, group, 64)
        ratios.append(np.linalg.norm(rows - base[1:], axis=1) / nn)
    assert np.mean(ratios) == pytest.approx(0.5, rel=0.03)


def test_a_rotated_query_sees_its_group_as_the_original_sees_the_real_table(base: np.ndarray) -> None:
    n_items = 4 * N_BASE
    emb = expanded_catalog(base, n_items, noise=0.0, seed=4)
    queries = np.random.default_rng(5).standard_normal((40, DIM)).astype(np.float32)
    turned, groups = expanded_queries(queries, n_items, N_BASE, np.random.default_rng(6), seed=4)
    assert set(groups.tolist()) == set(range(4))
    for q, t, g in zip(queries, turned, groups, strict=True):
        group_rows = emb[1 + g * N_BASE : 1 + (g + 1) * N_BASE]
        np.testing.assert_allclose(group_rows @ t, base[1:] @ q, atol=1e-4)
    _, base_top = exact_search(base, queries, 5)
    own = np.concatenate([np.zeros((1, DIM), np.float32), emb[1 : 1 + N_BASE]])
    _, own_top = exact_search(own, turned[groups == 0], 5)  # group 0 is the table itself
    np.testing.assert_array_equal(own_top.numpy(), base_top.numpy()[groups == 0])


def test_bad_arguments_name_the_field(base: np.ndarray) -> None:
    with pytest.raises(ValueError, match="noise"):
        expanded_catalog(base, 10, noise=-1.0)
    with pytest.raises(ValueError, match="n_items"):
        expanded_catalog(base, 0)
    with pytest.raises(ValueError, match="out"):
        expanded_catalog(base, 10, out=np.zeros((3, DIM), np.float32))
