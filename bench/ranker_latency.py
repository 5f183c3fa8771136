"""Latency a ranking stage adds per request: `RankingStage.rerank` (what the service runs after retrieval)
on stage 1's top-N for one user at a time, against stage 1's own work for the same request (encode the
history, score the whole catalog, mask the history, take the top-N), in the same process and run.

python bench/ranker_latency.py --ranker <model dir> --lists <candidate-list data config> [--requests 500]

Writes bench/results/ranker_latency.json: p50 / p99 of each, the ratio, threads and load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import load_config  # noqa: E402
from recsys.data.candidate_lists import CandidateListConfig, candidate_lists, retrieve  # noqa: E402
from recsys.data.datasets import EvalBatch  # noqa: E402
from recsys.model_io import load_model, read_spec  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.retrieval.ranking import RankingStage  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranker", required=True, help="a ranker directory (recsys.model_io)")
    p.add_argument("--lists", required=True, help="a candidate-list data config (its stage 1 and users)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the service's default is 1 per worker)")
    p.add_argument("--out", default=str(ROOT / "bench/results/ranker_latency.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started, t0 = now_iso(), time.perf_counter()
    config = load_config(CandidateListConfig, args.lists)
    test = candidate_lists(config).split("test")
    stage1 = load_model(Path(config.stage1))
    assert isinstance(stage1, SequentialRecommender)
    ranker = load_model(Path(args.ranker), kind="ranker").eval()
    stage = RankingStage(str(read_spec(Path(args.ranker))["name"]), ranker, config.top_n, ranker.max_len)
    rng = np.random.default_rng(0)
    users = rng.choice(len(test.items), size=min(args.requests, len(test.items)), replace=False)
    retrieval_ms, rerank_ms = [], []
    for warm, u in enumerate([*users[:20], *users]):
        items = test.items[u : u + 1]
        history = items[0][items[0] != 0]
        batch = EvalBatch(items, torch.zeros(1, dtype=torch.long), history[None])
        start = time.perf_counter()
        lists = retrieve(stage1, batch, config.top_n)
        mid = time.perf_counter()
        stage.rerank(history.numpy(), lists.candidates[0].numpy(), lists.stage1[0].numpy())
        end = time.perf_counter()
        if warm >= 20:  # the first 20 warm up
            retrieval_ms.append(1e3 * (mid - start))
            rerank_ms.append(1e3 * (end - mid))
    result: dict[str, Any] = {
        "ranker": args.ranker,
        "ranker_config": read_spec(Path(args.ranker))["config"],
        "top_n": config.top_n,
        "history_len": ranker.max_len,
        "threads": args.threads,
        "stage1_retrieval": percentiles(retrieval_ms),
        "added_by_ranker": percentiles(rerank_ms),
        "load_average": os.getloadavg(),
    }
    result["p99_ratio_ranker_to_retrieval"] = result["added_by_ranker"]["p99_ms"] / result["stage1_retrieval"]["p99_ms"]
    record = base_record("ranker_latency", " ".join(sys.argv), started, time.perf_counter() - t0) | result
    write_record(Path(args.out), record)
    print(result["added_by_ranker"], result["stage1_retrieval"])


if __name__ == "__main__":
    main()
