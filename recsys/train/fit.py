"""The fit of one experiment: the processed data it reads, its DataModule, the Lightning Trainer and
its callbacks, and why the fit stopped."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, Timer
from pytorch_lightning.loggers import Logger
from pytorch_lightning.plugins import TorchCheckpointIO

from recsys.config import load_config, read_yaml, to_dict
from recsys.data.candidate_list_datamodule import CandidateListDataModule
from recsys.data.candidate_lists import CandidateListConfig, CandidateLists, candidate_lists
from recsys.data.config import DataConfig
from recsys.data.datamodule import SequenceDataModule
from recsys.data.labelled import LabelledConfig, LabelledData, labelled_dataset
from recsys.data.labelled_datamodule import LabelledDataModule
from recsys.data.schema import META_FILE
from recsys.models.ranker import AnyModel
from recsys.objectives.base import Objective
from recsys.train.callbacks import EpochSummary, ModelSpecInCheckpoint, RandomStateInCheckpoint, WeightEMA
from recsys.train.experiment import ExperimentConfig

PREPARE_COMMAND = "python -m pipelines.prepare_data --config {config}"


def ensure_processed(data_config_path: str) -> Path:
    """The processed dataset directory of a data config; training never runs the ETL itself.

    Raises:
        FileNotFoundError: the directory holds no processed dataset; the message names the command
            that writes it.
    """
    return _processed(Path(load_config(DataConfig, data_config_path).output_dir), data_config_path)


def _processed(out: Path, data_config_path: str) -> Path:
    if not (out / META_FILE).is_file():
        command = PREPARE_COMMAND.format(config=data_config_path)
        raise FileNotFoundError(
            f"processed data not found: {out} has no {META_FILE}. Write it first with `{command}` "
            "(or add --prepare to `python -m pipelines.train`)"
        )
    return out


@dataclass(frozen=True)
class RunData:
    """Where a run's rows come from: training sequences of a processed dataset, or (rankers) the
    labelled rows built from one."""

    data_dir: Path  # the processed dataset
    meta: dict[str, Any]  # its meta.json
    config: dict[str, Any]  # the resolved data config (sequence or labelled), recorded with the results
    labelled: LabelledData | None  # the labelled rows of a ranker; None: the objective trains on sequences
    lists: CandidateLists | None = None  # a two-stage ranker's candidate lists (instead of labelled rows)


def ranker_data_config(data_config_path: str) -> CandidateListConfig | LabelledConfig:
    """A ranker's data config: candidate lists when it names a `stage1` model, else labelled rows."""
    if "stage1" in read_yaml(data_config_path):
        return load_config(CandidateListConfig, data_config_path)
    return load_config(LabelledConfig, data_config_path)


def load_run_data(data_config_path: str, *, labelled: bool) -> RunData:
    """The data a run trains on, from the experiment's `data` config: a data config (sequences) or, for
    a ranker (`labelled`), a labelled config whose rows are built when missing, or a candidate-list
    config (it names a `stage1` model) whose lists stage 1 retrieves now."""
    rows: LabelledData | None = None
    if not labelled:
        config: Any = load_config(DataConfig, data_config_path)
        data_dir = _processed(Path(config.output_dir), data_config_path)
    elif isinstance(config := ranker_data_config(data_config_path), CandidateListConfig):
        data_dir = _processed(Path(config.processed), data_config_path)
        lists = candidate_lists(config)
        meta = json.loads((data_dir / META_FILE).read_text())
        return RunData(data_dir, meta, to_dict(config), None, lists)
    else:
        data_dir = Path(config.processed)
        if not (data_dir / META_FILE).is_file():
            raise FileNotFoundError(
                f"processed data not found: {data_dir} (`processed` of {data_config_path}) has no {META_FILE}. "
                f"Write it first with `python -m pipelines.prepare_data --config <the data config whose "
                f"output_dir is {data_dir}>`"
            )
        rows = labelled_dataset(config)
    meta = json.loads((data_dir / META_FILE).read_text())
    return RunData(data_dir, meta, to_dict(config), rows)


