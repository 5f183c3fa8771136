"""Train a ranker (DARE, TWIN, DIN; TWIN + projections is twin with d_proj > 0) on a labelled-candidate
dataset, track it in MLflow and register it, so the service can re-rank retrieval candidates with
`models:/<name>@<alias>`.

python -m pipelines.train_ranker [--data configs/data/labelled/ml-1m_paper.yaml] [--ranker dare|twin|din]
                                 [--set d_att=16 --set d_rep=16 ...] [--epochs 3] [--batch-size 256]
                                 [--lr 1e-3] [--steps-per-epoch N] [--seed 0]
                                 [--name dare] [--alias champion] [--experiment rankers] [--tracking-uri URI]

The labelled dataset is built from its processed dataset when missing (seeded: the same samples every
time). One MLflow run (experiment --experiment) gets the parameters, each epoch's train loss and
validation AUC / GAUC / log loss, the test metrics of the best-validation epoch and the ranker
(`ranker/`, saved by `recsys.model_io`: model.json + state_dict.pt); the same directory is registered as
the next version of model --name, --alias moved to it. Serve it after a retrieval model with
`RECSYS_SERVE_RANKER_URI=models:/<name>@<alias>`. The ranker's item ids are those of the processed
dataset, so the retrieval model must be trained on the same processed dataset.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from recsys.config import ConfigError, apply_overrides, load_config, to_dict
from recsys.data.item_features import load_item_features
from recsys.data.labelled import LABELLED_META, LabelledConfig, build_labelled, load_labelled
from recsys.model_io import resolved_config, save_model
from recsys.models.ranker import RankerData
from recsys.registry import RANKERS, choose_model
from recsys.tracking.config import TrackingConfig, registry_cli_setup
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.registry import (
    ModelVersionRef,
    RegistryError,
    register_directory,
    registered_line,
    run_experiment_and_tags,
)
from recsys.train.labelled import LabelledTrainConfig, evaluate_labelled, fit_labelled

USER_ERRORS = (ConfigError, RegistryError, FileNotFoundError, KeyError, ValueError, TypeError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="configs/data/labelled/ml-1m_paper.yaml", help="labelled data config")
    parser.add_argument("--ranker", default="dare", help=f"registered ranker: {', '.join(sorted(RANKERS))}")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    defaults = LabelledTrainConfig()
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="registered model name (default: the ranker's name)")
    parser.add_argument("--alias", default="champion", help="alias moved to the new version ('' for none)")
    parser.add_argument("--experiment", default="rankers")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    tracking_uri = registry_cli_setup(args.tracking_uri)
    try:
        ref = train_and_register(args, tracking_uri)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(registered_line(ref, args.alias or None))
    return 0


def train_and_register(args: argparse.Namespace, tracking_uri: str) -> ModelVersionRef:
    """Train the ranker `args` describe, record it in one MLflow run and register it; its version ref."""
    data_cfg = load_config(LabelledConfig, args.data)
    root = Path(data_cfg.output_dir)
    data = load_labelled(root if (root / LABELLED_META).is_file() else build_labelled(data_cfg))
    features = load_item_features(data_cfg.processed)
    params = apply_overrides({}, args.sets)  # key=value, values read as YAML (16, [200, 80])
    # `auto` side features (genres, history ratings) resolved from the data
    choice = choose_model(args.ranker, params, table=RANKERS).resolved(RankerData.of_labelled(data, features))
    torch.manual_seed(args.seed)
    model = choice.build(data.n_items, features)
    train_cfg = LabelledTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        steps_per_epoch=args.steps_per_epoch,
        max_history=model.max_len,
    )
    logger = make_logger(
        TrackingConfig(experiment=args.experiment, run_name=f"{args.ranker}_seed{args.seed}"), tracking_uri
    )
    recorder = RunRecorder(tracking_uri, str(logger.run_id))
    resolved = resolved_config(model)
    recorder.log_params(
        {
            "data": to_dict(data_cfg),
            "ranker": args.ranker,
            "model": resolved,
            "train": to_dict(train_cfg),
            "seed": args.seed,
        }
    )
    fit = fit_labelled(
        model,
        data,
        train_cfg,
        generator=torch.Generator().manual_seed(args.seed),
        on_epoch=lambda epoch, m: recorder.log_metrics(m, step=epoch),
    )
    recorder.log_metrics(
        {f"best_{k}": v for k, v in fit.history[fit.best_epoch].items() if k.startswith("val/")}
        | evaluate_labelled(model, data, "test", train_cfg)
        | {"best_epoch": float(fit.best_epoch)}
    )
    with tempfile.TemporaryDirectory(prefix="recsys-ranker-") as tmp:
        folder = Path(tmp) / "ranker"
        save_model(model, args.ranker, resolved, data.n_items, folder)
        recorder.log_dir(folder, "ranker")
        recorder.finish()
        experiment_id, _ = run_experiment_and_tags(tracking_uri, str(logger.run_id))
        return register_directory(
            tracking_uri,
            folder,
            args.name or args.ranker,
            experiment_id=experiment_id,
            alias=args.alias or None,
            run_name=f"register_{args.ranker}",
            tags={"source_run_id": str(logger.run_id), "kind": "ranker", "data": str(data_cfg.output_dir)},
            description=f"{args.ranker} ranker trained on {data_cfg.output_dir} (run {logger.run_id})",
        )


if __name__ == "__main__":
    sys.exit(main())
