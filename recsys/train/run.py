"""One training run end to end: processed data -> model -> fit -> full-ranking val/test -> MLflow run.

`train_experiment` is the one way a run is put together; a fresh run, a resumed run
(`resume_run`) and the scoring of a stopped run's best checkpoint (`finalize_run`) are its three
modes. `assemble_run` builds what a run is made of once (the model, its spec, its objective and
the item features it reads) and hands the same objects to the DataModule, the LightningModule and
the Trainer. The parts live beside this entry point: `fit` (DataModule, Trainer, callbacks),
`resume` (a stopped run's checkpoint and the model it trained) and `record` (the results record
and what MLflow keeps).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.data.datamodule import SequenceDataModule
from recsys.data.item_features import load_item_features
from recsys.models.ranker import AnyModel, Ranker, RankerData
from recsys.objectives import build_objective
from recsys.objectives.base import Objective
from recsys.registry import choose_registered
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder, read_run
from recsys.tracking.records import git_commit, now_iso
from recsys.train.experiment import ExperimentConfig
from recsys.train.fit import RunData, build_trainer, datamodule_for, load_run_data
from recsys.train.module import RecModule
from recsys.train.record import RunContext, TrainOutcome, evaluate_and_log
from recsys.train.resume import CHECKPOINT_DIR_TAG, checkpoint_choice, load_checkpoint, reopen, run_checkpoint

__all__ = ["RunParts", "TrainOutcome", "assemble_run", "train_experiment"]

log = logging.getLogger(__name__)

OWN_CKPT_PREFIX = "recsys-ckpt-"  # checkpoint directories a run creates (and removes when it finishes)


@dataclass(frozen=True)
class RunParts:
    """What one run is made of, each built once and shared by the DataModule, module and Trainer."""

    data: RunData  # the processed dataset (and a ranker's labelled rows)
    model: AnyModel
    spec: dict[str, Any]  # `recsys.model_io` spec of `model`, stored in every checkpoint
    objective: Objective

    @property
    def n_items(self) -> int:
        return int(self.data.meta["n_items"])


def assemble_run(cfg: ExperimentConfig, checkpoint: dict[str, Any] | None = None) -> RunParts:
    """The data, the model (one registry look-up, item features loaded once when the model reads
    them) and its objective of an experiment; with `checkpoint`, the model is the one the checkpoint
    was trained as (`recsys.train.resume.checkpoint_choice`)."""
    choice = choose_registered(cfg.model.name, cfg.model.params)  # a retrieval model or a ranker
    # a ranker trains on labelled candidate rows, a retrieval model on the users' sequences
    data = load_run_data(cfg.data, labelled=issubclass(choice.cls, Ranker))
    n_items = int(data.meta["n_items"])
    features = load_item_features(data.data_dir) if choice.cls.uses_item_features else None
    if data.labelled is not None:  # a ranker's `auto` settings come from its rows
        choice = choice.resolved(RankerData.of_labelled(data.labelled, features))
    elif data.lists is not None:  # candidate lists carry no ratings
        choice = choice.resolved(RankerData(features))
    if checkpoint is not None:
        choice = checkpoint_choice(choice, checkpoint, n_items)
    model = choice.build(n_items, features)
    # the model's own objective: a model may pick it from its config (e.g. which training rows it uses);
    # a ranker given candidate lists trains on the objective the lists name
    objective = build_objective(data.lists.objective if data.lists is not None else model.objective)
    return RunParts(data, model, choice.spec(n_items), objective)


def train_experiment(
    cfg: ExperimentConfig,
    *,
    tracking_uri: str,
    command: str = "",
    resume_run: str | None = None,
    finalize_run: str | None = None,
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
        finalize_run: do not train: evaluate this stopped run's best checkpoint on val and test
            exactly as a finished run is, log it into the same MLflow run, and record that the run
            was interrupted and at which epoch.
        checkpoint: the Lightning checkpoint to read; default the run's `last.ckpt` (resume) or
            `best.ckpt` (finalize).

    Raises:
        FileNotFoundError: the data config's processed dataset is missing (run the ETL first:
            `python -m pipelines.prepare_data --config <cfg.data>`).
        ValueError: both `resume_run` and `finalize_run`, or a `checkpoint` without either.
    """
    if resume_run is not None and finalize_run is not None:
        raise ValueError("a run is either resumed (--resume-run) or finalized (--finalize-run), not both")
    if checkpoint is not None and resume_run is None and finalize_run is None:
        raise ValueError("a checkpoint is only read when resuming a run (--resume-run RUN_ID) or finalizing one")
    if finalize_run is not None:
        return _finalize(cfg, finalize_run, checkpoint, tracking_uri, command)
    started_at, t0 = now_iso(), time.perf_counter()
    # the code this process runs: HEAD may move while a long run trains
    fields: dict[str, Any] = {"git_commit": git_commit()}
    if resume_run is None:
        parts = assemble_run(cfg)
        ckpt_dir = Path(tempfile.mkdtemp(prefix=OWN_CKPT_PREFIX))
    else:
        point = reopen(tracking_uri, resume_run, checkpoint)
        parts = assemble_run(cfg, point.state)
        checkpoint, ckpt_dir = point.checkpoint, point.checkpoint.parent
        started_at, t0 = point.started_at, t0 - point.spent_s
        fields["resumed_after_epoch"] = point.epoch
        log.info("resuming run %s after epoch %d from %s", resume_run, point.epoch, checkpoint)
    logger = make_logger(
        cfg.tracking,
        tracking_uri,
        tags={
            "data_dir": str(parts.data.data_dir.resolve()),
            "model": cfg.model.name,
            "dataset": str(parts.data.meta.get("name", "")),
            CHECKPOINT_DIR_TAG: str(ckpt_dir.resolve()),
        },
        run_id=resume_run,
    )
    log.info("checkpoints of run %s: %s (resume with --resume-run)", logger.run_id, ckpt_dir)
    dm = datamodule_for(cfg, parts.data, parts.model, parts.objective)
    module = RecModule(parts.model, cfg.train, cfg.eval, objective=parts.objective)
    monitor = parts.objective.monitor(cfg.eval.monitor_k)
    trainer, fit = build_trainer(cfg, logger, ckpt_dir, parts.spec, monitor=monitor)
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
    ctx = RunContext(cfg, parts.data, command, started_at=started_at, t0=t0, model_spec=parts.spec)
    outcome = evaluate_and_log(ctx, module, dm, best, recorder, fields)
    # only once the run is recorded: a process killed while it evaluates leaves a run that can resume
    if ckpt_dir.name.startswith(OWN_CKPT_PREFIX):  # ours; a directory the caller chose is left alone
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    return outcome


