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
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl
import torch

from recsys.data import schema as S
from recsys.model_io import load_model
from recsys.retrieval.expansion import expanded_catalog, expanded_queries, item_group
from recsys.retrieval.index import IndexConfig, ItemIndex, build_index, exact_search, recall_at_k
from recsys.retrieval.synthetic import clustered_catalog
from recsys.retrieval.tradeoff import search_sweep
from recsys.tracking.config import DEFAULT_TRACKING_URI
from recsys.tracking.mlflow import download_run_artifacts
from recsys.tracking.records import base_record, now_iso, write_record
from recsys.tracking.registry import run_experiment_and_tags

REPO = Path(__file__).resolve().parents[1]
SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ivf_flat": ("nprobe", (8, 16, 32, 64, 128, 256, 512)),
    "ivf_pq": ("nprobe", (16, 32, 64, 128, 256, 512)),
    "hnsw": ("ef_search", (64, 128, 256, 512)),
}
PQ_REFINE = (16, 64)  # IVF-PQ is swept at each of these refine factors (k_factor of IndexRefineFlat)
KIND_PREFERENCE = ("ivf_flat", "ivf_pq", "hnsw")  # ties in the choice go to the simpler index
NOISE = 0.5  # jitter = half of an item's nearest-neighbour distance: never a copy, the neighbourhood kept
SEED = 0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1e6, 3)
    return float("nan")


def _peak_rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)


