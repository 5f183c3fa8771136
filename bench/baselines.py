"""The 3-seed baselines every ML-1M half comparison uses: SASRec and BERT4Rec with their shipped configs
(leave-one-out, full ranking, history masked), one tracked run per seed, summarised.

python bench/baselines.py --variants sasrec bert4rec --seeds 0 1 2     # runs, one at a time
python bench/baselines.py --summary                                      # bench/results/baselines_ml-1m.json

Each run is `python -m pipelines.train --config configs/experiment/<variant>_ml-1m.yaml train.seed=N`
with its record (resolved config, protocol, fit time) in bench/results/experiments/baselines/. The
summary has `rows` of `{variant, seeds, "test/ndcg@10": {mean, sd, median, values}, "test/hr@10": ...,
fit_s}` from the records that exist; a variant with no record is left out (and said so in `missing`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import train  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402

RECORDS = ROOT / "bench/results/experiments/baselines"
SUMMARY = ROOT / "bench/results/baselines_ml-1m.json"
METRICS = ("test/ndcg@10", "test/hr@10")


def run(variant: str, seed: int, extra: list[str]) -> int:
    """Train one seed of a variant through `pipelines.train`, its record under RECORDS."""
    out = RECORDS / f"{variant}_seed{seed}.json"
    config = f"configs/experiment/{variant}_ml-1m.yaml"
    return train.main(["--config", config, "--results-json", str(out), f"train.seed={seed}", *extra])


def write_summary(variants: list[str]) -> dict[str, Any]:
    """Mean, sd, median and values per variant over the seeds recorded."""
    rows, missing = [], []
    for variant in variants:
        records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob(f"{variant}_seed*.json"))]
        if not records:
            missing.append(variant)
            continue
        row: dict[str, Any] = {"variant": variant, "seeds": [r["config"]["train"]["seed"] for r in records]}
        row |= {m: summarize([r["metrics"][m] for r in records]) for m in METRICS}
        row["fit_s"] = summarize([r["fit_s"] for r in records])
        row["records"] = [str(p.relative_to(ROOT)) for p in sorted(RECORDS.glob(f"{variant}_seed*.json"))]
        rows.append(row)
    record = base_record("baselines_ml-1m", "python bench/baselines.py --summary", now_iso(), 0.0) | {
        "dataset": "ml-1m-half",
        "protocol": "leave-one-out, full ranking over the catalog, history items masked",
        "rows": rows,
        "missing": missing,
    }
    write_record(SUMMARY, record)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["sasrec", "bert4rec"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--summary", action="store_true", help="only write the summary from the records")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. train.progress_bar=false)")
    args = p.parse_args()
    os.chdir(ROOT)
    if not args.summary:
        for variant in args.variants:
            for seed in args.seeds:
                if run(variant, seed, args.overrides) != 0:
                    raise SystemExit(f"{variant} seed {seed} failed")
    write_summary(args.variants)


if __name__ == "__main__":
    main()
