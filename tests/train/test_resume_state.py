"""A resumed fit starts from the stopped one's last validation, with its early-stopping and LR-scheduler
state, not from fresh ones (nor from the best epoch's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from recsys.train.experiment import load_experiment
from recsys.train.fit import build_trainer, datamodule_for
from recsys.train.module import RecModule
from recsys.train.run import assemble_run


class StateProbe(pl.Callback):
    """What the early stopping and the LR scheduler hold when the (resumed) fit starts training."""

    def __init__(self) -> None:
        self.early_stopping: dict[str, Any] = {}
        self.scheduler: dict[str, Any] = {}
        self.lr = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stopper = next(cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.EarlyStopping))  # type: ignore[attr-defined]
        self.early_stopping = stopper.state_dict()
        self.scheduler = trainer.lr_scheduler_configs[0].scheduler.state_dict()
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]


def _fit(exp: Path, ckpt_dir: Path, resume_from: Path | None = None) -> tuple[StateProbe, pl.Trainer]:
    cfg = load_experiment(exp)
    parts = assemble_run(cfg)
    trainer, _ = build_trainer(cfg, False, ckpt_dir, parts.spec)  # type: ignore[arg-type]
    probe = StateProbe()
    trainer.callbacks.append(probe)  # type: ignore[attr-defined]
    module = RecModule(parts.model, cfg.train, cfg.eval, objective=parts.objective)
    dm = datamodule_for(cfg, parts.data, parts.model, parts.objective)
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    return probe, trainer


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_resume_restores_early_stopping_and_the_lr_schedule(
    tmp_path: Path, planted_experiment: Callable[..., Path]
) -> None:
    # lr halves after every validation without improvement: by epoch 25 the planted pattern has plateaued
    exp = planted_experiment(max_epochs=25, lr_decay=0.5, lr_decay_patience=0, patience=50, lr=0.05)
    _fit(exp, tmp_path / "ckpt")
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    stopping = next(v for k, v in saved["callbacks"].items() if k.startswith("EarlyStopping"))
    scheduler = saved["lr_schedulers"][0]
    assert saved["epoch"] == 24  # the last epoch, not the best one (the metric plateaued long before)
    assert stopping["wait_count"] > 0 and scheduler["_last_lr"][0] < 0.05, (stopping, scheduler)  # state to lose

    exp.write_text(exp.read_text().replace("max_epochs: 25", "max_epochs: 27"))
    probe, _ = _fit(exp, tmp_path / "ckpt", resume_from=tmp_path / "ckpt" / "last.ckpt")
    assert _same(probe.early_stopping, stopping)
    assert _same(probe.scheduler, scheduler)
    assert probe.lr == scheduler["_last_lr"][0]


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch: Any) -> None:
    from recsys.train import fit as fit_module

    io = fit_module.AtomicCheckpointIO()
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, tmp_path / "last.ckpt")

    def dies_mid_write(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module.torch, "save", dies_mid_write)
    try:
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, tmp_path / "last.ckpt")
    except KeyboardInterrupt:
        pass
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 1  # whole, and the old one
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
