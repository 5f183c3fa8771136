"""The serving benchmark's startup case: time to ready and memory of the serve command for the demo's model.

The demo's model (configs/experiment/demo.yaml's SASRec, seeded, on the processed ML-1M of --startup-data,
or a synthetic catalog of its size) exported to a temporary registry; the serve command started
--startup-repeats times: seconds to the first 200 from /readyz, RSS and CPU seconds then, and the import
time of the serving process, next to the model's and the bundle's size. bench/serve.py runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from serve_setup import REPO, log_model_run

from pipelines.serve_demo import free_port
from recsys.data import schema as S
from recsys.model_io import save_model
from recsys.registry import build_model
from recsys.retrieval.export import export_run
from recsys.retrieval.index import IndexConfig
from recsys.tracking.records import summarize

# configs/experiment/demo.yaml's model: configs/model/sasrec.yaml with max_len 100
DEMO_SASREC = {"max_len": 100, "hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "attn_dropout": 0.2}
STARTUP_TARGET_S = 3.0


def startup_case(data: Path, repeats: int, root: Path) -> dict[str, Any]:
    """Time to ready and memory of the serve command for the demo's model, served from a registry.

    Args:
        data: the demo's processed data; a synthetic catalog of ML-1M's size when it has no meta file.
        repeats: how many times the import and the serve command are timed.
        root: an empty working directory (registry, artifacts, synthetic data).
    """
    import httpx
    import psutil

    from recsys.tracking.registry import resolve_model_uri

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
    run_id = log_model_run(root, uri, "bench-startup", data)
    ref = export_run(run_id, tracking_uri=uri, name="bench-startup", alias="champion", index_config=IndexConfig("flat"))
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
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
        wall, cpu = (float(x) for x in out.stdout.split())
        imports.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
    runs = []
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", "models:/bench-startup@champion"]
    cmd += ["--tracking-uri", uri, "--log-level", "warning"]
    for _ in range(repeats):
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
    ready_s_median = summarize([r["ready_s"] for r in runs])["median"]
    return {
        "model": {"name": "sasrec", **DEMO_SASREC, "weights": "seeded (startup does not depend on them)"},
        "data": source,
        "index": "flat",
        "model_uri": "models:/bench-startup@champion (sqlite registry)",
        **sizes,
        "import_pipelines_serve": imports,
        "runs": runs,
        "ready_s_median": ready_s_median,
        "rss_mb_median": summarize([r["rss_mb"] for r in runs])["median"],
        "target_ready_s": STARTUP_TARGET_S,
        "meets_target": ready_s_median < STARTUP_TARGET_S,
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