def _finalize(
    cfg: ExperimentConfig, run_id: str, checkpoint: Path | None, tracking_uri: str, command: str
) -> TrainOutcome:
    """The finalize mode of `train_experiment`: score a stopped run's best checkpoint, no training."""
    t0 = time.perf_counter()
    best = load_checkpoint(checkpoint or run_checkpoint(tracking_uri, run_id, "best.ckpt"))
    parts = assemble_run(cfg, best)
    dm = datamodule_for(cfg, parts.data, parts.model, parts.objective)
    if isinstance(dm, SequenceDataModule):  # a labelled DataModule holds its rows already
        dm.setup()
    run = read_run(tracking_uri, run_id)
    recorder = RunRecorder(tracking_uri, run_id)
    elapsed_s = time.time() - run["start_ms"] / 1000
    last_epoch = int(run["metrics"].get("epoch", best["epoch"]))
    fields = {
        "git_commit": git_commit(),
        "epochs": last_epoch,
        "fit_s": round(elapsed_s, 1),
        "interrupted": f"fit stopped after epoch {last_epoch}",
    }
    ctx = RunContext(cfg, parts.data, command, started_at=run["start_time"], t0=t0 - elapsed_s, model_spec=parts.spec)
    module = RecModule(parts.model, cfg.train, cfg.eval, objective=parts.objective)
    return evaluate_and_log(ctx, module, dm, best, recorder, fields)
