"""Finishing a run whose fit was stopped: evaluate and log its best checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

from recsys.data.schema import META_FILE
from recsys.tracking.mlflow import RunRecorder, read_run
from recsys.train.experiment import ExperimentConfig
from recsys.train.fit import datamodule_for, ensure_processed
from recsys.train.module import RecModule
from recsys.train.record import RunContext, TrainOutcome, evaluate_and_log
from recsys.train.resume import load_checkpoint, model_for_checkpoint


def finalize_from_checkpoint(
    cfg: ExperimentConfig, *, run_id: str, checkpoint: Path, tracking_uri: str, command: str = ""
) -> TrainOutcome:
    """Evaluate and log the best checkpoint of a run whose fit was stopped before it ended.

    For a run cut off by a time limit: the checkpoint (selected on validation) is evaluated on
    val and test exactly as at the end of `recsys.train.run.train_experiment`, logged into the same
    MLflow run, and the record says the run was interrupted and at which epoch. The model is
    rebuilt from the config the checkpoint stores.
    """
    t0 = time.perf_counter()
    data_dir = ensure_processed(cfg.data)
    meta = json.loads((data_dir / META_FILE).read_text())
    best = load_checkpoint(checkpoint)
    model = model_for_checkpoint(cfg, int(meta["n_items"]), best)
    dm = datamodule_for(cfg, data_dir, model)
    dm.setup()
    run = read_run(tracking_uri, run_id)
    recorder = RunRecorder(tracking_uri, run_id)
    elapsed_s = time.time() - run["start_ms"] / 1000
    last_epoch = int(run["metrics"].get("epoch", best["epoch"]))
    fields = {
        "epochs": last_epoch,
        "fit_s": round(elapsed_s, 1),
        "interrupted": f"fit stopped after epoch {last_epoch}",
    }
    ctx = RunContext(cfg, data_dir, meta, command, started_at=run["start_time"], t0=t0 - elapsed_s)
    module = RecModule(model, cfg.train, cfg.eval)
    return evaluate_and_log(ctx, module, dm, best, recorder, fields)
