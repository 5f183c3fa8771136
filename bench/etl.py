"""ETL benchmark: (a) ML-1M partial file, polars ETL vs a plain pandas reference of the same steps
(same run, outputs compared); (b) a generated log of `--rows` rows (parquet chunks) through the
streaming ETL in a child process: wall time and peak RSS.

    python bench/etl.py [--rows 50000000] [--skip-large] [--out bench/results/etl.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.config import load_config  # noqa: E402
from recsys.data.config import DataConfig  # noqa: E402
from recsys.data.etl import run_etl  # noqa: E402
from recsys.data.processed import load_processed  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402


def pandas_reference(ratings: Path, movies: Path, min_user: int, min_item: int) -> dict[str, pd.DataFrame]:
    """The same steps as recsys.data.etl in plain pandas (keep_all, no rating threshold)."""
    with gzip.open(ratings, "rt") as f:
        df = pd.read_csv(f, sep="::", engine="python", header=None, names=["user", "item", "rating", "timestamp"])
    df["row"] = np.arange(len(df))
    for col in ("user", "item", "timestamp"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["rating"] = pd.to_numeric(df["rating"], errors="coerce").astype("float64")
    bad = df[["user", "item", "timestamp", "rating"]].isna().any(axis=1) | (df["timestamp"] < 0)
    df = df[~bad].astype({"user": "int64", "item": "int64", "timestamp": "int64"})
    while True:
        before = len(df)
        df = df[df.groupby("user")["user"].transform("size") >= min_user]
        df = df[df.groupby("item")["item"].transform("size") >= min_item]
        if len(df) == before:
            break
    users = np.sort(df["user"].unique())
    items = np.sort(df["item"].unique())
    df = df.assign(
        user_idx=np.searchsorted(users, df["user"].to_numpy()),
        item_idx=np.searchsorted(items, df["item"].to_numpy()) + 1,
    )
    df = df.sort_values(["user_idx", "timestamp", "row"], kind="stable")
    seq = df.groupby("user_idx", sort=True).agg(items=("item_idx", list), timestamps=("timestamp", list)).reset_index()
    names = pd.read_csv(
        movies, sep="::", engine="python", header=None, names=["id", "title", "genres"], encoding="latin-1"
    )
    names["text"] = names["title"] + " | " + names["genres"].str.replace("|", ", ", regex=False)
    item_table = pd.DataFrame({"item_idx": np.arange(1, len(items) + 1), "raw_id": items.astype(str)})
    item_table = item_table.merge(names.assign(raw_id=names["id"].astype(str))[["raw_id", "text"]], how="left")
    inter = df[["user_idx", "item_idx", "timestamp", "rating"]].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:  # write like the ETL does, so both times include output
        inter.to_parquet(Path(tmp) / "interactions.parquet")
        seq.to_parquet(Path(tmp) / "sequences.parquet")
        item_table.to_parquet(Path(tmp) / "items.parquet")
    return {"interactions": inter, "sequences": seq, "items": item_table}


def bench_ml1m(repeats: int) -> dict[str, object]:
    cfg_path = REPO / "configs/data/ml-1m.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(DataConfig, cfg_path, [f"output_dir={tmp}/ml-1m"])
        ratings = REPO / cfg.source.path
        movies = REPO / cfg.source.items.path  # type: ignore[union-attr]
        polars_s, pandas_s = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            run_etl(cfg, base_dir=REPO)
            polars_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = pandas_reference(ratings, movies, cfg.min_user_interactions, cfg.min_item_interactions)
            pandas_s.append(time.perf_counter() - t)
        got = load_processed(f"{tmp}/ml-1m")
        inter = pl.read_parquet(f"{tmp}/ml-1m/interactions.parquet")
        same = (
            inter.to_pandas().equals(ref["interactions"])
            and got.sequences.to_pandas()["items"].map(list).tolist() == ref["sequences"]["items"].tolist()
            and got.sequences.to_pandas()["timestamps"].map(list).tolist() == ref["sequences"]["timestamps"].tolist()
            and got.items["text"].to_list() == ref["items"]["text"].tolist()
            and got.items["raw_id"].to_list() == ref["items"]["raw_id"].tolist()
        )
    best_pl, best_pd = min(polars_s), min(pandas_s)
    return {
        "dataset": "ml-1m ratings.partial-users1-2999.dat.gz + movies.dat",
        "n_users": got.n_users,
        "n_items": got.n_items,
        "n_interactions": inter.height,
        "repeats": repeats,
        "polars_s": round(best_pl, 3),
        "pandas_s": round(best_pd, 3),
        "speedup": round(best_pd / best_pl, 2),
        "polars_all_s": [round(x, 3) for x in polars_s],
        "pandas_all_s": [round(x, 3) for x in pandas_s],
        "identical_outputs": bool(same),
    }


def generate_log(out_dir: Path, rows: int, n_users: int, n_items: int, chunk: int, seed: int) -> None:
    """Write `rows` synthetic interactions as parquet chunks; items skewed toward popular ones."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        item = (n_items * rng.random(n) ** 1.5).astype(np.int64) + 1
        pl.DataFrame(
            {
                "user_id": rng.integers(1, n_users + 1, n, dtype=np.int64),
                "item_id": item,
                "ts": rng.integers(1_500_000_000, 1_700_000_000, n, dtype=np.int64),
            }
        ).write_parquet(out_dir / f"part-{i:05d}.parquet")


