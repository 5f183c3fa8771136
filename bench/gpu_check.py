"""The CUDA paths users take, checked in one go on a lent NVIDIA GPU (at most 8 minutes): one record.

bench/gpu_check.sh [--out bench/results/gpu_check.json] [--budget-s 470] [--data-config configs/data/ml-1m.yaml]

Steps, each a subprocess under `timeout` (its own limit, cut to what is left of the budget), each
recorded as ok / failed / skipped with the reason, the record rewritten after every step (a kill
leaves what was done):
  preflight        torch, CUDA device, bf16 support, fla and faiss versions
  prepare_data     the ML-1M half processed (pipelines.prepare_data), when it is not already
  sasrec_epoch_fp32 / sasrec_epoch_bf16   one SASRec epoch on it (pipelines.train, accelerator gpu)
  time_to_quality  bench/time_to_quality.py on the GPU, capped by train.max_minutes; its row goes to
                   time_to_quality.json beside --out
  attention_fla_vs_sdpa   linear attention through the fla kernel vs sdpa at 8k and 16k (bench/attention.py)
  faiss_gpu        a faiss GPU index build and search, recall against exact CPU search
  pytest_gpu       the tests marked `gpu`
Without a CUDA device every GPU-bound step is skipped in seconds, and the record says why.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402

SASREC = "configs/experiment/sasrec_ml-1m.yaml"
TTQ_MINUTES = 2.0  # the time-to-quality run's training cap on the GPU
LIMITS_S = {  # per step, before the budget cuts them
    "prepare_data": 60,
    "sasrec_epoch_fp32": 75,
    "sasrec_epoch_bf16": 75,
    "time_to_quality": int(TTQ_MINUTES * 60) + 50,
    "attention_fla_vs_sdpa": 60,
    "faiss_gpu": 45,
    "pytest_gpu": 90,
}


def preflight() -> dict[str, Any]:
    """What this machine offers: CUDA device, bf16, fla and faiss (with its GPU count)."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": None}
    if torch.cuda.is_available():
        info |= {"device": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported()}
    try:
        import fla

        info["fla"] = getattr(fla, "__version__", "installed")
    except ImportError:
        info["fla"] = None
    try:
        import faiss

        info |= {
            "faiss": faiss.__version__,
            "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0,
        }
    except ImportError:
        info |= {"faiss": None, "faiss_gpus": 0}
    return info


def attention_step() -> dict[str, Any]:
    """bench/attention.py's CUDA section (sdpa, pure-PyTorch linear, fla's kernel) at 8k and 16k."""
    sys.path.insert(0, str(ROOT / "bench"))
    from attention import _gpu_section

    return dict(_gpu_section([8192, 16384], chunk_size=64))


def faiss_step(n: int = 1_000_000, dim: int = 64, n_queries: int = 2_000, k: int = 100) -> dict[str, Any]:
    """Exact and IVF GPU indexes over `n` random vectors: build and search times, recall against CPU exact."""
    import faiss
    import numpy as np

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, dim), dtype=np.float32)
    xq = rng.standard_normal((n_queries, dim), dtype=np.float32)
    res = faiss.StandardGpuResources()
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(xb)
    _, truth = cpu.search(xq[:200], k)
    out: dict[str, Any] = {"n": n, "dim": dim, "queries": n_queries, "k": k}
    for name, factory in (("flat", "Flat"), ("ivf4096_flat", "IVF4096,Flat")):
        t0 = time.perf_counter()
        index = faiss.index_cpu_to_gpu(res, 0, faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))
        index.train(xb)
        index.add(xb)
        build_s = time.perf_counter() - t0
        if hasattr(index, "nprobe"):
            index.nprobe = 32
        index.search(xq[:10], k)  # warm-up
        t0 = time.perf_counter()
        _, ids = index.search(xq, k)
        search_s = time.perf_counter() - t0
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids[:200], truth, strict=True)]))
        out[name] = {"build_s": round(build_s, 3), "search_s": round(search_s, 4), f"recall@{k}": round(recall, 4)}
    return out


