"""Metrics on hand-computed 3-user cases."""

from __future__ import annotations

import math

import pytest
import torch

from recsys.eval.metrics import coverage_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k, ranks_from_topk

RANKS = torch.tensor([1, 3, 7])  # three users: target ranked 1st, 3rd and 7th


def test_hit_rate() -> None:
    assert hit_rate_at_k(RANKS, 1) == pytest.approx(1 / 3)
    assert hit_rate_at_k(RANKS, 5) == pytest.approx(2 / 3)
    assert hit_rate_at_k(RANKS, 10) == pytest.approx(1.0)


def test_ndcg() -> None:
    assert ndcg_at_k(RANKS, 5) == pytest.approx((1.0 + 1 / math.log2(4)) / 3)
    assert ndcg_at_k(RANKS, 10) == pytest.approx((1.0 + 0.5 + 1 / math.log2(8)) / 3)


def test_mrr() -> None:
    assert mrr_at_k(RANKS, 5) == pytest.approx((1 + 1 / 3) / 3)
    assert mrr_at_k(RANKS, 10) == pytest.approx((1 + 1 / 3 + 1 / 7) / 3)


def test_ranks_from_topk_and_coverage() -> None:
    topk = torch.tensor([[4, 2, 9], [1, 2, 3], [2, 4, 8]])
    targets = torch.tensor([2, 7, 2])
    assert ranks_from_topk(topk, targets).tolist() == [2, 4, 1]  # absent -> k + 1
    assert coverage_at_k(topk, n_items=10, k=2) == pytest.approx(3 / 10)  # {4, 2} ∪ {1, 2} ∪ {2, 4}
