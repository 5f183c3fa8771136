"""Online top-k service under load: throughput and p50/p95/p99 latency over HTTP on loopback.

python bench/serve.py [--items 1000000] [--duration 20] [--concurrency 1,4,16] [--rate 200] [--k 100]
                      [--beauty-run-id ID --beauty-tracking-uri URI] [--skip-beauty | --skip-synthetic]
                      [--llm-rec-run-id ID --llm-rec-tracking-uri URI]
                      [--ranking-run-id ID --ranker-uri models:/NAME@ALIAS --ranking-tracking-uri URI]
                      [--out bench/results/serve.json]

Cases, each against `python -m pipelines.serve` in a subprocess (uvicorn, 1 torch/FAISS thread):
- synthetic: a SASRec (seeded, untrained encoder) whose item table is a clustered 1M x 64 catalog,
  exported to a temporary MLflow registry as IVF (`ivf_flat`; nprobe swept, then the smallest with
  recall@k >= --target-recall is served) and as exact (`flat`, the reference in the same run);
  recall@k of IVF vs exact on the queries of sampled stored users, then closed-loop levels
  (N workers, each waiting for its answer) and a paced run at --rate req/s
  (latency from the scheduled send time, so queueing is counted).
- reload: closed-loop load on the IVF server while /admin/reload?force=true swaps the model;
  every request must succeed.
- beauty: the latest FINISHED sasrec run tagged dataset=beauty (or --beauty-run-id), exact index;
  skipped with the reason when there is none.
- llm_rec: only with --llm-rec-run-id, the LLM-backed model of that run (bench/llm_rec.py), exact index.
- ranking: only with --ranking-run-id and --ranker-uri: that retrieval run (exact index) served
  without and then with the ranker (pipelines.train_ranker) re-ordering its top --ranker-top-n, the
  same users, k = --ranking-k and load levels; `added_ms` is the difference in p50 / p99.
- startup: the demo's model (configs/experiment/demo.yaml's SASRec, seeded, on the processed ML-1M
  of --startup-data, or a synthetic catalog of its size) exported to a temporary registry; the serve
  command started --startup-repeats times: seconds to the first 200 from /readyz, RSS and CPU seconds
  then, and the import time of the serving process, next to the model's and the bundle's size.
The load generator is a minimal asyncio HTTP/1.1 keep-alive client (cheaper than a full client, so it
steals less CPU from the server: both run on the same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipelines.serve_demo import free_port, wait_ready
from recsys.data import schema as S
from recsys.model_io import save_model
from recsys.registry import build_model
from recsys.retrieval.export import export_run, fetch_bundle
from recsys.retrieval.index import IndexConfig, ItemIndex, exact_search, recall_at_k
from recsys.retrieval.recommender import Recommender
from recsys.retrieval.synthetic import clustered_catalog_with_labels
from recsys.tracking.config import DEFAULT_TRACKING_URI, TrackingConfig
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.records import base_record, now_iso, write_record
from recsys.tracking.registry import ModelVersionRef, find_latest_run

REPO = Path(__file__).resolve().parents[1]
# configs/experiment/demo.yaml's model: configs/model/sasrec.yaml with max_len 100
DEMO_SASREC = {"max_len": 100, "hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "attn_dropout": 0.2}
STARTUP_TARGET_S = 3.0
SASREC = {"max_len": 50, "hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.0, "attn_dropout": 0.0}


# ----------------------------------------------------------------------------- load generator
@dataclass
class Sample:
    latency_s: float
    status: int  # HTTP status; -1 = timeout or connection error


class _Conn:
    """One keep-alive HTTP/1.1 connection posting JSON."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed this idle keep-alive connection: reconnect, as HTTP clients do
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next(int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:"))
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _one(conn: _Conn, body: bytes, timeout_s: float) -> int:
    try:
        return await asyncio.wait_for(conn.post("/recommend", body), timeout_s)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
        conn.close()
        return -1


async def _closed_loop(
    port: int, bodies: list[bytes], concurrency: int, duration_s: float, timeout_s: float
) -> list[Sample]:
    samples: list[Sample] = []
    end = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        conn, i = _Conn("127.0.0.1", port), w
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status = await _one(conn, bodies[i % len(bodies)], timeout_s)
            samples.append(Sample(time.perf_counter() - t0, status))
            i += concurrency
        conn.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return samples


async def _paced(
    port: int, bodies: list[bytes], rate: float, duration_s: float, timeout_s: float, max_conns: int
) -> list[Sample]:
    """Open-loop arrivals every 1/rate s; latency counts from the scheduled time (no coordinated omission)."""
    samples: list[Sample] = []
    idle = [_Conn("127.0.0.1", port) for _ in range(max_conns)]
    tasks = []
    start = time.perf_counter()

    async def send(i: int, scheduled: float) -> None:
        if not idle:  # every connection busy: the server is past saturation
            samples.append(Sample(time.perf_counter() - scheduled, -1))
            return
        conn = idle.pop()
        status = await _one(conn, bodies[i % len(bodies)], timeout_s)
        samples.append(Sample(time.perf_counter() - scheduled, status))
        idle.append(conn)

    for i in range(int(rate * duration_s)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return samples


def _summary(samples: list[Sample], wall_s: float, **labels: Any) -> dict[str, Any]:
    ok = np.array([s.latency_s for s in samples if s.status == 200]) * 1000

    def pct(q: float) -> float | None:
        return round(float(np.percentile(ok, q)), 2) if len(ok) else None

    row = {
        **labels,
        "duration_s": round(wall_s, 2),
        "requests": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "throughput_rps": round(len(ok) / wall_s, 1),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(float(ok.max()), 2) if len(ok) else None,
    }
    print("   ", json.dumps(row), flush=True)
    return row


def freeze_client_heap() -> None:
    """Keep the load generator's own garbage collector out of the latencies.

    This process imports torch, polars and mlflow (~650k objects); a full collection over them
    stalls the event loop for ~300 ms, which reads as server latency and, in paced mode, as
    failed requests (measured: 9-14 of 4,000 at 200 req/s). Frozen objects are skipped by the
    collector; what the load test itself allocates is still collected.
    """
    gc.collect()
    gc.freeze()


def run_levels(port: int, bodies: list[bytes], args: argparse.Namespace, **labels: Any) -> list[dict[str, Any]]:
    rows = []
    freeze_client_heap()
    asyncio.run(_closed_loop(port, bodies, 2, 2.0, args.timeout))  # warm-up
    for c in args.concurrency:
        t0 = time.perf_counter()
        samples = asyncio.run(_closed_loop(port, bodies, c, args.duration, args.timeout))
        rows.append(_summary(samples, time.perf_counter() - t0, mode="closed", concurrency=c, **labels))
    if args.rate:
        t0 = time.perf_counter()
        samples = asyncio.run(_paced(port, bodies, args.rate, args.duration, args.timeout, max_conns=64))
        rows.append(_summary(samples, time.perf_counter() - t0, mode="paced", rate_rps=args.rate, **labels))
    return rows


# ----------------------------------------------------------------------------- server
@contextmanager
def serving(model_uri: str, tracking_uri: str, log_path: Path, threads: int, env_extra: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    port = free_port()
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", model_uri, "--tracking-uri", tracking_uri]
    cmd += ["--port", str(port), "--threads", str(threads), "--log-level", "warning"]
    env = {**os.environ, "RECSYS_SERVE_ADMIN_TOKEN": "bench", **(env_extra or {})}
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            t0 = time.perf_counter()
            wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=900)
            print(f"  server up in {time.perf_counter() - t0:.1f} s ({model_uri})", flush=True)
            yield port, proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except Exception:  # best effort: psutil missing or the process gone
        return None


# ----------------------------------------------------------------------------- synthetic catalog
def make_synthetic_run(root: Path, uri: str, n_items: int, n_users: int, rng: np.random.Generator) -> str:
    """A run laid out like a training run: SASRec with a clustered item table, histories within clusters."""
    emb, labels = clustered_catalog_with_labels(n_items, SASREC["hidden"], rng, n_clusters=1024)
    torch.manual_seed(0)
    model = build_model("sasrec", SASREC, n_items).eval()
    with torch.no_grad():
        model.net.item_emb.weight[: n_items + 1] = torch.from_numpy(emb)
    save_model(model, "sasrec", SASREC, n_items, root / "model")
    np.save(root / "item_embeddings.npy", model.item_embeddings().detach().numpy())
    by_cluster = pl.DataFrame({"c": labels[1:], "i": np.arange(1, n_items + 1)}).group_by("c").agg("i")
    members = dict(zip(by_cluster["c"].to_list(), by_cluster["i"].to_list(), strict=True))
    seqs = []
    for _ in range(n_users):  # 10..60 items from one or two clusters: a user with a taste
        cs = rng.choice(list(members), size=int(rng.integers(1, 3)), replace=False)
        pool = np.concatenate([members[c] for c in cs])
        seqs.append(rng.choice(pool, size=int(rng.integers(10, 61))).tolist())
    data = root / "processed"
    data.mkdir()
    pl.DataFrame(
        {S.ITEM_IDX: np.arange(1, n_items + 1), S.RAW_ID: [f"i{i}" for i in range(1, n_items + 1)]}
    ).with_columns(pl.lit(None, dtype=pl.String).alias(S.TEXT)).write_parquet(data / S.ITEMS_FILE)
    pl.DataFrame({S.USER_IDX: np.arange(n_users), S.RAW_ID: [f"u{u}" for u in range(n_users)]}).write_parquet(
        data / S.USERS_FILE
    )
    pl.DataFrame({S.USER_IDX: np.arange(n_users), S.ITEMS: seqs}).write_parquet(data / S.SEQUENCES_FILE)
    cfg = TrackingConfig(tracking_uri=uri, experiment="bench-serve", artifact_dir=str(root / "mlartifacts"))
    logger = make_logger(cfg, uri, tags={"data_dir": str(data)})
    rec = RunRecorder(uri, str(logger.run_id))
    rec.log_dir(root / "model", "model")
    rec.log_file(root / "item_embeddings.npy", "embeddings")
    rec.finish()
    return str(logger.run_id)


def measure_recall(model_uri: str, uri: str, n_queries: int, k: int, rng: np.random.Generator) -> dict[str, Any]:
    """recall@k of the served index against exact search, on the queries of sampled stored users."""
    bundle = fetch_bundle(model_uri, uri).bundle
    rec = Recommender(bundle)
    users = rng.choice(list(bundle.user_vocab), size=min(n_queries, len(bundle.user_vocab)), replace=False)
    histories = [bundle.user_history(u) for u in users]
    queries = rec.encode(histories).numpy()  # type: ignore[arg-type]
    with torch.no_grad():
        item_emb = bundle.model.item_embeddings()
    _, exact = exact_search(item_emb, queries, k)
    out: dict[str, Any] = {"queries": len(users), "k": k, "nprobe_sweep": []}
    base = bundle.index
    for nprobe in sorted({16, 32, 64, 128, 256, 512, base.config.nprobe}):
        index = ItemIndex(base.index, IndexConfig(**{**base.config.to_dict(), "nprobe": nprobe}))
        t0 = time.perf_counter()
        for q in queries[:200]:
            index.search(q[None], k)
        per_query_ms = (time.perf_counter() - t0) / min(200, len(queries)) * 1000
        _, got = index.search(queries, k)
        row = {
            "nprobe": nprobe,
            f"recall@{k}": round(recall_at_k(got, exact.numpy()), 4),
            "search_ms": round(per_query_ms, 3),
        }
        out["nprobe_sweep"].append(row)
        print("   ", json.dumps(row), flush=True)
    served = next(r for r in out["nprobe_sweep"] if r["nprobe"] == base.config.nprobe)
    out[f"recall@{k}"] = served[f"recall@{k}"]
    out["nprobe"] = base.config.nprobe
    # what the client sees: the final top-k after removing seen items, IVF vs the exact twin
    fast = rec.recommend(histories, k)  # type: ignore[arg-type]
    slow = rec.recommend_exact(histories, k)  # type: ignore[arg-type]
    hits = sum(len(np.intersect1d(f.items, s.items)) for f, s in zip(fast, slow, strict=True))
    out[f"served_recall@{k}"] = round(hits / sum(len(s.items) for s in slow), 4)
    return out


def bodies_for_users(users: list[str], k: int) -> list[bytes]:
    return [json.dumps({"user_id": u, "k": k}).encode() for u in users]


def synthetic_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    uri = f"sqlite:///{root}/mlflow.db"
    t0 = time.perf_counter()
    run_id = make_synthetic_run(root, uri, args.items, args.users, rng)
    print(f"  synthetic run {run_id}: {args.items} items in {time.perf_counter() - t0:.1f} s", flush=True)
    ivf_cfg = IndexConfig(kind="ivf_flat")
    t0 = time.perf_counter()
    export_run(run_id, tracking_uri=uri, name="bench-ivf", alias="serve", index_config=ivf_cfg)
    ivf_export_s = time.perf_counter() - t0
    print(f"  exported ivf (default parameters) in {ivf_export_s:.1f} s; recall sweep:", flush=True)
    recall = measure_recall("models:/bench-ivf@serve", uri, args.recall_queries, args.k, rng)
    default_recall = {"nprobe": ivf_cfg.nprobe, f"recall@{args.k}": recall[f"recall@{args.k}"]}
    # serve with the smallest swept nprobe that reaches the target recall (re-export: same k-means seed)
    ok = [r["nprobe"] for r in recall["nprobe_sweep"] if r[f"recall@{args.k}"] >= args.target_recall]
    tuned = min(ok) if ok else max(r["nprobe"] for r in recall["nprobe_sweep"])
    if args.tune_nprobe and tuned != ivf_cfg.nprobe:
        ivf_cfg = IndexConfig(kind="ivf_flat", nprobe=tuned)
        print(f"  re-exporting ivf with nprobe={ivf_cfg.nprobe}", flush=True)
        export_run(run_id, tracking_uri=uri, name="bench-ivf", alias="serve", index_config=ivf_cfg)
        recall = measure_recall("models:/bench-ivf@serve", uri, args.recall_queries, args.k, rng)
    t0 = time.perf_counter()
    export_run(run_id, tracking_uri=uri, name="bench-exact", alias="serve", index_config=IndexConfig(kind="flat"))
    exact_export_s = time.perf_counter() - t0
    bodies = bodies_for_users([f"u{u}" for u in rng.permutation(args.users)], args.k)
    out: dict[str, Any] = {
        "n_items": args.items,
        "dim": SASREC["hidden"],
        "n_users": args.users,
        "model": {"name": "sasrec", **SASREC, "weights": "seeded encoder, clustered item table (1024 clusters)"},
        "k": args.k,
        "ivf": {
            "index": ivf_cfg.to_dict(),
            "export_s": round(ivf_export_s, 1),
            "default_parameters": default_recall,
            **recall,
        },
        "exact": {"index": IndexConfig(kind="flat").to_dict(), "export_s": round(exact_export_s, 1)},
    }
    for name in ("ivf", "exact"):
        print(f"  load test: {name}", flush=True)
        with serving(f"models:/bench-{name}@serve", uri, root / f"server-{name}.log", args.threads) as (port, proc):
            out[name]["levels"] = run_levels(port, bodies, args, index=name)
            out[name]["server_rss_mb"] = _rss_mb(proc.pid)
        if name == "ivf":
            out["reload"] = reload_case(args, uri, root, bodies)
    ivf_p99 = {(r["mode"], r.get("concurrency"), r.get("rate_rps")): r for r in out["ivf"]["levels"]}
    out["exact_over_ivf"] = [
        {
            "mode": r["mode"],
            "concurrency": r.get("concurrency"),
            "rate_rps": r.get("rate_rps"),
            "p99_ratio": _ratio(r["p99_ms"], ivf_p99[(r["mode"], r.get("concurrency"), r.get("rate_rps"))]["p99_ms"]),
            "throughput_ratio": _ratio(
                ivf_p99[(r["mode"], r.get("concurrency"), r.get("rate_rps"))]["throughput_rps"], r["throughput_rps"]
            ),
        }
        for r in out["exact"]["levels"]
    ]
    return out


def reload_case(args: argparse.Namespace, uri: str, root: Path, bodies: list[bytes]) -> dict[str, Any]:
    """Closed-loop load while the server reloads (force) its model: zero failed requests expected."""
    import httpx

    print("  reload under load", flush=True)
    with serving("models:/bench-ivf@serve", uri, root / "server-reload.log", args.threads) as (port, _):
        base = f"http://127.0.0.1:{port}"
        freeze_client_heap()

        async def scenario() -> tuple[list[Sample], dict[str, Any], float]:
            load = asyncio.create_task(_closed_loop(port, bodies, 4, args.reload_duration, args.timeout))
            await asyncio.sleep(2.0)
            async with httpx.AsyncClient(base_url=base, timeout=30.0, headers={"X-Admin-Token": "bench"}) as client:
                t0 = time.perf_counter()
                await client.post("/admin/reload", params={"force": True})
                status: dict[str, Any] = {}
                while time.perf_counter() - t0 < args.reload_duration + 600:
                    status = (await client.get("/admin/reload")).json()
                    if status["state"] != "running":
                        break
                    await asyncio.sleep(0.2)
                reload_s = time.perf_counter() - t0
            return await load, status, reload_s

        t0 = time.perf_counter()
        samples, status, reload_s = asyncio.run(scenario())
        row = _summary(samples, time.perf_counter() - t0, mode="closed", concurrency=4, index="ivf")
    return {
        **row,
        "reload_state": status.get("state"),
        "reload_error": status.get("error"),
        "reload_s": round(reload_s, 1),
    }


def exported_with_users(
    run_id: str, uri: str, name: str, n_users: int, rng: np.random.Generator
) -> tuple[ModelVersionRef, list[str]]:
    """Run `run_id` exported with an exact index as `models:/<name>@bench`, and `n_users` of its stored users."""
    ref = export_run(run_id, tracking_uri=uri, name=name, alias="bench", index_config=IndexConfig(kind="flat"))
    bundle = fetch_bundle(ref.uri, uri).bundle
    return ref, [str(u) for u in rng.permutation(list(bundle.user_vocab))[:n_users]]


def beauty_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    uri = args.beauty_tracking_uri
    run_id = args.beauty_run_id or find_latest_run(uri, {"dataset": "beauty", "model": "sasrec"})
    if run_id is None:
        return {"skipped": f"no FINISHED sasrec run tagged dataset=beauty in {uri} (pass --beauty-run-id)"}
    ref, users = exported_with_users(run_id, uri, "bench-beauty", args.users, rng)
    with serving("models:/bench-beauty@bench", uri, root / "server-beauty.log", args.threads) as (port, proc):
        levels = run_levels(port, bodies_for_users(users, args.k), args, index="flat")
        rss = _rss_mb(proc.pid)
    return {
        "run_id": run_id,
        "model_version": ref.version,
        "index": "flat",
        "k": args.k,
        "levels": levels,
        "server_rss_mb": rss,
    }


def llm_rec_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The LLM-backed model (bench/llm_rec.py's run --llm-rec-run-id) exported with an exact index and
    served: top-k for sampled stored users (one backbone forward pass per request, then FAISS)."""
    uri = args.llm_rec_tracking_uri
    ref, users = exported_with_users(args.llm_rec_run_id, uri, "bench-llm-rec", args.users, rng)
    with serving("models:/bench-llm-rec@bench", uri, root / "server-llm-rec.log", args.threads) as (port, proc):
        levels = run_levels(port, bodies_for_users(users, args.k), args, index="flat")
        rss = _rss_mb(proc.pid)
    return {"run_id": args.llm_rec_run_id, "model_version": ref.version, "index": "flat", "k": args.k} | {
        "levels": levels,
        "server_rss_mb": rss,
    }


def ranking_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The latency a ranking stage adds: the retrieval run --ranking-run-id (exact index) served twice,
    without and with --ranker-uri (RECSYS_SERVE_RANKER_URI; top-N --ranker-top-n), on the same users,
    k and load levels, one server at a time."""
    uri = args.ranking_tracking_uri
    ref, users = exported_with_users(args.ranking_run_id, uri, "bench-ranking", args.users, rng)
    bodies = bodies_for_users(users, args.ranking_k)
    out: dict[str, Any] = {"run_id": args.ranking_run_id, "model_version": ref.version, "index": "flat"}
    out |= {"k": args.ranking_k, "ranker_uri": args.ranker_uri, "ranker_top_n": args.ranker_top_n}
    variants = {
        "retrieval_only": {},
        "ranked": {"RECSYS_SERVE_RANKER_URI": args.ranker_uri, "RECSYS_SERVE_RANKER_TOP_N": str(args.ranker_top_n)},
    }
    for label, env in variants.items():
        with serving(ref.uri, uri, root / f"server-{label}.log", args.threads, env) as (port, proc):
            out[label] = run_levels(port, bodies, args, index="flat", stage=label)
            out[f"{label}_rss_mb"] = _rss_mb(proc.pid)
    out["added_ms"] = [
        {
            "mode": plain["mode"],
            "concurrency": plain.get("concurrency"),
            "rate_rps": plain.get("rate_rps"),
            "p50": _diff(ranked["p50_ms"], plain["p50_ms"]),
            "p99": _diff(ranked["p99_ms"], plain["p99_ms"]),
        }
        for plain, ranked in zip(out["retrieval_only"], out["ranked"], strict=True)
    ]
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def startup_case(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Time to ready and memory of the serve command for the demo's model, served from a registry."""
    import httpx
    import psutil

    from recsys.tracking.registry import resolve_model_uri

    data = Path(args.startup_data)
    if (data / S.META_FILE).is_file():
        source = str(data)
    else:  # ML-1M's size (the demo's processed data), synthetic histories
        data, source = root / "processed", f"synthetic ({data} not found)"
        _write_synthetic_processed(data, n_items=3266, n_users=2999, rng=np.random.default_rng(0))
    n_items = int(json.loads((data / S.META_FILE).read_text())["n_items"])
    uri = f"sqlite:///{root}/mlflow.db"
    torch.manual_seed(0)
    model = build_model("sasrec", DEMO_SASREC, n_items).eval()
    save_model(model, "sasrec", DEMO_SASREC, n_items, root / "model")
    np.save(root / "item_embeddings.npy", model.item_embeddings().detach().numpy())
    cfg = TrackingConfig(tracking_uri=uri, experiment="bench-startup", artifact_dir=str(root / "mlartifacts"))
    logger = make_logger(cfg, uri, tags={"data_dir": str(data)})
    rec = RunRecorder(uri, str(logger.run_id))
    rec.log_dir(root / "model", "model")
    rec.log_file(root / "item_embeddings.npy", "embeddings")
    rec.finish()
    ref = export_run(
        str(logger.run_id), tracking_uri=uri, name="bench-startup", alias="champion", index_config=IndexConfig("flat")
    )
    bundle_dir = Path(resolve_model_uri(uri, ref.uri).source.removeprefix("file://"))
    sizes = {
        "n_items": n_items,
        "n_users": int(json.loads((data / S.META_FILE).read_text())["n_users"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "state_dict_mb": round((root / "model" / "state_dict.pt").stat().st_size / 2**20, 2),
        "bundle_mb": round(sum(f.stat().st_size for f in bundle_dir.rglob("*") if f.is_file()) / 2**20, 2),
    }
    probe = "import time; t = time.perf_counter(); import pipelines.serve; "
    probe += "print(time.perf_counter() - t, time.process_time())"
    imports = []
    for _ in range(args.startup_repeats):
        out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
        wall, cpu = (float(x) for x in out.stdout.split())
        imports.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
    runs = []
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", "models:/bench-startup@champion"]
    cmd += ["--tracking-uri", uri, "--log-level", "warning"]
    for _ in range(args.startup_repeats):
        port = free_port()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=REPO, stderr=subprocess.DEVNULL)
        try:
            while proc.poll() is None and time.perf_counter() - t0 < 300:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.02)
            ready_s = time.perf_counter() - t0
            info = psutil.Process(proc.pid)
            cpu = info.cpu_times()
            runs.append(
                {
                    "ready_s": round(ready_s, 3),
                    "cpu_s": round(cpu.user + cpu.system, 3),
                    "rss_mb": round(info.memory_info().rss / 2**20, 1),
                    "loadavg_1m_at_start": round(load, 2),
                }
            )
        finally:
            proc.terminate()
            runs[-1]["exit_code_after_sigterm"] = proc.wait(30)
        print("   ", json.dumps(runs[-1]), flush=True)
    ready = sorted(r["ready_s"] for r in runs)
    return {
        "model": {"name": "sasrec", **DEMO_SASREC, "weights": "seeded (startup does not depend on them)"},
        "data": source,
        "index": "flat",
        "model_uri": "models:/bench-startup@champion (sqlite registry)",
        **sizes,
        "import_pipelines_serve": imports,
        "runs": runs,
        "ready_s_median": ready[len(ready) // 2],
        "rss_mb_median": sorted(r["rss_mb"] for r in runs)[len(runs) // 2],
        "target_ready_s": STARTUP_TARGET_S,
        "meets_target": ready[len(ready) // 2] < STARTUP_TARGET_S,
    }


def _write_synthetic_processed(data: Path, *, n_items: int, n_users: int, rng: np.random.Generator) -> None:
    data.mkdir(parents=True)
    pl.DataFrame(
        {S.ITEM_IDX: np.arange(1, n_items + 1), S.RAW_ID: [str(i) for i in range(1, n_items + 1)]}
    ).write_parquet(data / S.ITEMS_FILE)
    pl.DataFrame({S.USER_IDX: np.arange(n_users), S.RAW_ID: [str(u) for u in range(n_users)]}).write_parquet(
        data / S.USERS_FILE
    )
    seqs = [rng.integers(1, n_items + 1, size=int(rng.integers(20, 300))).tolist() for _ in range(n_users)]
    pl.DataFrame({S.USER_IDX: np.arange(n_users), S.ITEMS: seqs}).write_parquet(data / S.SEQUENCES_FILE)
    (data / S.META_FILE).write_text(json.dumps({"n_items": n_items, "n_users": n_users}))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load level")
    parser.add_argument("--reload-duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    parser.add_argument("--rate", type=float, default=200.0, help="paced run (req/s); 0 to skip")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout (s)")
    parser.add_argument("--threads", type=int, default=1, help="server torch/FAISS threads")
    parser.add_argument("--recall-queries", type=int, default=500)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument(
        "--tune-nprobe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve IVF with the smallest swept nprobe whose recall@k reaches --target-recall",
    )
    parser.add_argument("--beauty-run-id", default=None)
    parser.add_argument("--beauty-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--skip-beauty", action="store_true")
    parser.add_argument("--llm-rec-run-id", default=None, help="also serve this LLM-backed run (bench/llm_rec.py)")
    parser.add_argument("--llm-rec-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--ranking-run-id", default=None, help="retrieval run served without and with --ranker-uri")
    parser.add_argument("--ranking-tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--ranker-uri", default=None, help="a ranker (pipelines.train_ranker): models:/name@alias")
    parser.add_argument("--ranker-top-n", type=int, default=200)
    parser.add_argument("--ranking-k", type=int, default=10, help="k of the ranking case's requests")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--startup-data", default=str(REPO / "data/processed/ml-1m"), help="the demo's processed data")
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench/results/serve.json"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    torch.set_num_threads(2)
    started_at, t0 = now_iso(), time.perf_counter()
    load_at_start = os.getloadavg()
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        if args.skip_synthetic:
            results["synthetic"] = {"skipped": "--skip-synthetic"}
        else:
            print(f"synthetic catalog: {args.items} items", flush=True)
            (root / "synthetic").mkdir()
            results["synthetic"] = synthetic_case(args, root / "synthetic", rng)
        print("beauty", flush=True)
        results["beauty"] = {"skipped": "--skip-beauty"} if args.skip_beauty else beauty_case(args, root, rng)
        if args.llm_rec_run_id:
            print("llm_rec", flush=True)
            results["llm_rec"] = llm_rec_case(args, root, rng)
        if args.ranking_run_id:
            if not args.ranker_uri:
                parser.error("--ranking-run-id needs --ranker-uri")
            print("ranking stage", flush=True)
            results["ranking"] = ranking_case(args, root, rng)
        print("startup (the demo's model)", flush=True)
        if args.skip_startup:
            results["startup"] = {"skipped": "--skip-startup"}
        else:
            (root / "startup").mkdir()
            results["startup"] = startup_case(args, root / "startup")
    command = "python bench/serve.py " + shlex.join(sys.argv[1:])
    record = base_record("serve", command, started_at, time.perf_counter() - t0)
    record["machine"]["load_generator"] = "same machine, same 2 cores as the server"
    record["machine"]["loadavg_1_5_15"] = {"start": load_at_start, "end": os.getloadavg()}
    record["results"] = results
    write_record(args.out, record)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
