"""Typed batches and the tensors behind them, built once from per-user item sequences.

Sequences are left-padded to a fixed window (0 = pad, the most recent item in the last column).
A batch is trimmed to the columns that hold at least one real item, which saves most of the
work on short-history datasets (Amazon Beauty: mean length 9 in a window of 50).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.utils.data import Dataset

from recsys.data.subsequences import (
    Subsequences,
    build_subsequences,
    gather_windows,
    group_by_target,
    sample_positives,
)


class TrainBatch(NamedTuple):
    items: torch.Tensor  # [B, L + 1] left-padded training window; inputs and targets come from it
    # [B, L'] objectives "cross_subsequence" and "window_views": per row, the history of another
    # subsequence with the same target as the row's anchor prefix (its positive view); else None
    positives: torch.Tensor | None = None
    # [B] objective "window_views": where the row's anchor prefix ends, as the column of its target
    # counted from the window's last column (0 = the last item); None for the other objectives
    anchor_from_end: torch.Tensor | None = None


class EvalBatch(NamedTuple):
    items: torch.Tensor  # [B, L] left-padded history
    targets: torch.Tensor  # [B] held-out item
    seen: torch.Tensor  # [B, S] every item of the full history (0 = pad), masked when ranking


def left_pad(seqs: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Stack the last `length` items of each sequence into a left-padded [len(seqs), length] tensor."""
    out = torch.zeros(len(seqs), length, dtype=torch.long)
    for row, seq in enumerate(seqs):
        tail = list(seq[-length:]) if length else []
        if tail:
            out[row, length - len(tail) :] = torch.tensor(tail, dtype=torch.long)
    return out


def trim_padding(items: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding in every row (keeps at least one column)."""
    real_cols = (items != 0).any(0).nonzero()
    first = int(real_cols[0]) if len(real_cols) else items.shape[1] - 1
    return items[:, first:]


class TrainSequences(Dataset[TrainBatch]):
    """Training windows; indexed by a list of rows (use with a BatchSampler and batch_size=None)."""

    def __init__(self, seqs: Sequence[Sequence[int]], max_len: int) -> None:
        self.items = left_pad(seqs, max_len + 1)  # [U, L + 1]

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> torch.Tensor:
        """[U] real items in each training window (history and targets)."""
        return (self.items != 0).sum(1)

    def __getitem__(self, rows: list[int]) -> TrainBatch:
        return TrainBatch(trim_padding(self.items[rows]))


class CrossSubsequences(Dataset[TrainBatch]):
    """ICSRec's training rows: every (prefix, next item) of every training sequence, with a positive.

    A batch's `items` [B, L + 1] is each subsequence's history followed by its target (the loss
    reads the last column only) and `positives` [B, L'] the history of a subsequence of any user
    with the same target, drawn anew each time with `generator`. Rows are sorted by history length,
    so an unshuffled pass (the epoch-start clustering) trims most of the padding.

    Args:
        seqs: the training sequences (one per user).
        max_len: history window; longer histories keep their most recent items.
        generator: the RNG of the positive sampling.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> None:
        subs = build_subsequences(seqs)
        self.max_len = max_len
        self.subs = subs
        by_length = torch.argsort(self.lengths(), stable=True)
        self.subs = Subsequences(subs.flat, subs.begin[by_length], subs.end[by_length])
        self.groups = group_by_target(self.subs.targets)
        self.generator = generator

    def __len__(self) -> int:
        return len(self.subs.end)

    def lengths(self) -> torch.Tensor:
        """[S] history length of each subsequence, capped at the window."""
        return (self.subs.end - self.subs.begin).clamp(max=self.max_len)

    def __getitem__(self, rows: list[int]) -> TrainBatch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        positives = sample_positives(self.groups, idx, self.generator)
        items = gather_windows(self.subs, idx, self.max_len, with_target=True)  # [B, L + 1]
        views = gather_windows(self.subs, positives, self.max_len, with_target=False)  # [B, L]
        return TrainBatch(trim_padding(items), trim_padding(views))


class WindowViews(TrainSequences):
    """Training windows (next item at every position, as `TrainSequences`), each with a positive view
    of one of its prefixes: ICSRec's objective with whole windows as rows instead of one row per prefix.

    Every prefix of a window is a cross subsequence (grouped by target over all windows, as in
    `CrossSubsequences`); per row and call, one prefix is drawn uniformly as the anchor and a
    subsequence of any user with the same target as its positive, both with `generator`.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> None:
        super().__init__(seqs, max_len)
        self.max_len = max_len
        self.subs = build_subsequences([list(s[-(max_len + 1) :]) for s in seqs])  # the windows' prefixes
        self.groups = group_by_target(self.subs.targets)
        self.n_prefixes = (self.lengths() - 1).clamp(min=0)  # [U] one per target of the window
        self.first_prefix = torch.cumsum(self.n_prefixes, 0) - self.n_prefixes  # [U] its first subsequence id
        self.generator = generator

    def __getitem__(self, rows: list[int]) -> TrainBatch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        n = self.n_prefixes[idx]  # [B]
        if (n == 0).any():
            raise ValueError(f"training windows need >= 2 items, got rows {idx[n == 0].tolist()} with fewer")
        k = (torch.rand(len(idx), generator=self.generator) * n).long().clamp(max=n - 1)  # [B] in [0, n)
        positives = sample_positives(self.groups, self.first_prefix[idx] + k, self.generator)
        views = gather_windows(self.subs, positives, self.max_len, with_target=False)  # [B, L]
        # prefix k of a window targets its item k + 1, which is n - 1 - k columns before its last one
        return TrainBatch(trim_padding(self.items[rows]), trim_padding(views), n - 1 - k)


class EvalSequences(Dataset[EvalBatch]):
    """(history, target) pairs for validation or test; indexed by a list of rows."""

    def __init__(self, histories: Sequence[Sequence[int]], targets: Sequence[int], max_len: int) -> None:
        if len(histories) != len(targets):
            raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
        self.items = left_pad(histories, max_len)  # [U, L]
        self.targets = torch.tensor(list(targets), dtype=torch.long)  # [U]
        self.seen = left_pad(histories, max((len(h) for h in histories), default=1))  # [U, S]

    def __len__(self) -> int:
        return len(self.targets)

    def rows_by_length(self) -> list[int]:
        """Row indices, shortest history first (stable), so consecutive rows trim to similar widths."""
        lengths = (self.items != 0).sum(1)  # [U]
        order: list[int] = torch.argsort(lengths, stable=True).tolist()
        return order

    def __getitem__(self, rows: list[int]) -> EvalBatch:
        seen = self.seen[rows]
        return EvalBatch(trim_padding(self.items[rows]), self.targets[rows], trim_padding(seen))