def datamodule_for(
    cfg: ExperimentConfig, data: RunData, model: AnyModel, objective: Objective
) -> SequenceDataModule | LabelledDataModule | CandidateListDataModule:
    """The experiment's DataModule: `data`'s labelled rows, or the training rows `objective` builds
    for `model` from the sequences."""
    if data.lists is not None:
        return CandidateListDataModule(
            data.lists, batch_size=cfg.train.batch_size, eval_batch_size=cfg.eval.batch_size, seed=cfg.train.seed
        )
    if data.labelled is not None:
        return LabelledDataModule(
            data.labelled,
            max_history=model.max_len,
            batch_size=cfg.train.batch_size,
            eval_batch_size=cfg.eval.batch_size,
            seed=cfg.train.seed,
        )
    return SequenceDataModule(
        data.data_dir,
        max_len=model.max_len,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        seed=cfg.train.seed,
        rows=objective.rows_for(model),
        length_pool=cfg.train.length_pool,
        split=cfg.split,
        val_users=cfg.eval.val_users,
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final name and renamed onto it: a crash mid-write never leaves a
    truncated last.ckpt for --resume-run (Lightning's own temporary file lives in the system's temp
    directory, so on another filesystem its final move is a copy)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        del storage_options
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        try:
            torch.save(checkpoint, part)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)


@dataclass(frozen=True)
class FitCallbacks:
    """The callbacks whose state says what the fit kept and why it stopped."""

    best: ModelCheckpoint  # best.ckpt (on the monitored metric)
    last: ModelCheckpoint  # last.ckpt, at every validation: what a resumed fit continues from
    early_stopping: EarlyStopping
    timer: Timer  # always kept: its state in a checkpoint is the fit time a resumed run adds to its own

    def stop_reason(self) -> str:
        """Why a finished fit ended: "early_stopping", "time_limit" (`max_minutes`) or "max_epochs"."""
        if self.early_stopping.stopped_epoch > 0:
            return "early_stopping"
        remaining = self.timer.time_remaining()
        if remaining is not None and remaining <= 0:
            return "time_limit"
        return "max_epochs"


def build_trainer(
    cfg: ExperimentConfig, logger: Logger, ckpt_dir: Path, model_spec: dict[str, Any], *, monitor: str | None = None
) -> tuple[pl.Trainer, FitCallbacks]:
    """The Lightning Trainer of an experiment, checkpointing into `ckpt_dir`.

    Args:
        cfg: the experiment config (its `train` section drives the loop).
        logger: where Lightning logs per-epoch metrics.
        ckpt_dir: directory of best.ckpt and last.ckpt.
        model_spec: `recsys.model_io.model_spec` of the model, stored in every checkpoint.
        monitor: the validation metric checkpoints and early stopping follow (the objective's
            `monitor`); default `cfg.monitor`, full-ranking NDCG.
    """
    t = cfg.train
    monitor = monitor or cfg.monitor
    fit = FitCallbacks(
        best=ModelCheckpoint(dirpath=ckpt_dir, monitor=monitor, mode="max", save_top_k=1, filename="best"),
        # not save_last=True: Lightning writes that copy only when the best one improves, so a run killed
        # on a plateau would resume from its best epoch and train everything since again
        last=ModelCheckpoint(dirpath=ckpt_dir, save_top_k=1, filename="last", enable_version_counter=False),
        early_stopping=EarlyStopping(monitor=monitor, mode="max", patience=t.patience),
        timer=Timer(duration=timedelta(minutes=t.max_minutes) if t.max_minutes else None),
    )
    trainer = pl.Trainer(
        max_epochs=t.max_epochs,
        min_epochs=t.min_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        logger=logger,
        callbacks=[
            *([WeightEMA(t.ema_decay)] if t.ema_decay > 0 else []),
            fit.early_stopping,
            fit.best,
            fit.last,
            EpochSummary(monitor),
            fit.timer,
            ModelSpecInCheckpoint(model_spec),
            RandomStateInCheckpoint(),
        ],
        check_val_every_n_epoch=t.val_every,
        gradient_clip_val=t.grad_clip,
        accumulate_grad_batches=t.accumulate_batches,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule shards training rows itself
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=10,
        limit_train_batches=t.steps_per_epoch if t.steps_per_epoch is not None else 1.0,
    )
    return trainer, fit
