"""What the serving benchmark's cases run against: the serve command in a subprocess, a synthetic
training run with a clustered 1M-item-scale catalog, recall of a served index, an exported run's users.

bench/serve.py runs the cases; bench/load_client.py sends the load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from recsys.tracking.config import TrackingConfig
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.registry import ModelVersionRef

REPO = Path(__file__).resolve().parents[1]
SASREC: dict[str, Any] = {"max_len": 50, "hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.0, "attn_dropout": 0.0}


@contextmanager
def serving(
    model_uri: str, tracking_uri: str, log_path: Path, threads: int, env_extra: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`python -m pipelines.serve` of `model_uri` on a free port until the block exits; yields (port, process).

    Args:
        model_uri: the model to serve (models:/name@alias).
        tracking_uri: the MLflow store holding it.
        log_path: the server's stdout and stderr.
        threads: the server's torch/FAISS threads.
        env_extra: environment variables added for the server (ranker settings).
    """
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


def rss_mb(pid: int) -> float | None:
    """Resident memory of process `pid` in MiB; None when psutil is missing or the process is gone."""
    try:
        import psutil

        return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)
    except Exception:  # best effort: psutil missing or the process gone
        return None


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
    return log_model_run(root, uri, "bench-serve", data)


def log_model_run(root: Path, uri: str, experiment: str, data_dir: Path) -> str:
    """Log `root`/model and `root`/item_embeddings.npy as a finished run laid out like a training run; its id.

    Args:
        root: the directory holding the saved model and its item embeddings.
        uri: the MLflow tracking URI.
        experiment: the MLflow experiment of the run.
        data_dir: the processed data the run is tagged with (`data_dir`), as a training run is.
    """
    cfg = TrackingConfig(tracking_uri=uri, experiment=experiment, artifact_dir=str(root / "mlartifacts"))
    logger = make_logger(cfg, uri, tags={"data_dir": str(data_dir)})
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


def export_ivf(
    run_id: str, uri: str, n_queries: int, k: int, target_recall: float | None, rng: np.random.Generator
) -> dict[str, Any]:
    """Run `run_id` exported as `models:/bench-ivf@serve` with IVF-Flat, its recall swept (`measure_recall`).

    Args:
        run_id: the run to export.
        uri: the MLflow store holding it (tracking and registry).
        n_queries: stored users whose queries measure recall.
        k: the top-k of recall@k.
        target_recall: when given, re-exported with the smallest swept nprobe whose recall@k reaches it.
        rng: draws the users.

    Returns:
        the served index config, its first export's seconds, the default parameters' recall, and the
        served index's recall sweep.
    """
    ivf_cfg = IndexConfig(kind="ivf_flat")
    t0 = time.perf_counter()
    export_run(run_id, tracking_uri=uri, name="bench-ivf", alias="serve", index_config=ivf_cfg)
    ivf_export_s = time.perf_counter() - t0
    print(f"  exported ivf (default parameters) in {ivf_export_s:.1f} s; recall sweep:", flush=True)
    recall = measure_recall("models:/bench-ivf@serve", uri, n_queries, k, rng)
    default_recall = {"nprobe": ivf_cfg.nprobe, f"recall@{k}": recall[f"recall@{k}"]}
    # serve with the smallest swept nprobe that reaches the target recall (re-export: same k-means seed)
    ok = [r["nprobe"] for r in recall["nprobe_sweep"] if r[f"recall@{k}"] >= (target_recall or 0.0)]
    tuned = min(ok) if ok else max(r["nprobe"] for r in recall["nprobe_sweep"])
    if target_recall is not None and tuned != ivf_cfg.nprobe:
        ivf_cfg = IndexConfig(kind="ivf_flat", nprobe=tuned)
        print(f"  re-exporting ivf with nprobe={ivf_cfg.nprobe}", flush=True)
        export_run(run_id, tracking_uri=uri, name="bench-ivf", alias="serve", index_config=ivf_cfg)
        recall = measure_recall("models:/bench-ivf@serve", uri, n_queries, k, rng)
    return {
        "index": ivf_cfg.to_dict(),
        "export_s": round(ivf_export_s, 1),
        "default_parameters": default_recall,
    } | recall


def exported_with_users(
    run_id: str, uri: str, name: str, n_users: int, rng: np.random.Generator
) -> tuple[ModelVersionRef, list[str]]:
    """Run `run_id` exported with an exact index as `models:/<name>@bench`, and `n_users` of its stored users."""
    ref = export_run(run_id, tracking_uri=uri, name=name, alias="bench", index_config=IndexConfig(kind="flat"))
    bundle = fetch_bundle(ref.uri, uri).bundle
    return ref, [str(u) for u in rng.permutation(list(bundle.user_vocab))[:n_users]]
