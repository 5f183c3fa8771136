"""Processed dataset -> labelled-candidate dataset for rankers (DARE): the paper recipe or explicit labels.

python -m pipelines.prepare_labelled --config configs/data/labelled/ml-1m_paper.yaml [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from recsys.config import ConfigError, load_config
from recsys.data.errors import DataError
from recsys.data.labelled import LABELLED_META, LabelledConfig, build_labelled


def main(argv: Sequence[str] | None = None) -> int:
    """Build one labelled dataset; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/data/labelled/<name>.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = build_labelled(load_config(LabelledConfig, args.config, args.overrides))
    except (DataError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    meta = json.loads((out / LABELLED_META).read_text())
    print(f"{out}: {meta['n_users']:,} users, samples {meta['samples']}, positive rate {meta['positive_rate']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
