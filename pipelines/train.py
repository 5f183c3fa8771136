"""Train one experiment and track it in MLflow.

python -m pipelines.train --config configs/experiment/<exp>.yaml [key=value ...] [--results-json PATH] [--prepare]
python -m pipelines.train --config <same> --resume-run RUN_ID [--checkpoint last.ckpt]     # continue a stopped run
python -m pipelines.train --config <same> --finalize-run RUN_ID [--checkpoint best.ckpt]    # or just score its best

Training reads the processed dataset of the experiment's data config and never writes it: run
`python -m pipelines.prepare_data --config <data config>` first, or pass --prepare to run it here.

A run keeps best.ckpt and last.ckpt (written every epoch) in the directory its `checkpoint_dir` tag
names until it finishes; that is where --resume-run and --finalize-run look by default.

The tracking store is the config's `tracking.tracking_uri`, else $MLFLOW_TRACKING_URI, else the
embedded `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

from pipelines import prepare_data
from recsys.config import ConfigError
from recsys.data.errors import DataError
from recsys.eval.per_user import beside_record, write_tables
from recsys.tracking.config import DEFAULT_TRACKING_URI
from recsys.tracking.mlflow import TrackingError
from recsys.tracking.records import write_record
from recsys.train.experiment import ExperimentConfig, load_experiment
from recsys.train.module import NonFiniteLossError
from recsys.train.run import train_experiment

USER_ERRORS = (ConfigError, DataError, TrackingError, NonFiniteLossError, FileNotFoundError, KeyError, ValueError)


def tracking_uri_for(cfg: ExperimentConfig) -> str:
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/experiment/<exp>.yaml")
    parser.add_argument(
        "--results-json",
        help="also write the results record to this path (and its per-user results to <stem>.per_user/ beside it)",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="run the ETL of the experiment's data config first (pipelines.prepare_data)",
    )
    stopped = parser.add_mutually_exclusive_group()
    stopped.add_argument("--resume-run", metavar="RUN_ID", help="continue this stopped run's fit from its checkpoint")
    stopped.add_argument("--finalize-run", metavar="RUN_ID", help="evaluate and log the best checkpoint of this run")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint to read (default: the run's own)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_epochs=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m pipelines.train " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    try:
        cfg = load_experiment(args.config, args.overrides)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # DDP starts each further local rank by re-running this command (LOCAL_RANK > 0): only rank 0 prepares
    first_rank = int(os.environ.get("LOCAL_RANK", "0")) == 0
    if args.prepare and first_rank and prepare_data.main(["--config", cfg.data]) != 0:
        return 1
    try:
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
        uri = tracking_uri_for(cfg)
        outcome = train_experiment(
            cfg,
            tracking_uri=uri,
            command=command,
            resume_run=args.resume_run,
            finalize_run=args.finalize_run,
            checkpoint=args.checkpoint,
        )
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if outcome is None:  # a non-zero DDP rank
        return 0
    if args.results_json:
        write_record(args.results_json, outcome.record)
        write_tables(beside_record(args.results_json), outcome.per_user)
    print(f"mlflow run: {outcome.run_id} ({outcome.tracking_uri})")
    print(json.dumps({k: round(v, 4) for k, v in outcome.metrics.items() if "@10" in k or "@20" in k}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
