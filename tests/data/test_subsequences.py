"""Cross-subsequence construction (ICSRec) on a hand-made log, and its Dataset / DataModule wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.data.subsequences import build_subsequences, gather_windows, group_by_target, sample_positives
from recsys.objectives import build_objective
from recsys.objectives.cross_subsequence import CrossSubsequences, WindowViews

# four users' training sequences; the last one is too short to give a subsequence
LOG = [[1, 2, 3], [5, 2, 3], [4, 3], [6]]
# (history, target) of every prefix, users in order, prefixes by length
EXPECTED = [([1], 2), ([1, 2], 3), ([5], 2), ([5, 2], 3), ([4], 3)]


def _unpad(row: torch.Tensor) -> list[int]:
    return [int(i) for i in row if i != 0]


def test_every_prefix_with_its_next_item() -> None:
    subs = build_subsequences(LOG)
    windows = gather_windows(subs, torch.arange(len(subs.end)), max_len=4, with_target=True)  # [S, 5]
    assert [(_unpad(w)[:-1], _unpad(w)[-1]) for w in windows] == EXPECTED
    assert subs.targets.tolist() == [t for _, t in EXPECTED]
    histories = gather_windows(subs, torch.arange(len(subs.end)), max_len=4, with_target=False)  # [S, 4]
    assert [_unpad(h) for h in histories] == [h for h, _ in EXPECTED]
    assert histories[0].tolist() == [0, 0, 0, 1]  # left-padded


def test_long_histories_keep_their_most_recent_items() -> None:
    subs = build_subsequences([[1, 2, 3, 4, 5]])
    windows = gather_windows(subs, torch.arange(4), max_len=2, with_target=True)
    assert windows.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]


def test_grouped_by_target_across_users() -> None:
    groups = group_by_target(build_subsequences(LOG).targets)
    members = {
        t: sorted(groups.order[groups.start[i] : groups.start[i] + groups.size[i]].tolist())
        for i, (_, t) in enumerate(EXPECTED)
    }
    assert members == {2: [0, 2], 3: [1, 3, 4]}
    assert groups.size.tolist() == [2, 3, 2, 3, 3]


def test_positive_is_another_subsequence_with_the_same_target() -> None:
    subs = build_subsequences([*LOG, [7, 8]])  # target 8 is shared by no one
    groups = group_by_target(subs.targets)
    rows = torch.arange(len(subs.end)).repeat(200)
    positives = sample_positives(groups, rows, torch.Generator().manual_seed(0))
    assert torch.equal(subs.targets[positives], subs.targets[rows])
    alone = subs.targets[rows] == 8
    assert torch.equal(positives[alone], rows[alone])  # no other subsequence: itself
    assert not (positives[~alone] == rows[~alone]).any()
    drawn = {(int(r), int(p)) for r, p in zip(rows, positives, strict=True)}
    assert {p for r, p in drawn if r == 1} == {3, 4}  # every other member gets drawn


def test_positive_sampling_is_seeded() -> None:
    groups = group_by_target(build_subsequences(LOG).targets)
    rows = torch.arange(5).repeat(20)
    first = sample_positives(groups, rows, torch.Generator().manual_seed(3))
    again = sample_positives(groups, rows, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_dataset_batch_is_history_plus_target_with_a_positive_view() -> None:
    data = CrossSubsequences(LOG, max_len=4, generator=torch.Generator().manual_seed(0))
    assert len(data) == len(EXPECTED)
    lengths = (data.subs.end - data.subs.begin).tolist()
    assert lengths == sorted(lengths)  # rows by history length, for the unshuffled pass
    batch = data[list(range(len(data)))]
    assert batch.positives is not None
    pairs = {(tuple(_unpad(w)[:-1]), _unpad(w)[-1]) for w in batch.items}
    assert pairs == {(tuple(h), t) for h, t in EXPECTED}
    by_history = {tuple(h): t for h, t in EXPECTED}
    for window, view in zip(batch.items, batch.positives, strict=True):
        assert by_history[tuple(_unpad(view))] == _unpad(window)[-1]  # the view leads to the same target
    assert batch.items.shape[1] == 3  # trimmed: longest history 2 + target


def test_datamodule_picks_cross_subsequences_for_that_objective(planted_dataset: Path) -> None:
    kw = {"max_len": 7, "batch_size": 32, "eval_batch_size": 100, "seed": 0}
    dm = SequenceDataModule(planted_dataset / "processed", rows=build_objective("cross_subsequence").train_rows, **kw)
    dm.setup()
    plain = SequenceDataModule(planted_dataset / "processed", **(kw | {"max_len": 20}))  # untruncated windows
    plain.setup()
    assert isinstance(dm.train_set, CrossSubsequences)
    w = plain.train_set.items
    n_windows = int(((w[:, 1:] != 0) & (w[:, :-1] != 0)).sum())  # one subsequence per next-item target
    assert len(dm.train_set) == n_windows
    assert sum(len(b.items) for b in dm.ordered_train_dataloader()) == n_windows
    assert sum(len(b.items) for b in dm.train_dataloader()) == n_windows


def test_window_views_anchor_a_random_prefix_of_each_window_with_a_positive() -> None:
    data = WindowViews(LOG[:3], max_len=4, generator=torch.Generator().manual_seed(0))
    by_history = {tuple(h): t for h, t in EXPECTED}
    anchors = set()
    for _ in range(50):
        batch = data[[0, 1, 2]]
        assert batch.positives is not None and batch.anchor_from_end is not None
        assert [_unpad(w) for w in batch.items] == LOG[:3]  # whole windows, as for next-item training
        width = batch.items.shape[1]
        for window, view, from_end in zip(batch.items, batch.positives, batch.anchor_from_end, strict=True):
            col = width - 1 - int(from_end)  # the anchor prefix's target
            prefix, target = _unpad(window[:col]), int(window[col])
            assert prefix and by_history[tuple(prefix)] == target  # a real prefix of this window
            assert by_history[tuple(_unpad(view))] == target  # its view leads to the same target
            anchors.add((tuple(prefix), target))
    assert anchors == {(tuple(h), t) for h, t in EXPECTED}  # every prefix gets drawn


def test_window_views_refuse_a_window_without_a_target() -> None:
    data = WindowViews(LOG, max_len=4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"\[3\]"):
        data[[0, 3]]


def test_datamodule_picks_window_views_for_that_objective(planted_dataset: Path) -> None:
    kw = {"max_len": 7, "batch_size": 32, "eval_batch_size": 100, "seed": 0}
    dm = SequenceDataModule(planted_dataset / "processed", rows=build_objective("window_views").train_rows, **kw)
    dm.setup()
    plain = SequenceDataModule(planted_dataset / "processed", **kw)
    plain.setup()
    assert isinstance(dm.train_set, WindowViews)
    assert torch.equal(dm.train_set.items, plain.train_set.items)  # the same rows as next-item training
    assert len(dm.train_set.subs.end) == int(dm.train_set.n_prefixes.sum())
