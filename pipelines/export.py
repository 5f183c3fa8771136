"""Export a training run as a serving bundle (model + FAISS index + items + histories) to the MLflow registry.

python -m pipelines.export --run-id <id> [--alias champion] [--name NAME] [--index flat|ivf_flat|ivf_pq|hnsw]
                           [--tracking-uri URI] [--data-dir DIR] [--nlist N --nprobe N ...]

Prints the registered version's URI. The tracking store is --tracking-uri, else $MLFLOW_TRACKING_URI,
else the embedded `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from recsys.config import ConfigError
from recsys.retrieval.export import export_run
from recsys.retrieval.index import INDEX_KINDS, IndexConfig
from recsys.tracking.config import registry_cli_setup
from recsys.tracking.registry import RegistryError, registered_line

USER_ERRORS = (ConfigError, RegistryError, FileNotFoundError, FileExistsError, KeyError, ValueError)
INDEX_FLAGS = ("nlist", "nprobe", "pq_m", "pq_nbits", "refine_factor", "hnsw_m", "ef_construction", "ef_search")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-id", required=True, help="the MLflow training run to export")
    parser.add_argument("--name", default=None, help="registered model name (default: recsys)")
    parser.add_argument("--alias", default="champion", help="alias moved to the new version ('' for none)")
    parser.add_argument("--index", default="flat", choices=INDEX_KINDS, help="FAISS index kind")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--data-dir", type=Path, default=None, help="processed dataset (default: the run's tag)")
    for flag in INDEX_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=int, default=None)
    args = parser.parse_args(argv)
    tracking_uri = registry_cli_setup(args.tracking_uri)
    try:
        index_params = {f: getattr(args, f) for f in INDEX_FLAGS if getattr(args, f) is not None}
        index_config = IndexConfig(kind=args.index, **index_params)
        ref = export_run(
            args.run_id,
            tracking_uri=tracking_uri,
            name=args.name or "recsys",
            alias=args.alias or None,
            index_config=index_config,
            data_dir=args.data_dir,
        )
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(registered_line(ref, args.alias or None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
