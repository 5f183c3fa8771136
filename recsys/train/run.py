"""One training run end to end: data -> model -> fit -> full-ranking val/test -> MLflow run."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from recsys.config import dump_yaml, load_config, to_dict
from recsys.data.config import DataConfig
from recsys.data.datamodule import SequenceDataModule
from recsys.data.etl import run_etl
from recsys.data.schema import META_FILE
from recsys.eval.evaluate import evaluate
from recsys.models.base import SequentialRecommender
from recsys.models.checkpoint import save_model
from recsys.registry import build_model
from recsys.tracking.mlflow import RunRecorder, make_logger
from recsys.tracking.records import base_record, now_iso
from recsys.train.callbacks import EpochSummary
from recsys.train.experiment import ExperimentConfig
from recsys.train.module import RecModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    tracking_uri: str
    metrics: dict[str, float]  # final val/* and test/* of the best checkpoint
    record: dict[str, Any]  # the results record (ARCHITECTURE.md)


def ensure_processed(data_config_path: str) -> Path:
    """The processed dataset directory for a data config, running the ETL if it is missing."""
    data_cfg = load_config(DataConfig, data_config_path)
    out = Path(data_cfg.output_dir)
    if not (out / META_FILE).is_file():
        log.info("processed data not found in %s: running the ETL", out)
        run_etl(data_cfg)
    return out


def train_experiment(cfg: ExperimentConfig, *, tracking_uri: str, command: str = "") -> TrainOutcome | None:
    """Train, evaluate and track one experiment. Returns None on non-zero DDP ranks.

    Args:
        cfg: the resolved experiment config.
        tracking_uri: the MLflow store (checked before training starts).
        command: the command line, recorded with the results.
    """
    started_at, t0 = now_iso(), time.perf_counter()
    data_dir = ensure_processed(cfg.data)
    meta = json.loads((data_dir / META_FILE).read_text())
    model = build_model(cfg.model.name, cfg.model.params, int(meta["n_items"]))
    logger = make_logger(
        cfg.tracking,
        tracking_uri,
        tags={"data_dir": str(data_dir.resolve()), "model": cfg.model.name, "dataset": str(meta.get("name", ""))},
    )
    dm = SequenceDataModule(
        data_dir,
        max_len=model.max_len,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        seed=cfg.train.seed,
        objective=model.objective,
    )
    module = RecModule(model, cfg.train, cfg.eval)
    ckpt_dir = Path(tempfile.mkdtemp(prefix="recsys-ckpt-"))
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=cfg.monitor, mode="max", save_top_k=1, filename="best")
    trainer = pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        min_epochs=cfg.train.min_epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        precision=cfg.train.precision,
        logger=logger,
        callbacks=[
            EarlyStopping(monitor=cfg.monitor, mode="max", patience=cfg.train.patience),
            checkpoint,
            EpochSummary(cfg.monitor),
        ],
        check_val_every_n_epoch=cfg.train.val_every,
        gradient_clip_val=cfg.train.grad_clip,
        max_time={"minutes": cfg.train.max_minutes} if cfg.train.max_minutes else None,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule shards training rows itself
        log_every_n_steps=10,
    )
    recorder = RunRecorder(tracking_uri, logger.run_id) if trainer.global_rank == 0 else None
    try:
        trainer.fit(module, datamodule=dm)
    except BaseException:
        if recorder is not None:
            recorder.finish("FAILED")
        raise
    if recorder is None:
        return None
    fit_s = time.perf_counter() - t0
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    model = module.model.cpu().eval()
    kw: dict[str, Any] = {"ks": cfg.eval.ks, "exclude_seen": cfg.eval.exclude_seen, "item_chunk": cfg.eval.item_chunk}
    val = evaluate(model, dm.val_dataloader(), split="val", **kw)
    test = evaluate(model, dm.test_dataloader(), split="test", **kw)
    metrics = {**val.metrics, **test.metrics}
    record = base_record(cfg.name, command, started_at, time.perf_counter() - t0) | {
        "dataset": meta.get("name"),
        "model": cfg.model.name,
        "attention": cfg.model.params.get("attention", "sdpa"),
        "loss": cfg.train.loss,
        "protocol": test.protocol,
        "epochs": trainer.current_epoch,
        "best_epoch": _best_epoch(checkpoint),
        "fit_s": round(fit_s, 1),
        "mlflow_run_id": logger.run_id,
        "metrics": metrics,
    }
    _log_run(recorder, cfg, meta, model, metrics, record, data_dir)
    return TrainOutcome(run_id=str(logger.run_id), tracking_uri=tracking_uri, metrics=metrics, record=record)


def _best_epoch(checkpoint: ModelCheckpoint) -> int | None:
    if not checkpoint.best_model_path:
        return None
    return int(torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["epoch"])


def _log_run(
    recorder: RunRecorder,
    cfg: ExperimentConfig,
    meta: dict[str, Any],
    model: SequentialRecommender,
    metrics: dict[str, float],
    record: dict[str, Any],
    data_dir: Path,
) -> None:
    """Everything a run keeps: params, final metrics, config, dataset meta, weights, item embeddings."""
    recorder.log_params(to_dict(cfg))
    recorder.log_metrics(metrics, step=int(record["epochs"]))
    recorder.log_text(dump_yaml(cfg), "config.yaml")
    recorder.log_text((Path(cfg.data)).read_text(), "data/data_config.yaml")
    recorder.log_json(meta, "data/meta.json")
    recorder.log_json(record, "result.json")
    recorder.set_tags({"data_dir": str(data_dir.resolve())})
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        save_model(model, cfg.model.name, cfg.model.params, int(meta["n_items"]), model_dir)
        recorder.log_dir(model_dir, "model")
        emb_path = Path(tmp) / "item_embeddings.npy"
        with torch.no_grad():
            np.save(emb_path, model.item_embeddings().float().numpy())
        recorder.log_file(emb_path, "embeddings")
    recorder.finish("FINISHED")
