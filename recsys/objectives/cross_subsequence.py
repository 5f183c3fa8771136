"""Cross-subsequence objectives (ICSRec): next-item training plus contrastive terms on positive views.

Two subsequences of any users with the same target are each other's positives
(`recsys.data.subsequences`). The rows come in two schemes:

- `CrossSubsequence`: every prefix of every training sequence is a row predicting only its next
  item (the paper's dynamic sliding), with a positive view of the prefix;
- `WindowViewsObjective`: one window per user, every position predicting its next item (as
  next-item training), with a positive view of one prefix drawn per row and call.

The contrastive terms themselves belong to the model (`ContrastiveModel`): it owns its intents,
refit at the start of every epoch over an unshuffled pass of the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

from recsys.data.datasets import TrainRows, TrainSequences, ViewBatch, trim_padding
from recsys.data.subsequences import (
    Subsequences,
    build_subsequences,
    gather_windows,
    group_by_target,
    sample_positives,
)
from recsys.models.base import SequentialRecommender
from recsys.objectives.base import Batch, Objective

CONTRAST = "contrast"  # the name of the contrastive term in `LossParts.terms`


@runtime_checkable
class ContrastiveModel(Protocol):
    """A model with contrastive terms over positive views (and, optionally, state refit per epoch)."""

    def contrastive_loss(self, batch: ViewBatch, hidden: torch.Tensor) -> torch.Tensor | None:
        """The weighted contrastive terms of a batch given the `hidden` [B, L, D] of its inputs;
        None when they are switched off (e.g. before a warm-up starts)."""
        ...

    def refit(self, batches: Iterable[ViewBatch], epoch: int) -> None:
        """Refit the model's per-epoch state (ICSRec: its intents) before training epoch `epoch`."""
        ...


class CrossSubsequence(Objective):
    """One row per prefix, predicting only the item after it, plus the model's contrastive terms."""

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        return CrossSubsequences(seqs, max_len, generator=generator)

    def inputs_and_targets(self, model: SequentialRecommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        del model
        window = batch.items
        inputs, targets = window[:, :-1], torch.zeros_like(window[:, 1:])
        targets[:, -1] = window[:, -1]  # a row is one prefix and its next item
        return inputs, targets

    def extra_terms(self, model: SequentialRecommender, batch: Batch, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        if not isinstance(batch, ViewBatch):
            raise TypeError(f"contrastive objectives train on ViewBatch rows, got {type(batch).__name__}")
        term = _contrastive(model).contrastive_loss(batch, hidden)
        return {} if term is None else {CONTRAST: term}

    def on_epoch_start(
        self,
        model: SequentialRecommender,
        batches: Iterable[Batch],
        epoch: int,
        *,
        sequences: Sequence[Sequence[int]] = (),
    ) -> None:
        del sequences
        _contrastive(model).refit(batches, epoch)  # type: ignore[arg-type]  # our rows are ViewBatches

    def expected_targets_per_batch(
        self, model: SequentialRecommender, rows: TrainRows, batch_size: int
    ) -> float | None:
        del model, rows, batch_size
        return None  # one target per row: nothing to reweight


class WindowViewsObjective(CrossSubsequence):
    """One window per user, next item at every position, plus contrastive terms on one prefix per row."""

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        return WindowViews(seqs, max_len, generator=generator)

    def inputs_and_targets(self, model: SequentialRecommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return Objective.inputs_and_targets(self, model, batch)

    def expected_targets_per_batch(
        self, model: SequentialRecommender, rows: TrainRows, batch_size: int
    ) -> float | None:
        return Objective.expected_targets_per_batch(self, model, rows, batch_size)


def _contrastive(model: SequentialRecommender) -> ContrastiveModel:
    if not isinstance(model, ContrastiveModel):
        raise TypeError(
            f"cross-subsequence objectives need a model with contrastive_loss() and refit(); "
            f"{type(model).__name__} has not"
        )
    return model


class CrossSubsequences(Dataset[ViewBatch]):
    """Every (prefix, next item) of every training sequence as a row, with a positive view.

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

    def __getitem__(self, rows: list[int]) -> ViewBatch:
        idx = torch.as_tensor(rows, dtype=torch.long)
        positives = sample_positives(self.groups, idx, self.generator)
        items = gather_windows(self.subs, idx, self.max_len, with_target=True)  # [B, L + 1]
        views = gather_windows(self.subs, positives, self.max_len, with_target=False)  # [B, L]
        return ViewBatch(trim_padding(items), trim_padding(views))


class WindowViews(TrainSequences):
    """Training windows (next item at every position, as `TrainSequences`), each with a positive view
    of one of its prefixes: the cross-subsequence objective with whole windows as rows.

    Every prefix of a window is a cross subsequence (grouped by target over all windows, as in
    `CrossSubsequences`); per row and call, one prefix is drawn uniformly as the anchor and a
    subsequence of any user with the same target as its positive, both with `generator`.
    """

    def __init__(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> None:
        super().__init__(seqs, max_len, generator=generator)
        self.max_len = max_len
        self.subs = build_subsequences([list(s[-(max_len + 1) :]) for s in seqs])  # the windows' prefixes
        self.groups = group_by_target(self.subs.targets)
        self.n_prefixes = (self.lengths() - 1).clamp(min=0)  # [U] one per target of the window
        self.first_prefix = torch.cumsum(self.n_prefixes, 0) - self.n_prefixes  # [U] its first subsequence id
        self.generator = generator

    def __getitem__(self, rows: list[int]) -> ViewBatch:  # type: ignore[override]
        idx = torch.as_tensor(rows, dtype=torch.long)
        n = self.n_prefixes[idx]  # [B]
        if (n == 0).any():
            raise ValueError(f"training windows need >= 2 items, got rows {idx[n == 0].tolist()} with fewer")
        k = (torch.rand(len(idx), generator=self.generator) * n).long().clamp(max=n - 1)  # [B] in [0, n)
        positives = sample_positives(self.groups, self.first_prefix[idx] + k, self.generator)
        views = gather_windows(self.subs, positives, self.max_len, with_target=False)  # [B, L]
        # prefix k of a window targets its item k + 1, which is n - 1 - k columns before its last one
        return ViewBatch(trim_padding(self.items[rows]), trim_padding(views), n - 1 - k)
