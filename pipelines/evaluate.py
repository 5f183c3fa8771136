"""Evaluate a tracked run's model with full ranking (leave-one-out) and print the metrics.

python -m pipelines.evaluate --run-id <id> [--split test|val] [--include-seen] [--drop-newest] [--log]

The model comes from the run's `model/` artifact, the data from the run's `data_dir` tag (or
--data-dir). With --log the metrics are added to the run under `eval/<split>/...`
(`eval_without_newest/<split>/...` with --drop-newest, which ranks from each history without its
most recent item: how much the model's score rests on it), and its per-user results as the artifact
`per_user/eval_<split>.parquet` (`per_user/eval_without_newest_<split>.parquet`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from recsys.config import from_dict
from recsys.data.datamodule import SequenceDataModule
from recsys.data.split import SplitConfig
from recsys.eval.evaluate import evaluate, without_newest
from recsys.eval.per_user import item_stats, log_tables, per_user_results
from recsys.model_io import load_model
from recsys.tracking.config import DEFAULT_TRACKING_URI
from recsys.tracking.mlflow import RunRecorder, TrackingError, download_run_artifacts, read_run


def run_split(params: dict[str, str]) -> SplitConfig:
    """The split a run trained and was evaluated on, from its logged `split.*` params (leave-one-out
    for runs logged before the split was configurable)."""
    fields = {
        key.removeprefix("split."): yaml.safe_load(value) for key, value in params.items() if key.startswith("split.")
    }
    return from_dict(SplitConfig, fields, source="the run's split.* params")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--include-seen", action="store_true", help="do not mask the user's history items")
    parser.add_argument("--drop-newest", action="store_true", help="rank without each history's most recent item")
    parser.add_argument("--data-dir", help="processed dataset directory (default: the run's data_dir tag)")
    parser.add_argument("--ks", default="5,10,20")
    parser.add_argument(
        "--log",
        action="store_true",
        help="log the metrics to the run as eval/<split>/... (eval_without_newest/ with --drop-newest)",
    )
    args = parser.parse_args(argv)
    try:
        run = read_run(args.tracking_uri, args.run_id)
        data_dir = Path(args.data_dir or run["tags"].get("data_dir", ""))
        with tempfile.TemporaryDirectory() as tmp:
            model = load_model(download_run_artifacts(args.tracking_uri, args.run_id, "model", Path(tmp)))
        dm = SequenceDataModule(
            data_dir, max_len=model.max_len, batch_size=1, eval_batch_size=1024, seed=0, split=run_split(run["params"])
        )
        dm.setup()
        loader = dm.test_dataloader() if args.split == "test" else dm.val_dataloader()
        batches = (without_newest(b) for b in loader) if args.drop_newest else loader
        ks = tuple(int(k) for k in args.ks.split(","))
        result = evaluate(
            model, batches, split=args.split, ks=ks, exclude_seen=not args.include_seen, split_protocol=dm.protocol
        )
    except (TrackingError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # mlflow raises its own exception types for unknown runs
        print(f"error: cannot evaluate run {args.run_id!r}: {err}", file=sys.stderr)
        return 1
    if args.log:
        prefix = "eval_without_newest" if args.drop_newest else "eval"
        recorder = RunRecorder(args.tracking_uri, args.run_id)
        recorder.log_metrics({f"{prefix}/{k}": v for k, v in result.metrics.items()})
        split = dm.sequence_split
        if split is not None:
            holdout = split.test if args.split == "test" else split.validation
            users = per_user_results(result, holdout, item_stats(split, dm.n_items))
            log_tables(recorder, {f"{prefix}_{args.split}": users})
    protocol = {**result.protocol, "history": "without its newest item" if args.drop_newest else "whole"}
    print(json.dumps({"protocol": protocol, "metrics": result.metrics}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
