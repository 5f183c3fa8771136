"""FAISS indexes on a realistic large catalog: recall@k against exact search, memory, build time, latency.

python bench/retrieval_scale.py --run-id ID | --model-dir DIR --data-dir DIR [--tracking-uri URI]
                                [--sizes 1000000,10000000] [--kinds ivf_flat,ivf_pq,hnsw] [--queries 300]
                                [--hnsw-budget-s 1500] [--validation-size 200000]
                                [--workdir /tmp/recsys-retrieval-scale] [--out bench/results/retrieval_scale.json]
python bench/retrieval_scale.py --render bench/results/retrieval_scale.json       # the docs' table
python bench/retrieval_scale.py --choose-from bench/results/retrieval_scale.json [--merge OTHER.json ...]
                                # the choice of a partial run, with (size, kind) rows of later runs

The catalog is grown from the item table of a trained run (`recsys.retrieval.expansion`: rotated,
jittered copies of the real table) and the queries are the run's real user vectors (the model's
sequence representation of each user's processed history) turned into the catalog's groups. The
largest catalog is written once, group by group, to a float32 memory map; a smaller size is its
prefix (the generator's prefix property), so every size shares one generator.

Validation of the generator (`validation` in the JSON), against the real table and the old clustered
catalog: nearest-neighbour distance of items relative to the median item norm; the share of a query's
exact top-k that comes from its own group; and recall of IVF-Flat at the same share of the catalog
scanned on the real table, on a one-group expansion of it (noise only) and on the catalogs.

For each size: exact top-k of --queries queries by brute force (torch, in chunks of items), then per
index kind: build time (`build_index`, or chunked adds for HNSW so a build that would overrun
--hnsw-budget-s stops with its rate recorded), index memory (size of the serialized index, which is
what a loaded index holds), and a sweep of its search parameter (`tradeoff.search_sweep`): recall@k,
batched ms per query (all queries in one call, 2 threads) and single-query p50 / p99 (one query per
call, as the service searches). Every step records the load average before and after it: the
machine is shared, so the timings are upper bounds when the load is above the core count.
The JSON is rewritten after every step, so a run cut short leaves a partial table marked `partial`.

The default index settings are then chosen from the table (`choice`): the first (kind, value), in
order of kind preference and increasing value, that reaches --target-recall at every size, has a
single-query p99 below --p99-ms at the smallest size and an index at the largest size that fits
--memory-budget-gb.

Modules: bench/retrieval_measure.py (the real table, exact search, the generator check, one index kind
measured) and bench/retrieval_choice.py (the choice and the docs' table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when loaded by path

from retrieval_choice import choose, render_table  # noqa: E402
from retrieval_measure import (  # noqa: E402
    NOISE,
    SEED,
    exact_top,
    load_avg,
    measure_kind,
    peak_rss_gb,
    real_table,
    validate_generator,
)

from recsys.retrieval.expansion import expanded_catalog, expanded_queries, item_group  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run-id", help="a finished training run (artifact model/, tag data_dir)")
    source.add_argument("--model-dir", type=Path, help="a saved model directory instead (needs --data-dir)")
    parser.add_argument("--data-dir", type=Path, default=None, help="processed dataset (default: the run's tag)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--kinds", default="ivf_flat,ivf_pq,hnsw")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--single-queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hnsw-budget-s", type=float, default=1500.0)
    parser.add_argument(
        "--index-set", nargs="*", default=[], metavar="FIELD=INT", help="IndexConfig fields other than the defaults"
    )
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--p99-ms", type=float, default=20.0)
    parser.add_argument("--memory-budget-gb", type=float, default=8.0, help="index memory allowed at the largest size")
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--validation-size", type=int, default=200_000, help="catalog size of the generator check")
    source.add_argument("--render", type=Path, help="print the markdown table of a record and exit")
    source.add_argument("--choose-from", type=Path, help="(re)compute a record's choice, e.g. of a partial run")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="with --choose-from: records whose (size, kind) rows replace its own",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "recsys-retrieval-scale")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/retrieval_scale.json")
    args = parser.parse_args(argv)
    if args.render is not None:
        print(render_table(json.loads(args.render.read_text())), end="")
        return 0
    if args.choose_from is not None:
        record = json.loads(args.choose_from.read_text())
        sizes_seen = {n: {**e, "kinds": dict(e["kinds"])} for n, e in record["results"]["sizes"].items()}
        for other in args.merge:  # a later record's (size, kind) measurement replaces the earlier one
            for n, entry in json.loads(other.read_text())["results"]["sizes"].items():
                sizes_seen.setdefault(n, {**entry, "kinds": {}})["kinds"].update(entry["kinds"])
        wanted = {s for s in args.sizes.split(",") if s in sizes_seen}
        considered = {**record["results"], "sizes": {n: e for n, e in sizes_seen.items() if n in wanted}}
        record["results"]["choice"] = choose(considered, record["results"]["k"], args)
        record["results"]["choice"]["sizes_considered"] = sorted(wanted, key=int)
        record["results"]["choice"]["merged"] = [str(p) for p in args.merge]
        record["results"]["choice"]["command"] = "python bench/retrieval_scale.py " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        write_record(args.choose_from, record)
        print(json.dumps(record["results"]["choice"], indent=2))
        return 0
    if args.run_id is None and args.model_dir is None:
        parser.error("one of --run-id, --model-dir, --render or --choose-from is required")
    if args.model_dir is not None and args.data_dir is None:
        parser.error("--model-dir needs --data-dir")
    args.workdir.mkdir(parents=True, exist_ok=True)
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    kinds = args.kinds.split(",")
    started, t_start = now_iso(), time.perf_counter()
    command = "python bench/retrieval_scale.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    rng = np.random.default_rng(SEED)

    base, users, real_info = real_table(args)
    n_base, dim = len(base) - 1, base.shape[1]
    results: dict[str, Any] = {
        "partial": True,
        "k": args.k,
        "threads": {"batched": args.threads, "single_query": 1},
        "real_table": real_info,
        "generator": {
            "function": "recsys.retrieval.expansion.expanded_catalog",
            "noise": NOISE,
            "seed": SEED,
            "groups_of": n_base,
            "queries": "real user vectors, each rotated into a uniformly drawn group (expanded_queries)",
        },
        "sizes": {},
    }

    def save() -> None:
        record = base_record("retrieval_scale", command, started, time.perf_counter() - t_start)
        record["machine"]["note"] = "shared 2-core machine; every step records load averages (1, 5, 15 min)"
        record["peak_rss_gb"] = peak_rss_gb()
        record["results"] = results
        write_record(args.out, record)

    largest = max([*sizes, args.validation_size])
    path = args.workdir / f"catalog_{largest}_{n_base}x{dim}_noise{NOISE}_seed{SEED}_{real_info['run_id']}.f32"
    t0, load0 = time.perf_counter(), load_avg()
    exists = path.exists() and path.stat().st_size == (largest + 1) * dim * 4
    big = np.memmap(path, dtype=np.float32, mode="r+" if exists else "w+", shape=(largest + 1, dim))
    if not exists:  # written group by group into the memory map: bounded memory
        expanded_catalog(base, largest, noise=NOISE, seed=SEED, out=big)
        big.flush()
    results["generator"]["generate_s"] = "reused" if exists else round(time.perf_counter() - t0, 1)
    results["generator"]["load"] = [load0, load_avg()]
    save()

    if not args.skip_validation:
        t0 = time.perf_counter()
        print(f"{now_iso()} validating the generator (load {load_avg()})", flush=True)
        results["validation"] = validate_generator(base, users, big, args.validation_size, args.k, rng)
        results["validation"]["wall_s"] = round(time.perf_counter() - t0, 1)
        save()
        gc.collect()

    q_real = users[rng.choice(len(users), size=min(args.queries, len(users)), replace=False)]
    prepared = {}
    for n in sizes:  # exact top-k first: every index of a size is judged on the same queries
        view = big[: n + 1]
        queries, groups = expanded_queries(q_real, n, n_base, rng, seed=SEED)
        load0 = load_avg()
        exact, exact_s = exact_top(view, queries, args.k)
        prepared[n] = (view, queries, exact)
        results["sizes"][str(n)] = {
            "n_items": n,
            "queries": len(queries),
            "exact": {"wall_s": round(exact_s, 2), "ms_per_query_batched": round(exact_s * 1000 / len(queries), 2)},
            "exact_load": [load0, load_avg()],
            f"own_group_share_of_top{args.k}": round(float((item_group(exact, n_base) == groups[:, None]).mean()), 4),
            "kinds": {},
        }
        save()
    for kind in kinds:  # kind by kind, so a run cut short still has each finished kind at every size
        for n in sizes:
            print(f"{now_iso()} {n} items: {kind} (load {load_avg()})", flush=True)
            view, queries, exact = prepared[n]
            results["sizes"][str(n)]["kinds"][kind] = measure_kind(kind, view, queries, exact, args)
            save()
            gc.collect()
    results["choice"] = choose(results, args.k, args)
    results["partial"] = False
    save()
    print(json.dumps(results["choice"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
