"""Train a ranker through the one run path (`pipelines.train`'s), then register it so the service can
re-rank retrieval candidates with `models:/<name>@<alias>`.

python -m pipelines.train_ranker --config configs/experiment/dare_ml-1m.yaml [key=value ...]
                                 [--name NAME] [--alias champion]

The experiment's `data` is a candidate-list config (`configs/data/candidates/`: a stage-1 retrieval
model's top-N lists, the ranker trained listwise as it will serve) or a labelled data config (built
from its processed dataset when missing); its `model` a ranker of `recsys.registry.RANKERS`. The run
is tracked like any training run (per-epoch validation: two-stage NDCG@10 on lists, AUC on labelled
rows; the best epoch's test metrics; the model saved by
`recsys.model_io`); its `model/` directory is registered as the next version of --name (default: the
ranker's registry name) with --alias moved to it. Serve it after a retrieval model trained on the same
processed dataset with `RECSYS_SERVE_RANKER_URI=models:/<name>@<alias>`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.train import USER_ERRORS, tracking_uri_for
from recsys.tracking.config import registry_cli_setup
from recsys.tracking.mlflow import download_run_artifacts
from recsys.tracking.registry import (
    ModelVersionRef,
    RegistryError,
    register_directory,
    registered_line,
    run_experiment_and_tags,
)
from recsys.train.experiment import ExperimentConfig, load_experiment
from recsys.train.run import train_experiment


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/experiment/<ranker>_<data>.yaml")
    parser.add_argument("--name", default=None, help="registered model name (default: the ranker's registry name)")
    parser.add_argument("--alias", default="champion", help="alias moved to the new version ('' for none)")
    parser.add_argument("--tracking-uri", default=None, help="default: the config's, else $MLFLOW_TRACKING_URI")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. model.params.d_att=4")
    args = parser.parse_args(argv)
    try:
        cfg = load_experiment(args.config, args.overrides)
        uri = registry_cli_setup(args.tracking_uri or tracking_uri_for(cfg))
        ref = train_and_register(cfg, uri, args.name or cfg.model.name, args.alias or None)
    except (*USER_ERRORS, RegistryError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(registered_line(ref, args.alias or None))
    return 0


def train_and_register(cfg: ExperimentConfig, tracking_uri: str, name: str, alias: str | None) -> ModelVersionRef:
    """Train the experiment `cfg` (a ranker) and register its saved model as the next version of `name`."""
    outcome = train_experiment(cfg, tracking_uri=tracking_uri, command="python -m pipelines.train_ranker")
    if outcome is None:  # a non-zero DDP rank
        raise RegistryError("only the first process registers the ranker", public="not the first process")
    folder = download_run_artifacts(tracking_uri, outcome.run_id, "model")
    experiment_id, _ = run_experiment_and_tags(tracking_uri, outcome.run_id)
    return register_directory(
        tracking_uri,
        folder,
        name,
        experiment_id=experiment_id,
        alias=alias,
        run_name=f"register_{cfg.model.name}",
        tags={"source_run_id": outcome.run_id, "kind": "ranker", "data": cfg.data},
        description=f"{cfg.model.name} ranker trained on {cfg.data} (run {outcome.run_id})",
    )


if __name__ == "__main__":
    sys.exit(main())
