"""The one-time cost of embedding the ML-1M half catalog from item text (issue 44 item 1): SmolLM2-135M
(all 30 blocks, the last block's states; mean and last-token pooling come from the same pass) and
all-MiniLM-L6-v2, items per second, always computed (a cached result is not read). A full-catalog
measurement also stores its vectors in the cache the models read (`data/cache/item_vectors`). On a
shared machine a subset (`--items`) keeps the run short; the full-catalog time is projected from its
rate and labelled so.

python bench/llm_item_vectors.py [--items 256] [--minilm-items 0] [--threads 2] [--note TEXT]
                                 [--out bench/results/llm_item_vectors.json]
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

from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.nn.item_vectors import POOLINGS, cached_item_vectors, item_sentence, pooled_hidden_states  # noqa: E402
from recsys.nn.pretrained import MINILM, SMOLLM2, model_path  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402


def measure(texts: list[str], encoder: str, n_catalog: int, cache_dir: Path, layer: int) -> dict[str, Any]:
    """Seconds to embed `texts` with `encoder` (both poolings in one pass), its model load, and the rate."""
    path = model_path(encoder, cache_dir)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    if len(texts) == n_catalog:  # the whole catalog: what the models read, stored for them
        vectors = {"mean": cached_item_vectors(texts, encoder, cache_dir, layer=layer, refresh=True)[0]}
    else:
        vectors = pooled_hidden_states(texts, path, layer=layer)
    seconds = time.perf_counter() - t0  # includes loading the weights (a one-time cost too)
    rate = len(texts) / seconds
    return {
        "encoder": encoder,
        "layer": layer,
        "poolings": list(POOLINGS),  # one forward pass gives every pooling: the cost is shared
        "width": int(vectors["mean"].shape[1]),
        "items": len(texts),
        "seconds": round(seconds, 2),
        "items_per_s": round(rate, 2),
        "catalog_items": n_catalog,
        "catalog_seconds": round(n_catalog / rate, 1),
        "catalog_seconds_projected": len(texts) < n_catalog,  # True: from the subset's rate
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/processed/ml-1m")
    parser.add_argument("--items", type=int, default=256, help="SmolLM2: the first this many items (0 = all)")
    parser.add_argument("--minilm-items", type=int, default=0, help="MiniLM: the first this many items (0 = all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="data/cache", help="where SmolLM2's converted checkpoint lives")
    parser.add_argument("--out", default="bench/results/llm_item_vectors.json")
    parser.add_argument("--note", default="shared machine (see loadavg)", help="what else was running")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started_at, t0 = now_iso(), time.perf_counter()
    features = load_item_features(args.data)
    texts = [item_sentence(features, i) for i in range(1, features.n_items + 1)]
    rows = [
        measure(texts[: args.items or None], SMOLLM2, len(texts), Path(args.cache_dir), -1),
        measure(texts[: args.minilm_items or None], MINILM, len(texts), Path(args.cache_dir), -1),
    ]
    record = base_record("llm_item_vectors", " ".join(["python", *sys.argv]), started_at, time.perf_counter() - t0)
    record |= {
        "dataset": "ml-1m (half: users 1..2999)",
        "threads": args.threads,
        "text_example": texts[0],
        "note": f"{args.note}; the timed call loads the weights, tokenizes and runs one pass",
        "rows": rows,
    }
    write_record(args.out, record)
    for row in rows:
        sys.stdout.write(f"{row['encoder']}: {row['items_per_s']} items/s, catalog {row['catalog_seconds']} s\n")


if __name__ == "__main__":
    main()
