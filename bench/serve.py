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
The load generator (bench/load_client.py) is a minimal asyncio HTTP/1.1 keep-alive client (cheaper than a
full client, so it steals less CPU from the server: both run on the same machine); bench/serve_setup.py
starts the server and builds the synthetic run; bench/serve_startup.py is the startup case.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when loaded by path

from load_client import (  # noqa: E402
    LoadPlan,
    Sample,
    bodies_for_users,
    closed_loop,
    freeze_client_heap,
    latency_row,
    level_of,
    run_levels,
)
from serve_setup import REPO, SASREC, export_ivf, exported_with_users, make_synthetic_run, rss_mb, serving  # noqa: E402
from serve_startup import startup_case  # noqa: E402

from recsys.retrieval.export import export_run  # noqa: E402
from recsys.retrieval.index import IndexConfig  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.tracking.registry import find_latest_run  # noqa: E402


def load_plan(args: argparse.Namespace) -> LoadPlan:
    """The load levels the flags ask for (--concurrency, --duration, --rate, --timeout)."""
    return LoadPlan(tuple(args.concurrency), args.duration, args.rate, args.timeout)


def synthetic_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    uri = f"sqlite:///{root}/mlflow.db"
    t0 = time.perf_counter()
    run_id = make_synthetic_run(root, uri, args.items, args.users, rng)
    print(f"  synthetic run {run_id}: {args.items} items in {time.perf_counter() - t0:.1f} s", flush=True)
    target = args.target_recall if args.tune_nprobe else None
    ivf = export_ivf(run_id, uri, args.recall_queries, args.k, target, rng)
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
        "ivf": ivf,
        "exact": {"index": IndexConfig(kind="flat").to_dict(), "export_s": round(exact_export_s, 1)},
    }
    for name in ("ivf", "exact"):
        print(f"  load test: {name}", flush=True)
        with serving(f"models:/bench-{name}@serve", uri, root / f"server-{name}.log", args.threads) as (port, proc):
            out[name]["levels"] = run_levels(port, bodies, load_plan(args), index=name)
            out[name]["server_rss_mb"] = rss_mb(proc.pid)
        if name == "ivf":
            out["reload"] = reload_case(args, uri, root, bodies)
    ivf_at = {tuple(level_of(r).values()): r for r in out["ivf"]["levels"]}
    out["exact_over_ivf"] = []
    for r in out["exact"]["levels"]:
        fast = ivf_at[tuple(level_of(r).values())]
        ratios = {"p99_ratio": _ratio(r["p99_ms"], fast["p99_ms"])}
        out["exact_over_ivf"].append(
            level_of(r) | ratios | {"throughput_ratio": _ratio(fast["throughput_rps"], r["throughput_rps"])}
        )
    return out


def reload_case(args: argparse.Namespace, uri: str, root: Path, bodies: list[bytes]) -> dict[str, Any]:
    """Closed-loop load while the server reloads (force) its model: zero failed requests expected."""
    import httpx

    print("  reload under load", flush=True)
    with serving("models:/bench-ivf@serve", uri, root / "server-reload.log", args.threads) as (port, _):
        base = f"http://127.0.0.1:{port}"
        freeze_client_heap()

        async def scenario() -> tuple[list[Sample], dict[str, Any], float]:
            load = asyncio.create_task(closed_loop(port, bodies, 4, args.reload_duration, args.timeout))
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
        row = latency_row(samples, time.perf_counter() - t0, mode="closed", concurrency=4, index="ivf")
    return {
        **row,
        "reload_state": status.get("state"),
        "reload_error": status.get("error"),
        "reload_s": round(reload_s, 1),
    }


def beauty_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The latest FINISHED Beauty SASRec run (or --beauty-run-id) served with an exact index."""
    uri = args.beauty_tracking_uri
    run_id = args.beauty_run_id or find_latest_run(uri, {"dataset": "beauty", "model": "sasrec"})
    if run_id is None:
        return {"skipped": f"no FINISHED sasrec run tagged dataset=beauty in {uri} (pass --beauty-run-id)"}
    return exact_index_case(args, root, rng, run_id, uri, "beauty")


def llm_rec_case(args: argparse.Namespace, root: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The LLM-backed model (bench/llm_rec.py's run --llm-rec-run-id) exported with an exact index and
    served: top-k for sampled stored users (one backbone forward pass per request, then FAISS)."""
    return exact_index_case(args, root, rng, args.llm_rec_run_id, args.llm_rec_tracking_uri, "llm-rec")


def exact_index_case(
    args: argparse.Namespace, root: Path, rng: np.random.Generator, run_id: str, uri: str, label: str
) -> dict[str, Any]:
    """Run `run_id` exported as `models:/bench-<label>@bench` (exact index), served at the load levels."""
    ref, users = exported_with_users(run_id, uri, f"bench-{label}", args.users, rng)
    with serving(f"models:/bench-{label}@bench", uri, root / f"server-{label}.log", args.threads) as (port, proc):
        levels = run_levels(port, bodies_for_users(users, args.k), load_plan(args), index="flat")
        rss = rss_mb(proc.pid)
    out = {"run_id": run_id, "model_version": ref.version, "index": "flat", "k": args.k}
    return out | {"levels": levels, "server_rss_mb": rss}


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
            out[label] = run_levels(port, bodies, load_plan(args), index="flat", stage=label)
            out[f"{label}_rss_mb"] = rss_mb(proc.pid)
    out["added_ms"] = [
        level_of(plain)
        | {"p50": _diff(ranked["p50_ms"], plain["p50_ms"]), "p99": _diff(ranked["p99_ms"], plain["p99_ms"])}
        for plain, ranked in zip(out["retrieval_only"], out["ranked"], strict=True)
    ]
    return out


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


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
            results["startup"] = startup_case(Path(args.startup_data), args.startup_repeats, root / "startup")
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
