"""Ranking metrics as pure functions of `ranks` [U]: the 1-based rank of each user's held-out item.

With one held-out item per user, HR@K equals Recall@K, NDCG@K is 1/log2(rank + 1) when the target
is within the top K, and MRR@K is 1/rank within K (0 otherwise). `ranks_from_topk` turns top-k
lists into ranks (k + 1 when the target is absent), so both paths share the same metrics.
"""

from __future__ import annotations

import torch


def ranks_from_topk(topk_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target in its top-k list [U, K]; K + 1 when it is not in the list."""
    k = topk_ids.shape[1]
    hits = topk_ids == targets[:, None]  # [U, K]
    first = torch.where(hits.any(1), hits.float().argmax(1) + 1, torch.full_like(targets, k + 1))
    return first.long()


def hit_rate_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of users whose target is ranked within the top k."""
    return float((ranks <= k).float().mean())


def ndcg_at_k(ranks: torch.Tensor, k: int) -> float:
    """Mean NDCG@k with one relevant item per user (the ideal DCG is 1)."""
    r = ranks.double()
    return float(torch.where(ranks <= k, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).mean())


def mrr_at_k(ranks: torch.Tensor, k: int) -> float:
    """Mean reciprocal rank of the target, counting 0 beyond the top k."""
    r = ranks.double()
    return float(torch.where(ranks <= k, 1.0 / r, torch.zeros_like(r)).mean())


def coverage_at_k(topk_ids: torch.Tensor, n_items: int, k: int) -> float:
    """Share of the catalog (`n_items` real items) that appears in at least one user's top k."""
    return float(torch.unique(topk_ids[:, :k]).numel() / n_items)
