"""Batched, chunked full ranking against its slow reference and a per-user sort of every item."""

from __future__ import annotations

import pytest
import torch

from recsys.eval import ranking
from recsys.eval.evaluate import metrics_from_ranks
from recsys.eval.ranking import rank_targets, rank_targets_reference


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


def _tied_case(seed: int, users: int = 23, items: int = 53, dim: int = 6) -> tuple[torch.Tensor, ...]:
    """Integer-valued embeddings (exact score ties everywhere), histories with padding, repeats and,
    for some users, the target itself (a masked target ties with every other masked item)."""
    gen = torch.Generator().manual_seed(seed)
    user_repr = torch.randint(-2, 3, (users, dim), generator=gen).float()
    item_emb = torch.randint(-2, 3, (items, dim), generator=gen).float()
    targets = torch.randint(1, items, (users,), generator=gen)
    seen = torch.randint(0, items, (users, 7), generator=gen)
    seen[::3, 0] = targets[::3]
    seen[1::4, 1:3] = 0
    return user_repr, item_emb, targets, seen


def test_reference_ranks_match_sorting_every_item() -> None:
    user_repr, item_emb, targets, seen = _tied_case(1)
    res = rank_targets_reference(user_repr, item_emb, targets, seen, topk=5)
    scores = user_repr @ item_emb.T
    expected = [_reference_rank(scores[u], int(targets[u]), seen[u].tolist()) for u in range(len(targets))]
    assert res.ranks.tolist() == expected
    unmasked = len(item_emb) - torch.tensor([len(set(s.tolist()) | {0}) for s in seen])
    assert (res.ranks[::3] > unmasked[::3]).all()  # a seen target ranks behind every unmasked item


@pytest.mark.parametrize("block_cells", [53, 5 * 53 + 7, 1 << 21])  # one user per block, uneven blocks, one block
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_fast_path_equals_reference_with_ties(
    monkeypatch: pytest.MonkeyPatch, block_cells: int, exclude_seen: bool
) -> None:
    monkeypatch.setattr(ranking, "CPU_BLOCK_CELLS", block_cells)
    for seed in range(3):
        user_repr, item_emb, targets, seen = _tied_case(seed)
        mask = seen if exclude_seen else None
        ref = rank_targets_reference(user_repr, item_emb, targets, mask, topk=10)
        n_items = len(item_emb) - 1
        for chunk in (53, 1000, 7, 52):  # one chunk (exactly, larger), several (uneven)
            fast = rank_targets(user_repr, item_emb, targets, mask, topk=10, item_chunk=chunk)
            assert torch.equal(fast.ranks, ref.ranks)
            scores = user_repr @ item_emb.T
            assert torch.equal(scores.gather(1, fast.topk_ids), scores.gather(1, ref.topk_ids))  # same values
            fast_metrics = metrics_from_ranks(fast.ranks, fast.topk_ids, n_items, (1, 5, 10), "t")
            ref_metrics = metrics_from_ranks(ref.ranks, ref.topk_ids, n_items, (1, 5, 10), "t")
            if chunk >= len(item_emb):  # one chunk: the same top-k call on the same rows, so the same ids
                assert torch.equal(fast.topk_ids, ref.topk_ids)
                assert fast_metrics == ref_metrics
            else:  # tied top-k items may be chosen differently across chunks: all but coverage agree
                assert {k: v for k, v in fast_metrics.items() if "coverage" not in k} == {
                    k: v for k, v in ref_metrics.items() if "coverage" not in k
                }


def test_fast_path_equals_reference_across_chunks_without_ties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ranking, "CPU_BLOCK_CELLS", 4 * 50)
    gen = torch.Generator().manual_seed(7)
    user_repr, item_emb = torch.randn(31, 8, generator=gen), torch.randn(97, 8, generator=gen)
    targets = torch.randint(1, 97, (31,), generator=gen)
    seen = torch.randint(0, 97, (31, 9), generator=gen)
    ref = rank_targets_reference(user_repr, item_emb, targets, seen, topk=20)
    metrics = metrics_from_ranks(ref.ranks, ref.topk_ids, 96, (5, 10, 20), "test")
    for chunk in (97, 50, 13):
        fast = rank_targets(user_repr, item_emb, targets, seen, topk=20, item_chunk=chunk)
        assert torch.equal(fast.ranks, ref.ranks) and torch.equal(fast.topk_ids, ref.topk_ids)
        assert metrics_from_ranks(fast.ranks, fast.topk_ids, 96, (5, 10, 20), "test") == metrics
