"""Full-ranking evaluation of a model over (history, target) batches, with its protocol recorded."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from recsys.data.datasets import EvalBatch
from recsys.eval.metrics import coverage_at_k, hit_rate_at_k, mrr_at_k, ndcg_at_k
from recsys.eval.ranking import rank_targets, rank_targets_reference
from recsys.models.base import SequentialRecommender


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]  # e.g. {"test/ndcg@10": 0.053, ...}
    protocol: dict[str, Any]  # split, full_ranking, exclude_seen, ks, n_users, tie policy
    n_users: int
    # per user, in the order the batches came (what per-user results are built from; see
    # recsys.eval.per_user): 1-based full-ranking rank of the target, top max(ks) items, and each
    # user's row in its split (None when the batches did not say)
    ranks: torch.Tensor | None = None  # [U] long
    topk_ids: torch.Tensor | None = None  # [U, max(ks)] long
    rows: torch.Tensor | None = None  # [U] long


def metrics_from_ranks(
    ranks: torch.Tensor, topk_ids: torch.Tensor, n_items: int, ks: Sequence[int], prefix: str
) -> dict[str, float]:
    """HR, NDCG, MRR and catalog coverage at each k, keyed like `val/ndcg@10`."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"{prefix}/hr@{k}"] = hit_rate_at_k(ranks, k)
        out[f"{prefix}/ndcg@{k}"] = ndcg_at_k(ranks, k)
        out[f"{prefix}/mrr@{k}"] = mrr_at_k(ranks, k)
        out[f"{prefix}/coverage@{k}"] = coverage_at_k(topk_ids, n_items, k)
    return out


@torch.inference_mode()
def rank_batch(
    model: SequentialRecommender,
    batch: EvalBatch,
    *,
    exclude_seen: bool,
    topk: int,
    item_chunk: int,
    reference: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks [B] and top-k ids [B, topk] of one evaluation batch (on the model's device).

    `reference` ranks with `rank_targets_reference`, the slow definition the fast path is checked against.
    """
    device = next(itertools.chain(model.parameters(), model.buffers())).device  # a fixed table has no parameters
    items = batch.items.to(device)
    user_repr = model.sequence_representation(items, items != 0)  # [B, D]
    seen = batch.seen.to(device) if exclude_seen else None
    targets, item_emb = batch.targets.to(device), model.item_embeddings()
    if reference:
        res = rank_targets_reference(user_repr, item_emb, targets, seen, topk=topk)
    else:
        res = rank_targets(user_repr, item_emb, targets, seen, topk=topk, item_chunk=item_chunk)
    return res.ranks, res.topk_ids


def without_newest(batch: EvalBatch) -> EvalBatch:
    """The batch with each history's most recent item removed, an ablation of how much a model
    leans on it; the removed item stays in `seen`, so the ranked candidates do not change."""
    lengths = (batch.items != 0).sum(1)
    if bool((lengths < 2).any()):
        raise ValueError(f"dropping the newest item needs histories of at least 2 items, got {int(lengths.min())}")
    items = torch.cat([torch.zeros_like(batch.items[:, :1]), batch.items[:, :-1]], dim=1)
    return EvalBatch(items, batch.targets, batch.seen, batch.rows)


def evaluate(
    model: SequentialRecommender,
    batches: Iterable[EvalBatch],
    *,
    split: str,
    ks: Sequence[int] = (5, 10, 20),
    exclude_seen: bool = True,
    item_chunk: int = 262_144,
    split_protocol: Mapping[str, Any] | None = None,
    reference: bool = False,
) -> EvalResult:
    """Rank every target against the whole catalog and summarise the metrics.

    Args:
        model: any `SequentialRecommender` (put in eval mode here).
        batches: evaluation batches for one split.
        split: "val" or "test"; the metric-key prefix.
        ks: cut-offs.
        exclude_seen: mask the items of each user's history.
        item_chunk: catalog items scored at once.
        split_protocol: how the users' targets were held out (`SequenceDataModule.protocol`);
            leave-one-out when not given.
        reference: rank with the slow reference (`rank_targets_reference`), to check the fast path.
    """
    was_training = model.training
    model.eval()
    ranks, topk, rows = [], [], []
    for batch in batches:
        r, t = rank_batch(
            model, batch, exclude_seen=exclude_seen, topk=max(ks), item_chunk=item_chunk, reference=reference
        )
        ranks.append(r.cpu())
        topk.append(t.cpu())
        if batch.rows is not None:
            rows.append(batch.rows.cpu())
    model.train(was_training)
    if not ranks:
        raise ValueError(f"no users to evaluate in split {split!r}")
    all_ranks, all_topk = torch.cat(ranks), torch.cat(topk)
    n_items = model.item_embeddings().shape[0] - 1
    protocol = {
        **(split_protocol or {"split": "leave_one_out"}),
        "stage": split,
        "full_ranking": True,
        "exclude_seen": exclude_seen,
        "ks": list(ks),
        "ties": "broken by item index (lower first)",
        "n_users": len(all_ranks),
        "n_items": n_items,
    }
    metrics = metrics_from_ranks(all_ranks, all_topk, n_items, ks, split)
    all_rows = torch.cat(rows) if len(rows) == len(ranks) else None  # every batch said, or none counts
    return EvalResult(
        metrics=metrics, protocol=protocol, n_users=len(all_ranks), ranks=all_ranks, topk_ids=all_topk, rows=all_rows
    )