IN_PROCESS = {"preflight": preflight, "attention": attention_step, "faiss": faiss_step}


def run_step(cmd: list[str], limit_s: float) -> dict[str, Any]:
    """Run `cmd` under coreutils `timeout` (its process group killed at the limit); outcome, wall time, output tail."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["timeout", "-k", "10", str(int(limit_s)), *cmd], capture_output=True, text=True, cwd=ROOT, check=False
    )
    out: dict[str, Any] = {"command": shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 2)}
    if proc.returncode == 0:
        return out | {"status": "ok", "stdout": proc.stdout[-4000:]}
    reason = f"timed out after {int(limit_s)} s" if proc.returncode in (124, 137) else f"exit {proc.returncode}"
    return out | {"status": "failed", "reason": reason, "output_tail": (proc.stdout + proc.stderr)[-2000:]}


def last_json(step: dict[str, Any], key: str) -> dict[str, Any]:
    """An ok step with the JSON its command printed last moved from `stdout` to `key`."""
    if step["status"] != "ok":
        return step
    stdout = step.pop("stdout")
    return step | {key: json.loads(stdout.strip().splitlines()[-1])}


def in_process(name: str, limit_s: float) -> dict[str, Any]:
    """One IN_PROCESS measurement in its own subprocess; its JSON result under `result`."""
    return last_json(run_step([sys.executable, str(Path(__file__)), "--step", name], limit_s), "result")


def skipped(reason: str, **extra: Any) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, **extra}


def train_epoch(cmd: list[str], result: Path, limit_s: float) -> dict[str, Any]:
    """One `pipelines.train` run writing its record to `result`: outcome, fit time and test NDCG@10."""
    step = run_step([*cmd, "--results-json", str(result)], limit_s)
    if step["status"] != "ok":
        return step
    rec = json.loads(result.read_text())
    step.pop("stdout")
    return step | {
        "fit_s": rec.get("fit_s"),
        "epochs": rec.get("epochs"),
        "test/ndcg@10": rec["metrics"]["test/ndcg@10"],
    }


class Check:
    """The record being written: steps so far, rewritten to `out` after each step within `budget_s`."""

    def __init__(self, out: Path, budget_s: float, command: str) -> None:
        self.out, self.budget_s, self.command = out, budget_s, command
        self.started_at, self.t0 = now_iso(), time.perf_counter()
        self.load_start = list(os.getloadavg())
        self.steps: dict[str, dict[str, Any]] = {}

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def record(self, name: str, outcome: dict[str, Any]) -> None:
        self.steps[name] = outcome
        print(f"{name}: {outcome['status']}" + (f" ({outcome['reason']})" if "reason" in outcome else ""), flush=True)
        load = {"load_average": {"start": self.load_start, "end": list(os.getloadavg())}}
        wall_s = time.perf_counter() - self.t0
        write_record(
            self.out, base_record("gpu_check", self.command, self.started_at, wall_s) | load | {"steps": self.steps}
        )

    def step(self, name: str, run: Callable[[float], dict[str, Any]]) -> None:
        """Run a step with its limit cut to the budget left (skipped when under 10 s are left)."""
        limit = min(LIMITS_S[name], self.left())
        self.record(name, run(limit) if limit >= 10 else skipped(f"budget of {self.budget_s:.0f} s spent"))


def commands(data_config: str, tmp: Path, ttq_out: Path) -> dict[str, list[str]]:
    """The command line of every subprocess step; training runs tracked in a throwaway store under `tmp`
    (bench/time_to_quality.py keeps its own)."""
    py = sys.executable
    gpu_run = [f"data={data_config}", "train.accelerator=gpu", "train.progress_bar=false"]
    tracked = [f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db", f"tracking.artifact_dir={tmp}/artifacts"]
    train = [py, "-m", "pipelines.train", "--config", SASREC, *gpu_run, *tracked, "train.max_epochs=1"]
    ttq = [py, "bench/time_to_quality.py", "--config", SASREC, "--recipe", "shipped_gpu", "--out", str(ttq_out)]
    ttq += ["--target-metric", "test/ndcg@10", "--target", "0.175", *gpu_run, f"train.max_minutes={TTQ_MINUTES}"]
    return {
        "prepare_data": [py, "-m", "pipelines.prepare_data", "--config", data_config],
        "sasrec_epoch_fp32": [*train, "train.precision=32-true"],
        "sasrec_epoch_bf16": [*train, "train.precision=bf16-mixed"],
        "time_to_quality": ttq,
        "pytest_gpu": [py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
    }


def processed_dir(data_config: str) -> Path | None:
    """The processed dataset directory of `data_config` when it holds a dataset already, else None."""
    from recsys.config import load_config
    from recsys.data.config import DataConfig
    from recsys.data.schema import META_FILE

    out = Path(load_config(DataConfig, data_config).output_dir)
    return out if (out / META_FILE).is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/gpu_check.json")
    p.add_argument("--budget-s", type=float, default=470.0, help="all steps together (the device lends 8 minutes)")
    p.add_argument("--data-config", default="configs/data/ml-1m.yaml", help="the ML-1M half's data config")
    p.add_argument("--step", choices=sorted(IN_PROCESS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        print(json.dumps(IN_PROCESS[args.step]()))
        return 0
    command = shlex.join(["bench/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)])
    check = Check(args.out, args.budget_s, command)
    pre = in_process("preflight", max(10.0, min(60.0, check.left())))
    check.record("preflight", pre)
    info = pre.get("result", {})
    if not info.get("device"):
        no_gpu = "no CUDA device" if pre["status"] == "ok" else f"preflight failed: {pre.get('reason')}"
        also = {  # what would be skipped on a GPU too
            "attention_fla_vs_sdpa": "" if info.get("fla") else "; fla not installed",
            "faiss_gpu": "" if info.get("faiss_gpus") else "; faiss built without GPU",
        }
        for name in LIMITS_S:
            check.record(name, skipped(no_gpu + also.get(name, "")))
        return 0 if pre["status"] == "ok" else 1

    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))  # throwaway MLflow store and run records
    cmds = commands(args.data_config, tmp, args.out.parent / "time_to_quality.json")
    # the ML-1M half, processed once (its raw file, or the processed directory, must be on this machine)
    ready = processed_dir(args.data_config)
    if ready is not None:
        check.record("prepare_data", skipped(f"already processed in {ready}"))
    else:
        check.step("prepare_data", lambda s: run_step(cmds["prepare_data"], s))
    no_data = None if processed_dir(args.data_config) else "no processed ML-1M data (prepare_data failed)"
    for name in ("sasrec_epoch_fp32", "sasrec_epoch_bf16"):
        if no_data or (name.endswith("bf16") and not info.get("bf16")):
            check.record(name, skipped(no_data or f"{info['device']} has no bf16 support"))
        else:
            check.step(name, functools.partial(train_epoch, cmds[name], tmp / f"{name}.json"))
    if no_data:
        check.record("time_to_quality", skipped(no_data))
    else:
        check.step("time_to_quality", lambda s: last_json(run_step(cmds["time_to_quality"], s), "row"))

    if info.get("fla"):
        check.step("attention_fla_vs_sdpa", lambda s: in_process("attention", s))
    else:  # still measured: sdpa against the pure-PyTorch linear attention on the GPU
        fallback = "fla not installed: sdpa and pure-PyTorch linear only"
        check.step("attention_fla_vs_sdpa", lambda s: skipped(fallback, run=in_process("attention", s)))
    if not info.get("faiss"):
        check.record("faiss_gpu", skipped("faiss not installed"))
    elif not info.get("faiss_gpus"):
        check.record("faiss_gpu", skipped("faiss built without GPU (faiss.get_num_gpus() == 0)"))
    else:
        check.step("faiss_gpu", lambda s: in_process("faiss", s))
    check.step("pytest_gpu", lambda s: run_step(cmds["pytest_gpu"], s))
    return 0 if all(step["status"] != "failed" for step in check.steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
