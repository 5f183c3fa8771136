"""Raw log -> processed dataset directory.

python -m pipelines.prepare_data --config configs/data/ml-1m.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from recsys.config import ConfigError, load_config
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
        print(f"error: {err}", file=sys.stderr)
        return 1
    meta = result.meta
    rows = meta["rows"]
    print(
        f"{cfg.name}: {meta['n_users']:,} users, {meta['n_items']:,} items, "
        f"{meta['n_interactions']:,} interactions ({rows['read']:,} rows read, {rows['rejected']:,} rejected, "
        f"k-core rounds {meta['filters']['k_core']['rounds']})\n"
        f"output: {result.output_dir}  time: {result.wall_s:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
