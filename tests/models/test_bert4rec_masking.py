"""BERT4Rec's training masks: which positions become the mask token, and their targets."""

from __future__ import annotations

import pytest
import torch

from recsys.registry import build_model

N_ITEMS = 50
BASE = {"hidden": 8, "n_heads": 2, "max_len": 12, "dropout": 0.0, "attn_dropout": 0.0, "crop_prob": 0.0}  # masks alone


def _masks(seed: int = 0, **params: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model = build_model("bert4rec", {**BASE, **params}, N_ITEMS)
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 13, (400,), generator=gen)
    items = torch.randint(1, N_ITEMS + 1, (400, 12), generator=gen)
    items[torch.arange(12)[None, :] < (12 - lengths)[:, None]] = 0  # left padding
    torch.manual_seed(seed)
    inputs, targets = model.mask_items(items)
    return items, inputs, targets


@pytest.mark.parametrize("params", [{}, {"last_item_share": 0.0}, {"mask_last": True}, {"last_item_share": 1.0}])
def test_targets_are_the_masked_items_and_every_row_has_one(params: dict[str, object]) -> None:
    items, inputs, targets = _masks(**params)
    masked = inputs == N_ITEMS + 1
    assert torch.equal(targets != 0, masked)  # a target exactly where the input is the mask token
    assert torch.equal(targets[masked], items[masked])  # ... and it is the item that was there
    assert torch.equal(inputs[~masked], items[~masked])  # every other position is unchanged
    assert not masked[items == 0].any()  # padding is never masked
    assert masked.any(1).all()  # every row trains on something


def test_last_item_share_one_masks_only_the_last_item() -> None:
    _, inputs, _ = _masks(last_item_share=1.0)
    masked = inputs == N_ITEMS + 1
    assert masked[:, -1].all() and not masked[:, :-1].any()


def test_mask_last_masks_every_last_item_and_keeps_the_random_draws() -> None:
    _, plain, _ = _masks(seed=3, last_item_share=0.0)
    _, with_last, _ = _masks(seed=3, last_item_share=0.0, mask_last=True)
    assert (with_last[:, -1] == N_ITEMS + 1).all()
    assert not (plain[:, -1] == N_ITEMS + 1).all()  # without it, only some rows mask their last item
    assert torch.equal(with_last[:, :-1], plain[:, :-1])  # the same random draws elsewhere


def test_mask_prob_sets_the_share_of_masked_items() -> None:
    items, inputs, _ = _masks(seed=5, mask_prob=0.4, last_item_share=0.0)
    real = items[:, :-1] != 0
    share = (inputs[:, :-1] == N_ITEMS + 1)[real].float().mean().item()
    assert 0.36 < share < 0.44


def test_crop_keeps_a_right_aligned_prefix_of_every_cut_row() -> None:
    items, _, _ = _masks()
    model = build_model("bert4rec", {**BASE, "crop_prob": 0.5}, N_ITEMS)
    torch.manual_seed(1)
    cropped = model.crop_to_prefix(items)
    lengths, kept = (items != 0).sum(1), (cropped != 0).sum(1)
    assert (kept >= 1).all() and (kept <= lengths).all()
    for original, out, k in zip(items, cropped, kept.tolist(), strict=True):
        real = original[original != 0]
        assert torch.equal(out[-k:], real[:k])  # the oldest k items, ending in the last column
        assert not out[:-k].any()  # left padding before them
    cut_share = (kept < lengths).float().mean().item()
    assert 0.3 < cut_share < 0.5  # half the rows cut; a cut keeping the whole row counts as uncut


def test_crop_then_mask_targets_only_kept_items() -> None:
    items, inputs, targets = _masks(crop_prob=1.0, last_item_share=0.0)
    masked = inputs == N_ITEMS + 1
    assert torch.equal(targets != 0, masked) and masked.any(1).all()
    kept = (inputs != 0).sum(1)
    assert (kept < (items != 0).sum(1)).float().mean() > 0.5  # most rows lost their newest items
    for original, target_row, k in zip(items, targets, kept.tolist(), strict=True):
        prefix = original[original != 0][:k]
        assert torch.equal(target_row[-k:][target_row[-k:] != 0], prefix[target_row[-k:] != 0])
