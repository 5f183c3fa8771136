"""Raw log -> processed dataset directory.

python -m pipelines.prepare_data --config configs/data/ml-1m.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from recsys.config import ConfigError, load_config
from recsys.data import schema as S
from recsys.data.config import DataConfig
from recsys.data.errors import DataError
from recsys.data.etl import run_etl


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ETL for one data config; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/data/<name>.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. min_user_interactions=10")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(DataConfig, args.config, args.overrides)
        result = run_etl(cfg)
    except (DataError, ConfigError, FileNotFoundError) as err:
        message = " ".join(str(err).split())  # one line, whatever the message holds
        print(f"error: {message}", file=sys.stderr)
        return 1
    meta = result.meta
    rows = meta["rows"]
    print(
        f"{cfg.name}: {meta['n_users']:,} users, {meta['n_items']:,} items, "
        f"{meta['n_interactions']:,} interactions ({rows['read']:,} rows read, {rows['rejected']:,} rejected, "
        f"k-core rounds {meta['filters']['k_core']['rounds']})\n"
        f"item features: {_describe_features(meta)}\n"
        f"output: {result.output_dir}  time: {result.wall_s:.2f}s"
    )
    return 0


def _describe_features(meta: dict[str, Any]) -> str:
    """'title (3,266 items), genres (3,266 items)' or 'none'."""
    features = meta[S.ITEM_FEATURES]
    filled = features["items_with_value"]
    return ", ".join(f"{name} ({filled[name]:,} items)" for name in features["columns"]) or "none"


if __name__ == "__main__":
    sys.exit(main())
