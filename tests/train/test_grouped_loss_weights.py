"""Length-grouped batches weigh every training target the same, as shuffled batches do."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import TrainBatch, TrainRows, TrainSequences
from recsys.objectives import training_losses
from recsys.registry import build_model
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.module import RecModule

TINY = {"max_len": 12, "hidden": 16, "n_heads": 2}


def _module(name: str, n_items: int, **train: int) -> RecModule:
    torch.manual_seed(0)
    crop = {"crop_prob": 0.0} if name == "bert4rec" else {}  # the estimate checked is that of masks alone
    model = build_model(name, TINY | crop, n_items)
    return RecModule(model, TrainConfig(**train), EvalConfig())


def _expected(module: RecModule, rows: TrainRows) -> float | None:
    return module.objective.expected_targets_per_batch(module.model, rows, module.train_cfg.batch_size)


def _rows(windows: torch.Tensor) -> TrainSequences:
    """Training rows holding exactly `windows` [U, L + 1]."""
    seqs = [[int(i) for i in w if i != 0] for w in windows]
    return TrainSequences(seqs, windows.shape[1] - 1)


def test_expected_targets_count_next_item_targets_by_hand() -> None:
    windows = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 8, 9]])  # 1, 2 and 3 targets
    module = _module("sasrec", n_items=9, batch_size=4)
    assert _expected(module, _rows(windows)) == pytest.approx(2.0 * 4)


def test_masked_estimate_leaves_the_random_stream_alone() -> None:
    windows = torch.randint(1, 30, (400, 13), generator=torch.Generator().manual_seed(0))
    module = _module("bert4rec", n_items=30, batch_size=10)
    torch.manual_seed(7)
    expected = _expected(module, _rows(windows))
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))
    mask_prob = module.model.cfg.mask_prob  # type: ignore[union-attr]
    assert expected == pytest.approx(mask_prob * 12 * 10, rel=0.15)  # ~mask_prob of the 12 input items


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_grouped_batch_weights_average_to_one_over_an_epoch(planted_dataset: Path, name: str) -> None:
    """Each grouped batch's loss is scaled by its targets / the expected count: short-history batches
    weigh less, long ones more, and over the epoch the scales average to one (every target weighs 1)."""
    dm = SequenceDataModule(
        planted_dataset / "processed", max_len=12, batch_size=8, eval_batch_size=64, seed=0, length_pool=8
    )
    dm.setup()
    module = _module(name, dm.n_items, batch_size=8, length_pool=8)
    expected = _expected(module, dm.train_set)
    assert expected is not None
    scales = []
    for batch in dm.train_dataloader():
        _, targets = module.objective.inputs_and_targets(module.model, batch)
        scales.append(float((targets != 0).sum()) / expected)
    assert max(scales) > 1.5 * min(scales)  # the batches' target counts really differ
    n_full = len(dm.train_set) / dm.batch_size  # the last batch may be short
    assert sum(scales) / n_full == pytest.approx(1.0, rel=0.1 if name == "bert4rec" else 1e-6)


@pytest.mark.parametrize("pool", [0, 4])
def test_fit_sets_the_weights_only_for_grouped_batches(planted_dataset: Path, pool: int) -> None:
    dm = SequenceDataModule(
        planted_dataset / "processed", max_len=12, batch_size=8, eval_batch_size=64, seed=0, length_pool=pool
    )
    module = _module("sasrec", n_items=1000, batch_size=8, length_pool=pool)  # more items than the data has
    trainer = pl.Trainer(
        max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=dm)
    if pool:
        assert module.targets_per_batch == pytest.approx(_expected(module, dm.train_set))
    else:
        assert module.targets_per_batch is None


def test_the_training_step_scales_the_loss_by_the_batch_targets() -> None:
    windows = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [6, 7, 8, 9]])  # 6 targets
    module = _module("sasrec", n_items=9, batch_size=3).eval()  # eval: no dropout, same loss twice
    batch = TrainBatch(windows)
    mean_loss = training_losses(module.model, module.objective, batch, module.loss).total
    scaled = training_losses(module.model, module.objective, batch, module.loss, targets_per_batch=4.0).total
    torch.testing.assert_close(scaled, mean_loss * 6 / 4)