def bench_large(rows: int, n_users: int, n_items: int, workdir: Path) -> dict[str, object]:
    log_dir = workdir / "log"
    t = time.perf_counter()
    generate_log(log_dir, rows, n_users, n_items, chunk=5_000_000, seed=0)
    gen_s = time.perf_counter() - t
    cfg = workdir / "large.yaml"
    cfg.write_text(
        "name: large\n"
        f"output_dir: {workdir / 'processed'}\n"
        "streaming: true\n"
        "source:\n  format: parquet\n"
        f"  path: {log_dir}\n"
        "  columns: {user: user_id, item: item_id, timestamp: ts}\n"
    )
    cmd = [sys.executable, "-m", "pipelines.prepare_data", "--config", str(cfg)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if proc.returncode != 0:
        raise RuntimeError(f"large ETL failed: {proc.stderr[-2000:]}")
    meta = json.loads((workdir / "processed" / "meta.json").read_text())
    return {
        "rows": rows,
        "n_users_generated": n_users,
        "n_items_generated": n_items,
        "generate_s": round(gen_s, 2),
        "etl_wall_s": round(wall, 2),
        "peak_rss_gb": round(peak_kb / 1024**2, 3),
        "n_users": meta["n_users"],
        "n_items": meta["n_items"],
        "n_interactions": meta["n_interactions"],
        "k_core_rounds": meta["filters"]["k_core"]["rounds"],
        "summary": proc.stdout.strip(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-ml1m", action="store_true")
    parser.add_argument("--workdir", default=None, help="temp dir for the generated log (default: system temp)")
    parser.add_argument("--out", default=str(REPO / "bench/results/etl.json"))
    args = parser.parse_args()
    started = now_iso()
    t0 = time.perf_counter()
    results: dict[str, object] = {}
    if not args.skip_ml1m:
        results["ml1m_polars_vs_pandas"] = bench_ml1m(args.repeats)
        print(json.dumps(results["ml1m_polars_vs_pandas"], indent=2))
    if not args.skip_large:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            results["large_streaming"] = bench_large(args.rows, args.users, args.items, Path(tmp))
        print(json.dumps(results["large_streaming"], indent=2))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    record = base_record("etl", command, started, time.perf_counter() - t0) | {"results": results}
    record["machine"] |= {"polars": pl.__version__, "pandas": pd.__version__}
    print(f"wrote {write_record(args.out, record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
