"""One training run end to end: processed data -> model -> fit -> full-ranking val/test -> MLflow run.

The parts live beside this entry point: `fit` (data, Trainer, callbacks), `resume` (continuing a
stopped run), `finalize` (scoring a stopped run's best checkpoint) and `record` (the results record
and what MLflow keeps).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from recsys.data.item_features import load_item_features
from recsys.data.schema import META_FILE
from recsys.model_io import model_spec
from recsys.registry import MODELS, build_model, lookup
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.records import git_commit, now_iso
from recsys.train.experiment import ExperimentConfig
from recsys.train.finalize import finalize_from_checkpoint
from recsys.train.fit import build_trainer, datamodule_for, ensure_processed
from recsys.train.module import RecModule
from recsys.train.record import RunContext, TrainOutcome, evaluate_and_log
from recsys.train.resume import CHECKPOINT_DIR_TAG, load_checkpoint, model_for_checkpoint, reopen

__all__ = ["TrainOutcome", "finalize_from_checkpoint", "train_experiment"]

log = logging.getLogger(__name__)

OWN_CKPT_PREFIX = "recsys-ckpt-"  # checkpoint directories a run creates (and removes when it finishes)


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
            spent are restored (so `max_minutes` bounds the whole fit), and the model is rebuilt from
            the config the checkpoint stores; the data order and dropout draws continue from fresh
            generators, so the result is not bit-identical to an uninterrupted run.
        checkpoint: the Lightning checkpoint to resume from; default the run's `last.ckpt`.

    Raises:
        FileNotFoundError: the data config's processed dataset is missing (run the ETL first:
            `python -m pipelines.prepare_data --config <cfg.data>`).
    """
    started_at, t0 = now_iso(), time.perf_counter()
    data_dir = ensure_processed(cfg.data)
    meta = json.loads((data_dir / META_FILE).read_text())
    n_items = int(meta["n_items"])
    # the code this process runs: HEAD may move while a long run trains
    fields: dict[str, Any] = {"git_commit": git_commit()}
    if resume_run is None:
        if checkpoint is not None:
            raise ValueError("a checkpoint is only read when resuming a run (--resume-run RUN_ID)")
        uses_features = lookup(MODELS, cfg.model.name, "model").uses_item_features
        features = load_item_features(data_dir) if uses_features else None
        model = build_model(cfg.model.name, cfg.model.params, n_items, item_features=features)
        ckpt_dir = Path(tempfile.mkdtemp(prefix=OWN_CKPT_PREFIX))
    else:
        point = reopen(tracking_uri, resume_run, checkpoint)
        model = model_for_checkpoint(cfg, n_items, point.state)
        checkpoint, ckpt_dir = point.checkpoint, point.checkpoint.parent
        started_at, t0 = point.started_at, t0 - point.spent_s
        fields["resumed_after_epoch"] = point.epoch
        log.info("resuming run %s after epoch %d from %s", resume_run, point.epoch, checkpoint)
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
    trainer, fit = build_trainer(cfg, logger, ckpt_dir, model_spec(model, cfg.model.name, n_items))
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
    path = fit.best.best_model_path
    best = load_checkpoint(Path(path)) if path else None
    fields |= {"epochs": trainer.current_epoch, "fit_s": round(fit_s, 1), "stopped_by": fit.stop_reason()}
    ctx = RunContext(cfg, data_dir, meta, command, started_at=started_at, t0=t0)
    outcome = evaluate_and_log(ctx, module, dm, best, recorder, fields)
    # only once the run is recorded: a process killed while it evaluates leaves a run that can resume
    if ckpt_dir.name.startswith(OWN_CKPT_PREFIX):  # ours; a directory the caller chose is left alone
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return outcome
