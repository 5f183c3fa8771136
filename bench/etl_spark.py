"""ETL engines side by side: polars vs Spark (`engine: spark`, local mode) on the same inputs.

(a) parity: the ML-1M half and Beauty through both engines, processed directories compared file by file
    (`recsys.data.processed.diff_processed`: tables row by row, meta.json, rejected sample);
(b) the generated log of bench/etl.py (`--rows` rows, parquet chunks) through both engines, each in a
    child process: wall time and peak memory (RSS of the process tree, JVM included, sampled every
    0.2 s), and the two outputs compared.

    python bench/etl_spark.py [--rows 50000000] [--skip-parity] [--skip-large] [--out bench/results/etl_spark.json]

Spark runs with `--spark-master` (default local[2], this machine's cores) and `--spark-memory` for its
driver JVM (in local mode the driver is the executor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from etl import generate_log  # noqa: E402

from recsys.config import load_config  # noqa: E402
from recsys.data.config import DataConfig  # noqa: E402
from recsys.data.processed import diff_processed  # noqa: E402
from recsys.data.steps import STEPS  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402

DATASETS = {"ml-1m": "configs/data/ml-1m.yaml", "beauty": "configs/data/beauty.yaml"}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_child(config: Path, engine: str, out_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One ETL run in a child process; wall time and the peak RSS of its process tree."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(config),
        "--engine",
        engine,
        "--child-out",
        str(out_dir),
        "--spark-master",
        args.spark_master,
        "--spark-memory",
        args.spark_memory,
        "--shuffle-partitions",
        str(args.shuffle_partitions),
    ]
    load_before = _load()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - t
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} ETL failed: {stderr[-3000:]}")
    meta = json.loads((out_dir / "meta.json").read_text())
    return {
        "engine": engine,
        "wall_s": round(wall, 2),
        "etl_s": json.loads(stdout.strip().splitlines()[-1])["wall_s"],
        "peak_rss_gb": round(peak / 1024**3, 3),
        "load_avg_before": load_before,
        "load_avg_after": _load(),
        "n_users": meta["n_users"],
        "n_items": meta["n_items"],
        "n_interactions": meta["n_interactions"],
        "k_core_rounds": meta["filters"]["k_core"]["rounds"],
    }


def child(args: argparse.Namespace) -> int:
    """Runs in the child: one engine on one config, printing the ETL's own wall time as JSON."""
    from recsys.data.etl import run_etl

    cfg = load_config(DataConfig, args.child, [f"engine={args.engine}", f"output_dir={args.child_out}"])
    spark = None
    if args.engine == "spark":
        from recsys.data.spark_etl import spark_session

        spark = spark_session(
            {
                "spark.master": args.spark_master,
                "spark.driver.memory": args.spark_memory,
                "spark.sql.shuffle.partitions": str(args.shuffle_partitions),
                "spark.ui.enabled": "false",
                "spark.local.dir": str(Path(args.child_out).parent / "spark-tmp"),
            }
        )
        spark.sparkContext.setLogLevel("ERROR")
    result = run_etl(cfg, base_dir=REPO, spark=spark)
    print(json.dumps({"wall_s": round(result.wall_s, 2)}))
    return 0


def parity(name: str, config: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs = {}
    for engine in ("polars", "spark"):
        runs[engine] = run_child(REPO / config, engine, workdir / f"{name}-{engine}", args)
    diffs = diff_processed(workdir / f"{name}-polars", workdir / f"{name}-spark")
    return {"dataset": name, "config": config, "identical_outputs": not diffs, "differences": diffs[:10], **runs}


def large(rows: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    log_dir = workdir / "log"
    t = time.perf_counter()
    generate_log(log_dir, rows, args.users, args.items, chunk=5_000_000, seed=0)
    gen_s = time.perf_counter() - t
    cfg = workdir / "large.yaml"
    cfg.write_text(
        "name: large\n"
        f"output_dir: {workdir / 'unused'}\n"
        "source:\n  format: parquet\n"
        f"  path: {log_dir}\n"
        "  columns: {user: user_id, item: item_id, timestamp: ts}\n"
    )
    runs = {}
    for engine in ("polars", "spark"):
        runs[engine] = run_child(cfg, engine, workdir / f"large-{engine}", args)
        print(json.dumps(runs[engine]), flush=True)
    diffs = diff_processed(workdir / "large-polars", workdir / "large-spark")
    shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "rows": rows,
        "n_users_generated": args.users,
        "n_items_generated": args.items,
        "generate_s": round(gen_s, 2),
        "identical_outputs": not diffs,
        "differences": diffs[:10],
        "spark_over_polars_wall": round(runs["spark"]["wall_s"] / runs["polars"]["wall_s"], 2),
        "spark_over_polars_peak_rss": round(runs["spark"]["peak_rss_gb"] / runs["polars"]["peak_rss_gb"], 2),
        **runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000_000)
    # default rows / 50 each: 50 rows per user and per item on average, as bench/etl.py's 50M over 1M and 1M
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-memory", default="8g", help="Spark driver JVM heap (local mode: the executor)")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--workdir", default=None, help="temp dir for logs and outputs (default: system temp)")
    parser.add_argument("--out", default=str(REPO / "bench/results/etl_spark.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="polars", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.users = args.users or max(1, args.rows // 50)
    args.items = args.items or max(1, args.rows // 50)
    started = now_iso()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"steps": list(STEPS)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if not args.skip_parity:
            for name, config in DATASETS.items():
                source = load_config(DataConfig, REPO / config).source.path
                if not (REPO / source).exists():
                    results[f"parity_{name}"] = {"skipped": f"{source} not found (../shared/data)"}
                    continue
                results[f"parity_{name}"] = parity(name, config, Path(tmp), args)
                print(json.dumps(results[f"parity_{name}"], indent=2), flush=True)
        if not args.skip_large:
            results["large"] = large(args.rows, Path(tmp), args)
            print(json.dumps(results["large"], indent=2), flush=True)
    import pyspark

    command = " ".join([Path(sys.executable).name, *sys.argv])
    record = base_record("etl_spark", command, started, time.perf_counter() - t0)
    record["machine"] |= {"polars": pl.__version__, "pyspark": pyspark.__version__}
    record |= {
        "load_avg_at_end": _load(),
        "spark": {"master": args.spark_master, "driver_memory": args.spark_memory},
        "results": results,
    }
    print(f"wrote {write_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
