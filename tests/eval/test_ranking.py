"""Batched, chunked full ranking against a slow per-user reference."""

from __future__ import annotations

import torch

from recsys.eval.ranking import rank_targets


def _reference_rank(scores: torch.Tensor, target: int, seen: list[int]) -> int:
    """Rank by sorting every unmasked item: score descending, then item index ascending."""
    masked = scores.clone()
    masked[0] = float("-inf")
    for item in seen:
        if item:
            masked[item] = float("-inf")
    order = sorted(range(len(masked)), key=lambda i: (-float(masked[i]), i))
    return order.index(target) + 1


def test_ranks_match_reference_with_ties_and_chunks() -> None:
    gen = torch.Generator().manual_seed(0)
    users, items, dim = 17, 53, 8
    # integer-valued embeddings make exact score ties common
    user_repr = torch.randint(-2, 3, (users, dim), generator=gen).float()
    item_emb = torch.randint(-2, 3, (items, dim), generator=gen).float()
    targets = torch.randint(1, items, (users,), generator=gen)
    seen = torch.randint(0, items, (users, 5), generator=gen)
    seen[seen == targets[:, None]] = 0  # the target itself is not in the history here
    expected = [_reference_rank(user_repr[u] @ item_emb.T, int(targets[u]), seen[u].tolist()) for u in range(users)]
    for chunk in (7, 53, 1000):  # several chunks, exactly one, larger than the catalog
        res = rank_targets(user_repr, item_emb, targets, seen, topk=5, item_chunk=chunk)
        assert res.ranks.tolist() == expected
        full = user_repr @ item_emb.T
        full[:, 0] = float("-inf")
        full.scatter_(1, seen, float("-inf"))
        assert torch.equal(full.gather(1, res.topk_ids), torch.topk(full, 5).values)


def test_seen_items_are_never_recommended() -> None:
    user_repr = torch.ones(1, 2)
    item_emb = torch.tensor([[9.0, 9.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]])
    res = rank_targets(user_repr, item_emb, torch.tensor([3]), torch.tensor([[1]]), topk=2)
    assert res.topk_ids.tolist() == [[2, 3]]  # padding 0 and seen item 1 are masked
    assert res.ranks.tolist() == [2]
    res = rank_targets(user_repr, item_emb, torch.tensor([3]), None, topk=2)
    assert res.ranks.tolist() == [3]
