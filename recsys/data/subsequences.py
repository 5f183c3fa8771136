"""Cross subsequences (ICSRec): every training prefix of every user, grouped by its target item.

A training sequence [i1 .. in] gives the subsequences [i1 .. ik] -> i(k+1) for k = 1 .. n-1 (the
paper's dynamic sliding; histories longer than `max_len` keep their most recent items). Two
subsequences with the same target, of any users, are each other's positives.

Storage is flat, not one padded row per subsequence: the users' sequences are concatenated into
`flat`, and a subsequence is the pair (`begin`, `end`) of flat indices, its history being
`flat[begin:end]` and its target `flat[end]`. Batches are gathered from it without Python loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch


class Subsequences(NamedTuple):
    flat: torch.Tensor  # [T] every training item of every user, user after user
    begin: torch.Tensor  # [S] flat index of the first item of the subsequence's user
    end: torch.Tensor  # [S] flat index of the target; the history is flat[begin:end]

    @property
    def targets(self) -> torch.Tensor:
        return self.flat[self.end]  # [S]


class TargetGroups(NamedTuple):
    """Subsequences grouped by target: `order` lists them group after group (stable in id)."""

    order: torch.Tensor  # [S] subsequence ids sorted by target
    start: torch.Tensor  # [S] per subsequence: where its group starts in `order`
    size: torch.Tensor  # [S] per subsequence: how many subsequences share its target
    rank: torch.Tensor  # [S] per subsequence: its own position inside its group


def build_subsequences(seqs: Sequence[Sequence[int]]) -> Subsequences:
    """All (prefix, next item) pairs of the training sequences, users in order, prefixes by length."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # [U]
    flat = torch.tensor([item for s in seqs for item in s], dtype=torch.long)  # [T]
    first = torch.cumsum(lengths, 0) - lengths  # [U] flat index of each user's first item
    user_first = torch.repeat_interleave(first, lengths)  # [T]
    has_history = torch.arange(len(flat)) != user_first  # every item but a user's first is a target
    return Subsequences(flat, user_first[has_history], has_history.nonzero().squeeze(1))


def group_by_target(targets: torch.Tensor) -> TargetGroups:
    """Group subsequence ids by their target item (`targets` [S])."""
    order = torch.argsort(targets, stable=True)  # [S]
    _, counts = torch.unique_consecutive(targets[order], return_counts=True)  # [G]
    group_start = torch.cumsum(counts, 0) - counts  # [G]
    group = torch.repeat_interleave(torch.arange(len(counts)), counts)  # [S] group of order[j]
    start, size, rank = (torch.empty_like(order) for _ in range(3))
    start[order] = group_start[group]
    size[order] = counts[group]
    rank[order] = torch.arange(len(order)) - group_start[group]
    return TargetGroups(order, start, size, rank)


def sample_positives(groups: TargetGroups, rows: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One positive per subsequence in `rows` [B]: another subsequence with the same target, drawn
    uniformly; a subsequence whose target no other one shares is its own positive."""
    size, rank = groups.size[rows], groups.rank[rows]  # [B]
    others = (size - 1).clamp(min=1)
    draw = (torch.rand(len(rows), generator=generator) * others).long().clamp(max=others - 1)  # [B] in [0, others)
    pick = torch.where(size > 1, draw + (draw >= rank).long(), rank)  # skip the row itself
    return groups.order[groups.start[rows] + pick]


def gather_windows(subs: Subsequences, rows: torch.Tensor, max_len: int, *, with_target: bool) -> torch.Tensor:
    """Left-padded [B, max_len (+1)] windows of subsequences `rows`: the last `max_len` history items,
    followed by the target when `with_target`."""
    begin, end = subs.begin[rows], subs.end[rows]  # [B]
    stop = end + 1 if with_target else end
    width = max_len + int(with_target)
    pos = stop[:, None] - width + torch.arange(width)  # [B, W] flat positions, right-aligned
    keep = pos >= torch.maximum(begin, end - max_len)[:, None]  # inside the user and the history window
    return subs.flat[pos.clamp(min=0)] * keep
