"""Two-stage metrics: the final top-k of retrieval + ranker, over all users, a target that stage 1 did
not retrieve counting as a miss (the leaderboard's protocol: every user, the full catalog, history masked).

A ranker's final score is its logit plus `stage1_weight` x the standardised stage-1 score
(`recsys.models.target_attention_ranker`); `choose_stage1_weight` picks that weight on validation lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

from recsys.data.candidate_lists import CandidateListBatch
from recsys.eval.metrics import hit_rate_at_k, ndcg_at_k
from recsys.models.ranker import Ranker
from recsys.nn.target_attention import standardized

# candidate weights of the standardised stage-1 score; the last is large enough to keep stage 1's order
# and let the ranker break its ties only
STAGE1_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 1e4)
LONG_HISTORY = 200  # users with at least this many events: DARE's home ground, reported apart


class ListScores(NamedTuple):
    """What the metrics of a split are computed from, one row per list."""

    scores: torch.Tensor  # [U, N] the model's scores (at the weight it was scored with)
    stage1: torch.Tensor  # [U, N] standardised stage-1 scores
    target_pos: torch.Tensor  # [U] long, -1 = not retrieved
    events: torch.Tensor  # [U] long


def list_ranks(scores: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """1-based rank [U] of each target in its list by `scores` [U, N] (ties: the earlier list position
    first, i.e. stage 1's order); N + 1 (beyond any cut-off) when the target is not in the list."""
    n = scores.shape[1]
    pos = target_pos.clamp(min=0)
    target = scores.gather(1, pos[:, None])  # [U, 1]
    ids = torch.arange(n, device=scores.device)
    ahead = (scores > target) | ((scores == target) & (ids[None, :] < pos[:, None]))
    return torch.where(target_pos >= 0, ahead.sum(1) + 1, torch.full_like(target_pos, n + 1))


def list_ranks_reference(scores: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """The slow twin of `list_ranks`: a stable descending sort per list."""
    out = []
    for row, pos in zip(scores, target_pos.tolist(), strict=True):
        order = torch.sort(row, descending=True, stable=True).indices.tolist()
        out.append(order.index(pos) + 1 if pos >= 0 else len(order) + 1)
    return torch.tensor(out, dtype=torch.long)


@torch.inference_mode()
def score_lists(model: Ranker, batches: Iterable[CandidateListBatch]) -> ListScores:
    """The model's scores of every list of `batches` (in eval mode), with what the metrics need."""
    was_training = model.training
    model.eval()
    parts = []
    for b in batches:
        scores = model.score(b.items, b.candidates, b.stage1).float()
        parts.append(ListScores(scores, standardized(b.stage1.float()), b.target_pos, b.events))
    model.train(was_training)
    return ListScores(*(torch.cat(ts) for ts in zip(*parts, strict=True)))


def choose_stage1_weight(lists: ListScores, k: int, weights: Sequence[float] = STAGE1_WEIGHTS) -> tuple[float, float]:
    """The weight of the standardised stage-1 score (added to `lists.scores`) with the best NDCG@k over
    `lists`, and that NDCG; the smaller weight wins a tie."""
    best = max(
        ((ndcg_at_k(list_ranks(lists.scores + w * lists.stage1, lists.target_pos), k), -w) for w in weights),
    )
    return -best[1], best[0]


def two_stage_metrics(lists: ListScores, ks: Sequence[int], prefix: str) -> dict[str, float]:
    """HR and NDCG at each k over all users (`prefix`/...) and over users with >= `LONG_HISTORY` events
    (`prefix`_long/...), the oracle (recall@N: stage 1 retrieved the target) and HR@10 inside the list
    (users whose target was retrieved)."""
    ranks = list_ranks(lists.scores, lists.target_pos)
    n = lists.scores.shape[1]
    retrieved = lists.target_pos >= 0
    out: dict[str, float] = {}
    for name, keep in ((prefix, torch.ones_like(retrieved)), (f"{prefix}_long", lists.events >= LONG_HISTORY)):
        if not bool(keep.any()):
            continue
        for k in ks:
            out[f"{name}/hr@{k}"] = hit_rate_at_k(ranks[keep], k)
            out[f"{name}/ndcg@{k}"] = ndcg_at_k(ranks[keep], k)
        out[f"{name}/recall@{n}"] = float(retrieved[keep].float().mean())
        out[f"{name}/users"] = float(keep.sum())
    if bool(retrieved.any()):
        out[f"{prefix}/hr@10_in_list"] = hit_rate_at_k(ranks[retrieved], 10)
    return out


def stage1_only(lists: ListScores) -> ListScores:
    """`lists` scored by stage 1 alone (its own order)."""
    return lists._replace(scores=lists.stage1)
