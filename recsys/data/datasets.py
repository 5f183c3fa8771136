"""Typed batches and the tensors behind them, built once from per-user item sequences.

Sequences are left-padded to a fixed window (0 = pad, the most recent item in the last column).
A batch is trimmed to the columns that hold at least one real item, which saves most of the
work on short-history datasets (Amazon Beauty: mean length 9 in a window of 50).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch.utils.data import Dataset


class TrainBatch(NamedTuple):
    items: torch.Tensor  # [B, L + 1] left-padded training rows; the objective builds inputs and targets from them


class ViewBatch(NamedTuple):
    """Training rows, each with a positive view: the history of another sequence that shares a target
    with the row's anchor prefix (contrastive objectives)."""

    items: torch.Tensor  # [B, L + 1] left-padded training rows, as `TrainBatch.items`
    positives: torch.Tensor  # [B, L'] left-padded history of each row's positive view
    # [B] where each row's anchor prefix ends, as the column of its target counted from the last
    # column (0 = the last item); None when every row's anchor is the whole row
    anchor_from_end: torch.Tensor | None = None


class TrainRows(Protocol):
    """A training dataset indexed by a list of rows (a BatchSampler with batch_size=None)."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: list[int]) -> TrainBatch | ViewBatch: ...

    def lengths(self) -> torch.Tensor:
        """[N] real items in each row (length-grouped batching sorts on it)."""
        ...


class TrainRowsFactory(Protocol):
    """Builds an objective's training rows from the users' training sequences."""

    def __call__(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows: ...


class EvalBatch(NamedTuple):
    items: torch.Tensor  # [B, L] left-padded history
    targets: torch.Tensor  # [B] held-out item
    seen: torch.Tensor  # [B, S] every item of the full history (0 = pad), masked when ranking
    rows: torch.Tensor | None = None  # [B] long, each user's row in its split (per-user results); None = unknown


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
    """Training windows, one per user: the last `max_len + 1` items; indexed by a list of rows."""

    def __init__(
        self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator | None = None
    ) -> None:
        del generator  # nothing is drawn: the rows are fixed
        self.items = left_pad(seqs, max_len + 1)  # [U, L + 1]

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> torch.Tensor:
        """[U] real items in each training window (history and targets)."""
        return (self.items != 0).sum(1)

    def __getitem__(self, rows: list[int]) -> TrainBatch:
        return TrainBatch(trim_padding(self.items[rows]))


class RandomCuts(Dataset[TrainBatch]):
    """`cuts` rows per user: at each read, the `max_len` items before a drawn target, and the target.

    Args:
        seqs: the users' training sequences (>= 2 items each).
        max_len: history items per row.
        generator: draws the targets.
        cuts: rows per user and epoch (row r is user r mod U), each cut at its own drawn target.
    """

    def __init__(
        self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator, cuts: int = 1
    ) -> None:
        if cuts < 1:
            raise ValueError(f"cuts must be >= 1, got {cuts}")
        self.n = torch.tensor([len(s) for s in seqs])  # [U]
        if (self.n < 2).any():
            raise ValueError("random cuts need training sequences of >= 2 items")
        self.seqs = left_pad(seqs, int(self.n.max()))  # [U, S], most recent last
        self.max_len = max_len
        self.generator = generator
        self.cuts = cuts

    def __len__(self) -> int:
        return len(self.n) * self.cuts

    def lengths(self) -> torch.Tensor:
        return self.n.clamp(max=self.max_len + 1).repeat(self.cuts)

    def __getitem__(self, rows: list[int]) -> TrainBatch:
        idx = torch.as_tensor(rows, dtype=torch.long) % len(self.n)  # [B] users
        n = self.n[idx]  # [B]
        target = 1 + (torch.rand(len(idx), generator=self.generator) * (n - 1)).long().clamp(max=n - 2)  # in [1, n)
        width = self.seqs.shape[1]
        end = width - n + target  # [B] column of the target in the left-padded row
        cols = end[:, None] - self.max_len + torch.arange(self.max_len + 1)  # [B, L + 1], the target last
        start = (width - n)[:, None]  # first real column
        window = self.seqs[idx[:, None], cols.clamp(min=0)] * (cols >= start)
        return TrainBatch(trim_padding(window))


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
        index = torch.tensor(rows, dtype=torch.long)
        return EvalBatch(trim_padding(self.items[rows]), self.targets[rows], trim_padding(seen), index)
