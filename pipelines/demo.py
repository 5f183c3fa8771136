"""The main job end to end on the embedded defaults: data -> train -> evaluate -> export -> serve a query.

python -m pipelines.demo [--config configs/experiment/demo.yaml] [key=value ...]

Uses the local MLflow store (sqlite:///mlflow.db + ./mlartifacts) unless MLFLOW_TRACKING_URI is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines import evaluate, export, prepare_data, train
from pipelines.serve_demo import run_demo_query
from recsys.tracking.config import DEFAULT_TRACKING_URI
from recsys.train.experiment import load_experiment

MODEL_NAME = "recsys-demo"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/experiment/demo.yaml")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    cfg = load_experiment(args.config, args.overrides)

    print(f"== 1/5 data: {cfg.data}", flush=True)
    if prepare_data.main(["--config", cfg.data]) != 0:
        return 1
    print("== 2/5 train", flush=True)
    results = "bench/results/tmp/demo_train.json"
    if train.main(["--config", args.config, "--results-json", results, *args.overrides]) != 0:
        return 1
    run_id = json.loads(Path(results).read_text())["mlflow_run_id"]
    print(f"== 3/5 evaluate run {run_id}", flush=True)
    if evaluate.main(["--run-id", run_id, "--tracking-uri", uri, "--ks", "10"]) != 0:
        return 1
    print("== 4/5 export to FAISS + MLflow registry", flush=True)
    if export.main(["--run-id", run_id, "--name", MODEL_NAME, "--alias", "champion", "--tracking-uri", uri]) != 0:
        return 1
    print("== 5/5 serve and query one user", flush=True)
    run_demo_query(f"models:/{MODEL_NAME}@champion", uri, user_id=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
