"""Zero-shot Recformer on the ML-1M half, CLS vs mean pooling (issue 45 item 1): no training.

The untrained model (pretrained all-MiniLM-L6-v2, the experiment's inputs: 12 history items, 160
tokens) ranks the whole catalog for the cold-item protocol's test users (seeded 10% of the items
never train; seed 0), history masked, once per pooling. Also the item table's mean pairwise cosine
(how bunched the vectors are). Writes bench/results/recformer_pooling.json.

python bench/recformer_pooling.py [--data-dir data/processed/ml-1m] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.data.split import SplitConfig  # noqa: E402
from recsys.eval.evaluate import evaluate  # noqa: E402
from recsys.models.recformer import POOLINGS, Recformer, RecformerConfig  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402

OUT = ROOT / "bench/results/recformer_pooling.json"
MAX_LEN = 12  # configs/experiment/recformer_ml-1m.yaml


def mean_pairwise_cosine(table: torch.Tensor) -> float:
    """Mean cosine over distinct pairs of unit rows [N, D]."""
    n = len(table)
    total = table.sum(0)
    return float((total @ total - n) / (n * (n - 1)))  # sum of all dot products minus the diagonal


@torch.no_grad()
def score(pooling: str, data_dir: Path, seed: int) -> dict[str, Any]:
    """Test metrics and item-table spread of the untrained model with `pooling`."""
    t0, load = time.perf_counter(), os.getloadavg()
    split = SplitConfig(cold_item_share=0.1, cold_seed=seed)
    dm = SequenceDataModule(data_dir, max_len=MAX_LEN, batch_size=16, eval_batch_size=32, seed=seed, split=split)
    dm.setup()
    torch.manual_seed(seed)
    model = Recformer(RecformerConfig(max_len=MAX_LEN, pooling=pooling), dm.n_items, load_item_features(data_dir))
    model.eval()
    result = evaluate(model, dm.test_dataloader(), split="test", split_protocol=dm.protocol)
    return {
        "pooling": pooling,
        "metrics": {k: v for k, v in result.metrics.items() if k.endswith(("@10", "@20"))},
        "protocol": result.protocol,
        "item_table_mean_pairwise_cosine": round(mean_pairwise_cosine(model.item_embeddings()[1:]), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
        "load_avg_1_5_15_start": [round(x, 2) for x in load],
        "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: configs/data/ml-1m.yaml's output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data_dir = args.data_dir or ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    started, t0 = now_iso(), time.perf_counter()
    rows = [score(pooling, data_dir, args.seed) for pooling in POOLINGS]
    command = " ".join(["python bench/recformer_pooling.py", *sys.argv[1:]])
    record = base_record("recformer_pooling_zero_shot", command, started, time.perf_counter() - t0) | {
        "dataset": "ml-1m (users 1..2999)",
        "model": "recformer, untrained (pretrained all-MiniLM-L6-v2)",
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    write_record(OUT, record)


if __name__ == "__main__":
    main()
