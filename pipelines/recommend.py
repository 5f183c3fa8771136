"""Write the service's top-k of every user of a registered model, or of a file of queries, to parquet.

python -m pipelines.recommend --model-uri models:/<name>@<alias> --out topk.parquet
                              [--queries users.parquet|users.csv] [--k 10] [--chunk-size 1024]
                              [--ranker-uri models:/<ranker>@<alias> [--ranker-top-n N]]
                              [--include-seen] [--tracking-uri URI]

Without --queries: every user the model's dataset holds. A queries file has a `user_id` column, a
`history` column (a list of item ids, oldest first; in csv one string of ids separated by spaces),
or both (the user's stored history, then those items). The answers are the service's
(`POST /recommend`) for the same query, with the same ranking stage: columns user_id (or row, the
query's row in the file, for histories), rank, item_id, score. An unknown user or item, an empty
query, a missing alias or an unreadable file ends with exit code 1 and one line naming it, before
anything is written. The tracking store is --tracking-uri, else $MLFLOW_TRACKING_URI, else the
embedded `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from recsys.retrieval.bundle import BundleError
from recsys.serve.offline import QueryError, all_users, read_queries, write_recommendations
from recsys.serve.settings import ServeSettings
from recsys.serve.state import load_model_version
from recsys.tracking.config import registry_cli_setup
from recsys.tracking.registry import RegistryError

USER_ERRORS = (QueryError, RegistryError, BundleError, FileNotFoundError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", required=True, help="models:/<name>@<alias>, models:/<name>/<n> or a bundle dir")
    parser.add_argument("--out", type=Path, required=True, help="the parquet file to write")
    parser.add_argument("--queries", type=Path, default=None, help="parquet or csv of queries (default: every user)")
    parser.add_argument("--k", type=int, default=10, help="items per query")
    parser.add_argument("--chunk-size", type=int, default=1024, help="queries scored together")
    parser.add_argument("--ranker-uri", default=None, help="a ranking stage, as RECSYS_SERVE_RANKER_URI")
    parser.add_argument("--ranker-top-n", type=int, default=None, help="retrieval candidates the ranker re-orders")
    parser.add_argument("--include-seen", action="store_true", help="keep items of the query's history")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    tracking_uri = registry_cli_setup(args.tracking_uri)
    try:
        settings = ServeSettings(
            model_uri=args.model_uri,
            tracking_uri=tracking_uri,
            ranker_uri=args.ranker_uri,
            **({"ranker_top_n": args.ranker_top_n} if args.ranker_top_n is not None else {}),
        )
        queries = read_queries(args.queries) if args.queries is not None else None
        model = load_model_version(settings)
        if queries is None:
            queries = all_users(model.recommender.bundle)
        with _progress(queries.height) as bar:
            written = write_recommendations(
                model,
                queries,
                args.out,
                k=args.k,
                chunk_size=args.chunk_size,
                exclude_seen=not args.include_seen,
                progress=bar.update,
            )
    except ValidationError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {written} rows ({queries.height} queries, top-{args.k}) to {args.out}")
    return 0


def _progress(total: int) -> tqdm:
    """A progress bar on stderr over `total` queries (silent when stderr is not a terminal)."""
    return tqdm(total=total, unit="query", disable=None, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
