"""One training run end to end: data -> model -> fit -> full-ranking val/test -> MLflow run."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, Timer

from recsys.config import dump_yaml, load_config, to_dict
from recsys.data.config import DataConfig
from recsys.data.datamodule import SequenceDataModule
from recsys.data.etl import run_etl
from recsys.data.schema import META_FILE
from recsys.eval.evaluate import evaluate
from recsys.model_io import save_model
from recsys.models.base import SequentialRecommender
from recsys.objectives import build_objective
from recsys.registry import build_model
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder, read_run, reopen_run
from recsys.tracking.records import base_record, git_commit, now_iso
from recsys.train.callbacks import EpochSummary, WeightEMA
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


CHECKPOINT_DIR_TAG = "checkpoint_dir"  # where a run keeps best.ckpt and last.ckpt while it trains


def train_experiment(
    cfg: ExperimentConfig,
    *,
    tracking_uri: str,
    command: str = "",
    resume_run: str | None = None,
    checkpoint: Path | None = None,
) -> TrainOutcome | None:
    """Train, evaluate and track one experiment. Returns None on non-zero DDP ranks.

    Args:
        cfg: the resolved experiment config.
        tracking_uri: the MLflow store (checked before training starts).
        command: the command line, recorded with the results.
        resume_run: continue this stopped run (same config) from its checkpoint instead of starting
            a new one: weights, optimiser, epoch, early stopping, best checkpoint and the time already
            spent are restored (so `max_minutes` bounds the whole fit); the data order and dropout
            draws continue from fresh generators, so the result is not bit-identical to an
            uninterrupted run.
        checkpoint: the Lightning checkpoint to resume from; default the run's `last.ckpt`.
    """
    started_at, t0 = now_iso(), time.perf_counter()
    data_dir = ensure_processed(cfg.data)
    meta = json.loads((data_dir / META_FILE).read_text())
    model = build_model(cfg.model.name, cfg.model.params, int(meta["n_items"]))
    # the code this process runs: HEAD may move while a long run trains
    fields: dict[str, Any] = {"git_commit": git_commit()}
    if resume_run is None:
        if checkpoint is not None:
            raise ValueError("a checkpoint is only read when resuming a run (--resume-run RUN_ID)")
        ckpt_dir = Path(tempfile.mkdtemp(prefix="recsys-ckpt-"))
    else:
        reopen_run(tracking_uri, resume_run)
        checkpoint = checkpoint or run_checkpoint(tracking_uri, resume_run, "last.ckpt")
        ckpt_dir = checkpoint.parent
        prior_s, prior_epoch = _fit_progress(checkpoint)
        started_at, t0 = read_run(tracking_uri, resume_run)["start_time"], t0 - prior_s
        fields["resumed_after_epoch"] = prior_epoch
        log.info("resuming run %s after epoch %d from %s", resume_run, prior_epoch, checkpoint)
    logger = make_logger(
        cfg.tracking,
        tracking_uri,
        tags={
            "data_dir": str(data_dir.resolve()),
            "model": cfg.model.name,
            "dataset": str(meta.get("name", "")),
            CHECKPOINT_DIR_TAG: str(ckpt_dir.resolve()),
        },
        run_id=resume_run,
    )
    log.info("checkpoints of run %s: %s (resume with --resume-run)", logger.run_id, ckpt_dir)
    dm = datamodule_for(cfg, data_dir, model)
    module = RecModule(model, cfg.train, cfg.eval)
    best_checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, monitor=cfg.monitor, mode="max", save_top_k=1, filename="best", save_last=True
    )
    early_stopping = EarlyStopping(monitor=cfg.monitor, mode="max", patience=cfg.train.patience)
    # always kept (no limit without max_minutes): its state in the checkpoint is the fit time a
    # resumed run adds to its own
    timer = Timer(duration=timedelta(minutes=cfg.train.max_minutes) if cfg.train.max_minutes else None)
    trainer = pl.Trainer(
        max_epochs=cfg.train.max_epochs,
        min_epochs=cfg.train.min_epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        precision=cfg.train.precision,
        logger=logger,
        callbacks=[
            *([WeightEMA(cfg.train.ema_decay)] if cfg.train.ema_decay > 0 else []),
            early_stopping,
            best_checkpoint,
            EpochSummary(cfg.monitor),
            timer,
        ],
        check_val_every_n_epoch=cfg.train.val_every,
        gradient_clip_val=cfg.train.grad_clip,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule shards training rows itself
        log_every_n_steps=10,
    )
    recorder = None
    if trainer.global_rank == 0:
        if logger.run_id is None:
            raise RuntimeError(f"MLflow did not create a run in {tracking_uri}")
        recorder = RunRecorder(tracking_uri, logger.run_id)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=checkpoint)
    except BaseException:
        if recorder is not None:
            recorder.finish("FAILED")
        raise
    if recorder is None:
        return None
    fit_s = time.perf_counter() - t0
    path = best_checkpoint.best_model_path
    best = torch.load(path, map_location="cpu", weights_only=False) if path else None
    if ckpt_dir.name.startswith("recsys-ckpt-"):  # ours; a directory the caller chose is left alone
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    fields |= {
        "epochs": trainer.current_epoch,
        "fit_s": round(fit_s, 1),
        "stopped_by": stop_reason(early_stopping, timer),
    }
    return _evaluate_and_log(cfg, module, dm, best, recorder, meta, data_dir, fields, command, started_at, t0)


def stop_reason(early_stopping: EarlyStopping, timer: Timer) -> str:
    """Why a finished fit ended: "early_stopping", "time_limit" (`max_minutes`) or "max_epochs"."""
    if early_stopping.stopped_epoch > 0:
        return "early_stopping"
    remaining = timer.time_remaining()
    if remaining is not None and remaining <= 0:
        return "time_limit"
    return "max_epochs"


def run_checkpoint(tracking_uri: str, run_id: str, name: str) -> Path:
    """`name` (best.ckpt or last.ckpt) in the checkpoint directory the run recorded when it started."""
    tags = read_run(tracking_uri, run_id)["tags"]
    if CHECKPOINT_DIR_TAG not in tags:
        raise ValueError(f"run {run_id} did not record its {CHECKPOINT_DIR_TAG}: pass --checkpoint PATH")
    path = Path(tags[CHECKPOINT_DIR_TAG]) / name
    if not path.is_file():
        raise FileNotFoundError(f"run {run_id} has no {name} in {path.parent} (pass --checkpoint PATH)")
    return path


def _fit_progress(checkpoint: Path) -> tuple[float, int]:
    """Seconds of fit already spent (Lightning's Timer state) and the last finished epoch."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    spent = state.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
    return float(sum(spent.values())), int(state["epoch"])


def finalize_from_checkpoint(
    cfg: ExperimentConfig, *, run_id: str, checkpoint: Path, tracking_uri: str, command: str = ""
) -> TrainOutcome:
    """Evaluate and log the best checkpoint of a run whose fit was stopped before it ended.

    For a run cut off by a time limit: the checkpoint (selected on validation) is evaluated on
    val and test exactly as at the end of `train_experiment`, logged into the same MLflow run,
    and the record says the run was interrupted and at which epoch.
    """
    t0 = time.perf_counter()
    data_dir = ensure_processed(cfg.data)
    meta = json.loads((data_dir / META_FILE).read_text())
    model = build_model(cfg.model.name, cfg.model.params, int(meta["n_items"]))
    dm = datamodule_for(cfg, data_dir, model)
    dm.setup()
    run = read_run(tracking_uri, run_id)
    recorder = RunRecorder(tracking_uri, run_id)
    best = torch.load(checkpoint, map_location="cpu", weights_only=False)
    started_at, elapsed_s = run["start_time"], time.time() - run["start_ms"] / 1000
    last_epoch = int(run["metrics"].get("epoch", best["epoch"]))
    fields = {
        "epochs": last_epoch,
        "fit_s": round(elapsed_s, 1),
        "interrupted": f"fit stopped after epoch {last_epoch}",
    }
    module = RecModule(model, cfg.train, cfg.eval)
    return _evaluate_and_log(
        cfg, module, dm, best, recorder, meta, data_dir, fields, command, started_at, t0 - elapsed_s
    )


def datamodule_for(cfg: ExperimentConfig, data_dir: Path, model: SequentialRecommender) -> SequenceDataModule:
    """The experiment's DataModule over `data_dir`, with the training rows `model`'s objective needs."""
    return SequenceDataModule(
        data_dir,
        max_len=model.max_len,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        seed=cfg.train.seed,
        rows=build_objective(model.objective).train_rows,
        length_pool=cfg.train.length_pool,
    )


def _evaluate_and_log(
    cfg: ExperimentConfig,
    module: RecModule,
    dm: SequenceDataModule,
    best: dict[str, Any] | None,
    recorder: RunRecorder,
    meta: dict[str, Any],
    data_dir: Path,
    fields: dict[str, Any],
    command: str,
    started_at: str,
    t0: float,
) -> TrainOutcome:
    """Load the best checkpoint, rank val and test over the full catalog, log everything to MLflow."""
    if best is not None:
        module.load_state_dict(best["state_dict"])
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
        **fields,
        "best_epoch": int(best["epoch"]) if best is not None else None,
        "mlflow_run_id": recorder.run_id,
        "metrics": metrics,
    }
    _log_run(recorder, cfg, meta, model, metrics, record, data_dir)
    return TrainOutcome(run_id=recorder.run_id, tracking_uri=recorder.uri, metrics=metrics, record=record)


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
