"""bench/retrieval_scale.py's catalog and measurements: the run's real item table and user vectors, chunked
exact top-k over a memory-mapped catalog, the generator check, and one index kind built and swept.

Every step reads the load average (`load_avg`): the machine is shared, so timings are upper bounds when
the load is above the core count.
"""

from __future__ import annotations

import argparse
import os
import resource
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
from recsys.tracking.mlflow import download_run_artifacts
from recsys.tracking.registry import run_experiment_and_tags

SWEEPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ivf_flat": ("nprobe", (8, 16, 32, 64, 128, 256, 512)),
    "ivf_pq": ("nprobe", (16, 32, 64, 128, 256, 512)),
    "hnsw": ("ef_search", (64, 128, 256, 512)),
}
PQ_REFINE = (16, 64)  # IVF-PQ is swept at each of these refine factors (k_factor of IndexRefineFlat)
NOISE = 0.5  # jitter = half of an item's nearest-neighbour distance: never a copy, the neighbourhood kept
SEED = 0


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1e6, 3)
    return float("nan")


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 3)


# ----------------------------------------------------------------------------- real table and queries
def real_table(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The run's item table [n+1, D] and the real user vectors [U, D] (every user of its processed data).

    Args:
        args: the CLI's --run-id and --tracking-uri, or --model-dir; --data-dir (default: the run's tag);
            --workdir (where the run's model is downloaded).
    """
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
    """Build one index kind at its default config, then sweep its search parameter.

    Args:
        kind: the index kind (a key of SWEEPS).
        view: the catalog [n+1, D] (row 0 is padding).
        queries: the query vectors [B, D].
        exact: their exact top-k item ids [B, k].
        args: the CLI's --index-set, --hnsw-budget-s, --single-queries, --threads and --workdir.
    """
    overrides = {f: int(v) for f, v in (item.split("=", 1) for item in args.index_set)}
    config = IndexConfig(kind=kind, use_gpu=False, **overrides)  # type: ignore[arg-type]
    out: dict[str, Any] = {"config": config.to_dict(), "load_before": load_avg()}
    rss0 = _rss_gb()
    t0 = time.perf_counter()
    if kind == "hnsw":
        index, info = build_hnsw(view, config, args.hnsw_budget_s)
        out.update(info)
    else:
        index = build_index(view, config)
        out["built"] = True
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["load_after_build"] = load_avg()
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
    out["load_after"] = load_avg()
    return out
