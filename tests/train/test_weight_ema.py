"""The weight EMA: validation scores the average, checkpoints hold it, a resumed fit trains on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from recsys.data.datamodule import SequenceDataModule
from recsys.registry import build_model
from recsys.tracking.mlflow import download_run_artifacts, metric_history
from recsys.train.callbacks import RAW_PARAMS_KEY, WeightEMA
from recsys.train.experiment import EvalConfig, TrainConfig, load_experiment
from recsys.train.module import RecModule
from recsys.train.run import train_experiment

DECAY = 0.8
Params = dict[str, torch.Tensor]


class ParamProbe(pl.Callback):
    """Snapshots of the module's parameters at the fit's start, after each step and as validation sees them."""

    def __init__(self) -> None:
        self.start: Params = {}
        self.steps: list[Params] = []
        self.validated: list[Params] = []
        self.after_validation: list[Params] = []

    @staticmethod
    def _snap(pl_module: pl.LightningModule) -> Params:
        return {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = self._snap(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.steps.append(self._snap(pl_module))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validated.append(self._snap(pl_module))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.after_validation.append(self._snap(pl_module))


def _fit(data_dir: Path, max_epochs: int, ckpt: Path | None = None) -> tuple[pl.Trainer, ParamProbe]:
    torch.manual_seed(0)
    n_items = json.loads((data_dir / "meta.json").read_text())["n_items"]
    model = build_model("sasrec", {"max_len": 8, "hidden": 16, "n_heads": 2}, n_items)
    module = RecModule(model, TrainConfig(batch_size=16, lr=0.01), EvalConfig())
    dm = SequenceDataModule(data_dir, max_len=8, batch_size=16, eval_batch_size=64, seed=0)
    probe = ParamProbe()  # after the EMA in the list: it sees what the EMA swapped in
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        callbacks=[WeightEMA(DECAY), probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return trainer, probe


def _ema(start: Params, steps: list[Params]) -> Params:
    """The average by hand: start from the initial weights, move (1 - decay) of the way each step."""
    avg = {n: p.clone() for n, p in start.items()}
    for snap in steps:
        avg = {n: DECAY * avg[n] + (1 - DECAY) * snap[n] for n in avg}
    return avg


def _assert_close(a: Params, b: Params) -> None:
    assert a.keys() == b.keys()
    for n in a:
        torch.testing.assert_close(a[n], b[n], msg=n)


def test_validation_scores_the_average_and_training_continues_on_the_trained_weights(
    planted_dataset: Path, tmp_path: Path
) -> None:
    data_dir = planted_dataset / "processed"
    trainer, probe = _fit(data_dir, max_epochs=2)
    per_epoch = len(probe.steps) // 2
    assert per_epoch >= 2
    _assert_close(probe.validated[0], _ema(probe.start, probe.steps[:per_epoch]))
    _assert_close(probe.validated[1], _ema(probe.start, probe.steps))
    _assert_close(probe.after_validation[0], probe.steps[per_epoch - 1])  # the trained weights are back
    with pytest.raises(AssertionError):  # the average is not the trained weights
        _assert_close(probe.validated[1], probe.steps[-1])

    # a checkpoint holds the average as the model and the trained weights beside it
    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=False)
    _assert_close(saved["state_dict"], _ema(probe.start, probe.steps))
    _assert_close(saved[RAW_PARAMS_KEY], probe.steps[-1])

    # resuming trains on from the trained weights and keeps averaging from the saved average
    _, resumed = _fit(data_dir, max_epochs=3, ckpt=path)
    _assert_close(resumed.start, probe.steps[-1])
    expected = _ema(probe.start, probe.steps + resumed.steps)
    _assert_close(resumed.validated[0], expected)


def test_a_run_with_ema_exports_the_average_validation_chose(
    tmp_path: Path, planted_experiment: Callable[..., Path]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    embeddings = []
    for ema_decay in (DECAY, 0.0):  # the same seed: the same training steps, only what is kept differs
        cfg = load_experiment(planted_experiment(max_epochs=3, ema_decay=ema_decay))
        pl.seed_everything(cfg.train.seed, verbose=False)  # as pipelines.train does
        outcome = train_experiment(cfg, tracking_uri=uri, command="test")
        assert outcome is not None
        best_logged = metric_history(uri, outcome.run_id, "val/ndcg@10")["value"].max()
        # the final val score is the best checkpoint's, re-ranked: the weights validation scored
        assert outcome.metrics["val/ndcg@10"] == pytest.approx(best_logged)
        path = download_run_artifacts(uri, outcome.run_id, "embeddings/item_embeddings.npy", tmp_path / outcome.run_id)
        embeddings.append(np.load(path))
    # train.ema_decay reaches the run: it tests and exports other weights than the trained ones
    # (that a checkpoint holds the average is checked in the test above)
    assert not np.allclose(embeddings[0], embeddings[1])


def test_ema_decay_must_be_below_one() -> None:
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\), got 1.0"):
        TrainConfig(ema_decay=1.0)


def test_with_accumulated_gradients_the_average_moves_once_per_optimiser_step() -> None:
    ema, module = WeightEMA(0.5), torch.nn.Linear(1, 1, bias=False)
    trainer: Any = type("Trainer", (), {"global_step": 0})()
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema.on_fit_start(trainer, module)  # type: ignore[arg-type]
    with torch.no_grad():
        module.weight.fill_(1.0)
    averages = []
    for step in (0, 1, 1, 2):  # batch 1 only accumulates; batches 2 and 4 step; batch 3 accumulates
        trainer.global_step = step
        ema.on_train_batch_end(trainer, module, None, None, 0)  # type: ignore[arg-type]
        assert ema._average is not None
        averages.append(float(ema._average["weight"]))
    assert averages == [0.0, 0.5, 0.5, 0.75]