# ----------------------------------------------------------------------------- real table and queries
def real_table(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The run's item table [n+1, D] and the real user vectors [U, D] (every user of its processed data)."""
    if args.model_dir is not None:
        model, data_dir = load_model(args.model_dir), args.data_dir
    else:
        _, tags = run_experiment_and_tags(args.tracking_uri, args.run_id)
        model = load_model(download_run_artifacts(args.tracking_uri, args.run_id, "model", args.workdir / "run"))
        data_dir = args.data_dir or Path(tags["data_dir"])
    item_emb = model.item_embeddings().detach().float().numpy()
    histories = pl.read_parquet(data_dir / "sequences.parquet")[S.ITEMS].to_list()
    length = int(model.max_len)
    items = torch.zeros((len(histories), length), dtype=torch.long)  # [U, L], left-padded
    for row, hist in enumerate(histories):
        tail = hist[-length:]
        items[row, length - len(tail) :] = torch.tensor(tail)
    with torch.inference_mode():
        users = torch.cat([model.sequence_representation(b, b != 0) for b in items.split(512)]).float().numpy()
    info = {
        "run_id": args.run_id,
        "model_dir": str(args.model_dir),
        "data_dir": str(data_dir),
        "n_items": len(item_emb) - 1,
        "dim": item_emb.shape[1],
    }
    info["n_users"], info["max_len"] = len(users), length
    return np.ascontiguousarray(item_emb), np.ascontiguousarray(users), info


def exact_top(emb: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int = 1 << 18) -> tuple[np.ndarray, float]:
    """Exact top-k item_idx [B, k] over a (memory-mapped) catalog [n+1, D], item chunk by item chunk."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    best_s = torch.full((len(q), k), -torch.inf)
    best_i = torch.zeros((len(q), k), dtype=torch.long)
    t0 = time.perf_counter()
    for start in range(0, len(emb), chunk_rows):
        block = torch.from_numpy(np.ascontiguousarray(emb[start : start + chunk_rows]))
        scores = q @ block.T  # [B, chunk]
        if start == 0:
            scores[:, 0] = -torch.inf  # padding row
        s, i = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        merged_s, pos = torch.topk(torch.cat([best_s, s], 1), k, dim=1)
        best_i = torch.gather(torch.cat([best_i, i + start], 1), 1, pos)
        best_s = merged_s
    return best_i.numpy(), time.perf_counter() - t0


# ----------------------------------------------------------------------------- generator validation
def nn_ratio(emb: np.ndarray, rows: np.ndarray, chunk_rows: int = 1 << 18) -> dict[str, float]:
    """Quantiles of (distance of each sampled item to its nearest other item) / median item norm."""
    x = np.ascontiguousarray(emb[rows], dtype=np.float32)  # [s, D]
    best = np.full(len(x), np.inf, dtype=np.float64)
    sq_x = (x * x).sum(1)
    norms = []
    for start in range(1, len(emb), chunk_rows):
        block = np.ascontiguousarray(emb[start : start + chunk_rows], dtype=np.float32)
        sq_b = (block * block).sum(1)
        norms.append(np.sqrt(sq_b[:: max(1, len(block) // 2000)]))
        d2 = sq_x[:, None] - 2 * x @ block.T + sq_b[None, :]  # [s, chunk]
        own = (rows >= start) & (rows < start + len(block))
        d2[np.flatnonzero(own), rows[own] - start] = np.inf
        best = np.minimum(best, d2.min(1))
    ratio = np.sqrt(np.maximum(best, 0)) / float(np.median(np.concatenate(norms)))
    return {f"p{q}": round(float(np.percentile(ratio, q)), 4) for q in (10, 50, 90)}


def ivf_recall_at_share(
    emb: np.ndarray, queries: np.ndarray, exact: np.ndarray, shares: tuple[float, ...]
) -> dict[str, float]:
    """recall@k of IVF-Flat (nlist = 4 sqrt(n)) when nprobe / nlist = each share of the catalog scanned."""
    index = build_index(emb, IndexConfig(kind="ivf_flat", use_gpu=False))
    nlist = index.config.resolved_nlist(index.n_items)
    out = {}
    for share in shares:
        probe = ItemIndex(index.index, replace(index.config, nprobe=max(1, round(share * nlist))))
        out[f"{share:g}"] = round(recall_at_k(probe.search(queries, exact.shape[1])[1], exact), 4)
    return out


def validate_generator(
    base: np.ndarray, users: np.ndarray, big: np.ndarray, n_items: int, k: int, rng: np.random.Generator
) -> dict[str, Any]:
    """The expanded catalog's neighbourhoods and recall difficulty beside the real table's and the old catalog's."""
    n_base = len(base) - 1
    shares = (1 / 128, 1 / 64, 1 / 32, 1 / 16)
    q_real = users[rng.choice(len(users), size=min(300, len(users)), replace=False)]
    k_small = min(k, n_base // 20)  # k = 100 of a 3k-item table is 3% of it: keep the small cases comparable
    out: dict[str, Any] = {"k_small": k_small, "scan_shares": [f"{s:g}" for s in shares]}
    # at the real table's size: the real table, a one-group expansion (noise only), a clustered catalog
    one_group = expanded_catalog(base, n_base, noise=NOISE, seed=SEED)
    clustered_small = clustered_catalog(n_base, base.shape[1], np.random.default_rng(1), n_clusters=16)
    for name, emb in (("real", base), ("expanded_1_group", one_group), ("clustered", clustered_small)):
        exact = exact_search(emb, q_real, k_small)[1].numpy()
        row: dict[str, Any] = {"n_items": n_base, "nn_ratio": nn_ratio(emb, rng.choice(n_base, 500) + 1)}
        row[f"ivf_recall@{k_small}_at_share"] = ivf_recall_at_share(emb, q_real, exact, shares)
        out[name] = row
    # at n_items: the expanded catalog (prefix of the big memory map) and the old clustered catalog
    view = big[: n_items + 1]
    queries, groups = expanded_queries(q_real, n_items, n_base, rng, seed=SEED)
    exact, _ = exact_top(view, queries, k)
    row = {"n_items": n_items, "nn_ratio": nn_ratio(view, rng.choice(n_items, 300) + 1)}
    row[f"own_group_share_of_top{k}"] = round(float((item_group(exact, n_base) == groups[:, None]).mean()), 4)
    row[f"ivf_recall@{k}_at_share"] = ivf_recall_at_share(view, queries, exact, shares)
    out[f"expanded_{n_items}"] = row
    clustered = clustered_catalog(n_items, base.shape[1], np.random.default_rng(1), n_clusters=1024)
    rows = rng.integers(1, n_items + 1, size=len(q_real))
    q_cl = clustered[rows] + 0.5 * rng.standard_normal(clustered[rows].shape, dtype=np.float32)  # as serve.py
    exact_cl, _ = exact_top(clustered, q_cl, k)
    row = {"n_items": n_items, "nn_ratio": nn_ratio(clustered, rng.choice(n_items, 300) + 1)}
    row[f"ivf_recall@{k}_at_share"] = ivf_recall_at_share(clustered, q_cl, exact_cl, shares)
    out[f"clustered_{n_items}"] = row
    return out


# ----------------------------------------------------------------------------- one index
def index_bytes(index: ItemIndex, workdir: Path) -> int:
    """Size of the serialized index: what a loaded index holds in memory (vectors, codes, ids, links)."""
    path = workdir / "index.faiss"
    faiss.write_index(index.index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def build_hnsw(emb: np.ndarray, config: IndexConfig, budget_s: float) -> tuple[ItemIndex | None, dict[str, Any]]:
    """`build_index`'s HNSW, added in chunks; stops when the projected build time exceeds `budget_s`."""
    n, dim = len(emb) - 1, emb.shape[1]
    hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = config.ef_construction
    index = faiss.IndexIDMap2(hnsw)
    chunk = max(10_000, n // 50)
    t0 = time.perf_counter()
    progress = []
    for start in range(1, n + 1, chunk):
        rows = np.ascontiguousarray(emb[start : min(start + chunk, n + 1)], dtype=np.float32)
        t1 = time.perf_counter()
        index.add_with_ids(rows, np.arange(start, start + len(rows), dtype=np.int64))
        rate = len(rows) / (time.perf_counter() - t1)  # items/s of the latest chunk (insertion slows as it grows)
        done = start - 1 + len(rows)
        elapsed = time.perf_counter() - t0
        progress.append({"items": done, "elapsed_s": round(elapsed, 1), "rate_items_per_s": round(rate, 1)})
        projected = elapsed + (n - done) / rate
        if projected > budget_s and done < n:
            return None, {
                "built": False,
                "reason": f"projected build time {projected:.0f} s (a lower bound: the latest chunk's rate "
                f"held constant, while insertion slows as the graph grows) exceeds the budget of {budget_s:.0f} s "
                "on this shared 2-core machine",
                "items_added": done,
                "projected_build_s": round(projected),
                "projected_index_bytes": _hnsw_bytes(n, dim, config.hnsw_m),
                "progress": progress,
            }
    return ItemIndex(index, config), {"built": True, "progress": progress[-3:]}


def _hnsw_bytes(n: int, dim: int, m: int) -> int:
    """Vectors, level-0 links (2M ids of 4 bytes), upper levels (~1/M of the items, M links each), id map."""
    return n * (dim * 4 + 2 * m * 4 + 8 + 8) + (n // m) * m * 4


def measure_kind(
    kind: str, view: np.ndarray, queries: np.ndarray, exact: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """Build one index kind at its default config, then sweep its search parameter."""
    overrides = {f: int(v) for f, v in (item.split("=", 1) for item in args.index_set)}
    config = IndexConfig(kind=kind, use_gpu=False, **overrides)  # type: ignore[arg-type]
    out: dict[str, Any] = {"config": config.to_dict(), "load_before": _load()}
    rss0 = _rss_gb()
    t0 = time.perf_counter()
    if kind == "hnsw":
        index, info = build_hnsw(view, config, args.hnsw_budget_s)
        out.update(info)
    else:
        index = build_index(view, config)
        out["built"] = True
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["load_after_build"] = _load()
    if index is None:
        return out
    out["rss_growth_gb"] = round(_rss_gb() - rss0, 3)
    out["index_bytes"] = index_bytes(index, args.workdir)
    if kind in ("ivf_flat", "ivf_pq"):
        out["nlist"] = config.resolved_nlist(index.n_items)
    param, values = SWEEPS[kind]
    refines = PQ_REFINE if kind == "ivf_pq" else (config.refine_factor,)
    rows = []
    for refine in refines:
        probe = ItemIndex(index.index, replace(config, refine_factor=refine))
        faiss.omp_set_num_threads(1)  # single queries as the service runs them: one FAISS thread
        table = search_sweep(probe, queries, exact, param=param, values=values, single_queries=args.single_queries)  # type: ignore[arg-type]
        faiss.omp_set_num_threads(args.threads)
        for r in table.to_dicts():
            batched = ItemIndex(index.index, replace(probe.config, **{param: r["value"]}))
            t1 = time.perf_counter()
            batched.search(queries, exact.shape[1])
            r[f"batch_ms_per_query_{args.threads}_threads"] = (time.perf_counter() - t1) * 1000 / len(queries)
            r["batch_ms_per_query_1_thread"] = r.pop("batch_ms_per_query")
            rows.append({**r, "refine_factor": refine if kind == "ivf_pq" else None})
    out["sweep"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    out["load_after"] = _load()
    return out


# ----------------------------------------------------------------------------- the choice
def choose(results: dict[str, Any], k: int, args: argparse.Namespace) -> dict[str, Any]:
    """The first (kind, refine, value) meeting every constraint at every size, by kind preference then value."""
    sizes = sorted(int(s) for s in results["sizes"])
    key = f"recall@{k}"
    rejected = []
    for kind in KIND_PREFERENCE:
        per_size = [results["sizes"][str(n)]["kinds"].get(kind) for n in sizes]
        if not sizes or any(m is None or not m.get("built") for m in per_size):
            rejected.append(f"{kind}: not built at every size")
            continue
        memory_gb = per_size[-1]["index_bytes"] / 1e9
        if memory_gb > args.memory_budget_gb:
            rejected.append(f"{kind}: {memory_gb:.2f} GB at {sizes[-1]} items > {args.memory_budget_gb} GB")
            continue
        settings = sorted(
            {(r["refine_factor"] or 0, r["value"]) for r in per_size[0]["sweep"]}, key=lambda s: (s[1], s[0])
        )
        for refine, value in settings:
            rows = [
                next(r for r in m["sweep"] if ((r["refine_factor"] or 0), r["value"]) == (refine, value))
                for m in per_size
            ]
            if all(r[key] >= args.target_recall for r in rows) and rows[0]["single_ms_p99"] < args.p99_ms:
                chosen: dict[str, Any] = {"kind": kind, SWEEPS[kind][0]: value}
                if kind == "ivf_pq":
                    chosen["refine_factor"] = refine
                return {
                    "chosen": chosen,
                    "rows": {str(n): r for n, r in zip(sizes, rows, strict=True)},
                    f"index_gb_at_{sizes[-1]}": round(memory_gb, 3),
                    "rejected": rejected,
                }
        rejected.append(
            f"{kind}: no swept value reaches {key} >= {args.target_recall} at every size with p99 < {args.p99_ms} ms"
        )
    return {"chosen": None, "rejected": rejected}


# ----------------------------------------------------------------------------- the markdown table
def render_table(record: dict[str, Any]) -> str:
    """The docs' table from a record: per size and kind, build, memory and the sweep (markdown)."""
    res = record["results"]
    k = res["k"]
    lines = [
        f"recall@{k} against exact search over {res['sizes'] and next(iter(res['sizes'].values()))['queries']} "
        f"queries; single-query latency with 1 FAISS thread, batched with {res['threads']['batched']} "
        f"(`{record['command']}`, {record['started_at'][:10]}" + (", **partial**" if res["partial"] else "") + ")",
        "",
        f"| items | index | build s | memory GB | param | recall@{k} | single p50 ms | single p99 ms | "
        f"batched ms/query | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in res["sizes"].items():
        for kind, m in entry["kinds"].items():
            load = f"{m['load_before'][0]:.0f}-{m.get('load_after', m['load_after_build'])[0]:.0f}"
            if not m.get("built"):
                added = f"{m['items_added']:,} added in {m['build_s']:.0f} s"
                build = f"not built: {added}, all >= {m['projected_build_s']:,} s"
                memory = f"~{m['projected_index_bytes'] / 1e9:.1f} (est.)"
                lines.append(f"| {int(n):,} | {kind} | {build} | {memory} | | | | | | {load} |")
                continue
            for r in m["sweep"]:
                param = f"{r['param']} {r['value']}" + (f", refine {r['refine_factor']}" if r["refine_factor"] else "")
                batched = r[f"batch_ms_per_query_{res['threads']['batched']}_threads"]
                lines.append(
                    f"| {int(n):,} | {kind} | {m['build_s']:.0f} | {m['index_bytes'] / 1e9:.2f} | {param} | "
                    f"{r[f'recall@{k}']:.3f} | {r['single_ms_p50']:.2f} | {r['single_ms_p99']:.1f} | "
                    f"{batched:.2f} | {load} |"
                )
    return "\n".join(_validation_table(res) + lines + _memory_note(res)) + "\n"


def _validation_table(res: dict[str, Any]) -> list[str]:
    """The generator check: neighbour distances and IVF-Flat recall at equal shares scanned, per catalog."""
    if "validation" not in res:
        return []
    v = res["validation"]
    shares = v["scan_shares"]
    head = " | ".join(f"recall at 1/{round(1 / float(s))}" for s in shares)
    lines = [
        f"| catalog | items | NN distance / median norm (p10, p50, p90) | own group in top-{res['k']} | {head} |",
        "|---|---|---|---|" + "---|" * len(shares),
    ]
    for name, row in v.items():
        if not isinstance(row, dict):
            continue
        recall = next(row[key] for key in row if key.startswith("ivf_recall"))
        nn = row["nn_ratio"]
        own = row.get(f"own_group_share_of_top{res['k']}")
        cells = " | ".join(f"{recall[s]:.3f}" for s in shares)
        lines.append(
            f"| {name} | {row['n_items']:,} | {nn['p10']:.2f}, {nn['p50']:.2f}, {nn['p90']:.2f} | "
            f"{'' if own is None else f'{own:.2f}'} | {cells} |"
        )
    return [*lines, ""]


def _memory_note(res: dict[str, Any]) -> list[str]:
    """The service's memory at the largest size with the chosen index: index + the model's item table + baseline."""
    chosen = res.get("choice", {}).get("chosen")
    if not chosen or len(res["sizes"]) < 2:  # a one-size record's own choice is not the defaults' choice
        return []
    n = max(int(s) for s in res["sizes"])
    index_gb = res["sizes"][str(n)]["kinds"][chosen["kind"]]["index_bytes"] / 1e9
    table_gb = (n + 1) * res["real_table"]["dim"] * 4 / 1e9  # the model's item embedding table, float32
    startup = json.loads((REPO / "bench/results/serve_startup.json").read_text())["results"]["startup"]
    base_gb = startup["rss_mb_median"] / 1e3
    total = index_gb + table_gb + base_gb
    return [
        "",
        f"Chosen: `{chosen}`. Service memory at {n:,} items with it: index {index_gb:.2f} GB + the model's item "
        f"table {table_gb:.2f} GB + the service's own {base_gb:.2f} GB (`serve_startup.json`, ML-1M model) "
        f"= {total:.1f} GB of a 24 GB machine.",
    ]


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
        record["peak_rss_gb"] = _peak_rss_gb()
        record["results"] = results
        write_record(args.out, record)

    largest = max([*sizes, args.validation_size])
    path = args.workdir / f"catalog_{largest}_{n_base}x{dim}_noise{NOISE}_seed{SEED}_{real_info['run_id']}.f32"
    t0, load0 = time.perf_counter(), _load()
    exists = path.exists() and path.stat().st_size == (largest + 1) * dim * 4
    big = np.memmap(path, dtype=np.float32, mode="r+" if exists else "w+", shape=(largest + 1, dim))
    if not exists:  # written group by group into the memory map: bounded memory
        expanded_catalog(base, largest, noise=NOISE, seed=SEED, out=big)
        big.flush()
    results["generator"]["generate_s"] = "reused" if exists else round(time.perf_counter() - t0, 1)
    results["generator"]["load"] = [load0, _load()]
    save()

    if not args.skip_validation:
        t0 = time.perf_counter()
        print(f"{now_iso()} validating the generator (load {_load()})", flush=True)
        results["validation"] = validate_generator(base, users, big, args.validation_size, args.k, rng)
        results["validation"]["wall_s"] = round(time.perf_counter() - t0, 1)
        save()
        gc.collect()

    q_real = users[rng.choice(len(users), size=min(args.queries, len(users)), replace=False)]
    prepared = {}
    for n in sizes:  # exact top-k first: every index of a size is judged on the same queries
        view = big[: n + 1]
        queries, groups = expanded_queries(q_real, n, n_base, rng, seed=SEED)
        load0 = _load()
        exact, exact_s = exact_top(view, queries, args.k)
        prepared[n] = (view, queries, exact)
        results["sizes"][str(n)] = {
            "n_items": n,
            "queries": len(queries),
            "exact": {"wall_s": round(exact_s, 2), "ms_per_query_batched": round(exact_s * 1000 / len(queries), 2)},
            "exact_load": [load0, _load()],
            f"own_group_share_of_top{args.k}": round(float((item_group(exact, n_base) == groups[:, None]).mean()), 4),
            "kinds": {},
        }
        save()
    for kind in kinds:  # kind by kind, so a run cut short still has each finished kind at every size
        for n in sizes:
            print(f"{now_iso()} {n} items: {kind} (load {_load()})", flush=True)
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
