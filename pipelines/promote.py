"""Promote a registered model version: point an alias (default `champion`) at it.

python -m pipelines.promote --name recsys --version 2 [--alias champion] [--tracking-uri URI]

A service following `models:/<name>@<alias>` with RECSYS_SERVE_POLL_INTERVAL_S > 0 loads the version
at its next poll, without downtime. The tracking store is --tracking-uri, else $MLFLOW_TRACKING_URI,
else the embedded `sqlite:///mlflow.db`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from recsys.tracking.config import resolve_tracking_uri
from recsys.tracking.registry import RegistryError, resolve_model_uri, set_alias


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--version", required=True, help="the version to promote")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--tracking-uri", default=None)
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    try:
        ref = resolve_model_uri(uri, f"models:/{args.name}/{args.version}")  # an unknown version: one clear line
        set_alias(uri, ref.name, args.alias, ref.version)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # mlflow raises its own exception types when the registry refuses
        print(f"error: cannot move {args.alias} of {args.name}: {err}", file=sys.stderr)
        return 1
    print(f"models:/{ref.name}@{args.alias} -> version {ref.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
