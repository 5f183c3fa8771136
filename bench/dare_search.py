"""Stage-1 search time of DARE (issue 31): top-K behaviours by attention-embedding dot product, for
histories of 1k, 10k and 100k behaviours at d_att 16 vs 64, next to full target attention over the
whole history (softmax over every behaviour, weighted sum of d-wide representation vectors).

One ranking request: one user's history, C candidates (the retrieval stage's top-N). The search's
top-K is checked against its slow reference (a full stable sort) on the same scores in the run.

python bench/dare_search.py                      # bench/results/dare_search.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.nn.target_attention import search_topk, search_topk_reference  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402

OUT = ROOT / "bench/results/dare_search.json"


def _time_ms(fn: Any, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", nargs="+", type=int, default=[1_000, 10_000, 100_000])
    parser.add_argument("--dims", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + shlex.join(["bench/dare_search.py", *sys.argv[1:]])
    started, t0, load0 = now_iso(), time.perf_counter(), os.getloadavg()
    g = torch.Generator().manual_seed(0)
    cases = []
    for length in args.lengths:
        for d in args.dims:
            keys = torch.randn(length, d, generator=g)  # [L, d] attention embeddings of the history
            values = torch.randn(length, d, generator=g)  # [L, d] representation embeddings (full attention)
            q = torch.randn(args.candidates, d, generator=g)  # [C, d]

            def search(q: torch.Tensor = q, keys: torch.Tensor = keys) -> tuple[torch.Tensor, torch.Tensor]:
                return search_topk(q @ keys.T, args.top_k)  # [C, K]

            def full(q: torch.Tensor = q, keys: torch.Tensor = keys, values: torch.Tensor = values) -> torch.Tensor:
                return torch.softmax(q @ keys.T, dim=-1) @ values  # [C, d]

            scores = q @ keys.T
            idx, _ = search_topk(scores, args.top_k)
            ref, _ = search_topk_reference(scores, args.top_k)
            agree = bool(torch.equal(scores.gather(1, idx), scores.gather(1, ref)))
            cases.append(
                {
                    "history": length,
                    "d": d,
                    "candidates": args.candidates,
                    "top_k": args.top_k,
                    "search": _time_ms(search, args.repeats),
                    "full_attention": _time_ms(full, args.repeats),
                    "search_matches_sort": agree,
                }
            )
    record = base_record("dare_search", command, started, time.perf_counter() - t0)
    record |= {
        "torch_threads": args.threads,
        "load_average": {"start": list(load0), "end": list(os.getloadavg())},
        "note": (
            "contended: the 1-minute load average exceeded the core count; only ratios are meaningful"
            if max(load0[0], os.getloadavg()[0]) > (os.cpu_count() or 1)
            else "load average within the core count during the run"
        ),
        "cases": cases,
    }
    write_record(OUT, record)
    for c in cases:
        sys.stdout.write(
            f"L={c['history']:>6} d={c['d']:>2}: search {c['search']['median_ms']:.2f} ms, "
            f"full attention {c['full_attention']['median_ms']:.2f} ms, matches sort {c['search_matches_sort']}\n"
        )


if __name__ == "__main__":
    main()
