"""Attention backends side by side: forward+backward time and peak memory vs sequence length.

    .venv/bin/python bench/attention.py            # writes bench/results/attention.json

Shapes: batch 1, 2 heads, head dim 64, fp32, no padding, causal (SASRec) and bidirectional
(BERT4Rec), torch.set_num_threads(2). Each (backend, mode, L) case runs in a fresh subprocess:
one warm-up forward+backward, then the median of `reps` timed ones.

Memory method (CPU): peak resident-set growth of that subprocess, i.e. `ru_maxrss` after the runs
minus the RSS just before them (inputs already allocated). It counts what the process really
touched, allocator slack included, so it is an upper bound on live tensor memory rather than an
exact count. If the runs never rose above the import-time peak, `ru_maxrss` does not move and the
row says `peak_below_import_peak: true` (the figure is then a lower bound; only tiny cases).
eager is skipped where its L x L tensors (about 6 live fp32 copies) would exceed --max-gb.
The GPU section (fla kernel vs pure-PyTorch linear vs sdpa, CUDA peak memory) runs only when
CUDA is available.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.nn.attention import ATTENTION, AttentionFn, get_attention  # noqa: E402
from recsys.nn.linear_attention import linear_attention  # noqa: E402

H, DH = 2, 64
BACKENDS = ("eager", "sdpa", "linear")
MODES = ("causal", "bidirectional")


def _inputs(L: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    return tuple(torch.randn(1, H, L, DH, generator=g, device=device, requires_grad=True) for _ in range(3))


def _step(fn: AttentionFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    out = fn(q, k, v, causal=causal, key_padding_mask=None, dropout=0.0)
    out.sum().backward()
    q.grad = k.grad = v.grad = None


def run_case(backend: str, mode: str, L: int, reps: int, chunk_size: int) -> dict:
    """Time one case in this process (called in a fresh subprocess by `main`)."""
    torch.set_num_threads(2)
    fn = get_attention(backend, chunk_size=chunk_size)
    causal = mode == "causal"
    q, k, v = _inputs(L)
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    rss_before = psutil.Process().memory_info().rss
    _step(fn, q, k, v, causal)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        _step(fn, q, k, v, causal)
        times.append(time.perf_counter() - t0)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "median_s": statistics.median(times),
        "times_s": [round(t, 5) for t in times],
        "peak_mem_mb": round(max(0, maxrss_after - rss_before) / 2**20, 1),
        "peak_below_import_peak": maxrss_after == maxrss_before,
    }


def _eager_gb(L: int) -> float:
    return 6 * H * L * L * 4 / 2**30


def _machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__}


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "recsys/nn", "bench/attention.py"], capture_output=True, text=True
        ).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _gpu_section(lengths: list[int], chunk_size: int) -> dict:
    """fla kernel vs pure-PyTorch linear vs sdpa on CUDA (peak memory from the CUDA allocator)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    try:
        import fla  # noqa: F401

        has_fla = True
    except ImportError:
        has_fla = False
    fns = {
        "sdpa": ATTENTION["sdpa"],
        "linear_torch": lambda q, k, v, **kw: linear_attention(q, k, v, chunk_size=chunk_size, use_fla=False, **kw),
    }
    if has_fla:
        fns["linear_fla"] = lambda q, k, v, **kw: linear_attention(q, k, v, use_fla=True, **kw)
    rows = []
    for L in lengths:
        for name, fn in fns.items():
            q, k, v = _inputs(L, "cuda")
            _step(fn, q, k, v, True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(10):
                t0 = time.perf_counter()
                _step(fn, q, k, v, True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated() / 2**20
            rows.append(
                {"backend": name, "mode": "causal", "L": L, "median_s": statistics.median(times), "peak_mem_mb": peak}
            )
    return {"fla_available": has_fla, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="256,1024,4096,8192,16384")
    p.add_argument("--linear-extra", default="32768", help="lengths run for linear only")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--max-gb", type=float, default=8.0)
    p.add_argument("--out", default="bench/results/attention.json")
    p.add_argument("--case", nargs=4, metavar=("BACKEND", "MODE", "L", "REPS"), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.case:
        backend, mode, L, reps = args.case
        print(json.dumps(run_case(backend, mode, int(L), int(reps), args.chunk_size)))
        return

    started, t_start = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()
    load_start = os.getloadavg()
    lengths = [int(x) for x in args.lengths.split(",")]
    extra = [int(x) for x in args.linear_extra.split(",") if x]
    rows = []
    for mode in args.modes.split(","):
        for L in sorted(set(lengths + extra)):
            for backend in BACKENDS:
                row = {"backend": backend, "mode": mode, "L": L, "batch": 1, "heads": H, "head_dim": DH}
                if backend == "linear":
                    row["chunk_size"] = args.chunk_size
                if L not in lengths and backend != "linear":
                    continue
                if backend == "eager" and _eager_gb(L) > args.max_gb:
                    row["skipped"] = f"eager would need ~{_eager_gb(L):.0f} GB of L x L tensors (> {args.max_gb} GB)"
                    rows.append(row)
                    continue
                reps = 5 if L <= 4096 else 3
                cmd = [
                    sys.executable,
                    __file__,
                    "--chunk-size",
                    str(args.chunk_size),
                    "--case",
                    backend,
                    mode,
                    str(L),
                    str(reps),
                ]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    row["skipped"] = f"failed (rc={res.returncode}): {res.stderr.strip().splitlines()[-1:]}"
                else:
                    row.update(json.loads(res.stdout.strip().splitlines()[-1]))
                rows.append(row)
                print(json.dumps(row), flush=True)

    ratios = []
    timed = {(r["backend"], r["mode"], r["L"]): r for r in rows if "median_s" in r}
    for (backend, mode, L), r in sorted(timed.items()):
        if backend == "linear" and ("sdpa", mode, L) in timed:
            s = timed[("sdpa", mode, L)]
            ratios.append(
                {
                    "mode": mode,
                    "L": L,
                    "linear_speedup_vs_sdpa": round(s["median_s"] / r["median_s"], 2),
                    "linear_mem_ratio_vs_sdpa": round(r["peak_mem_mb"] / max(s["peak_mem_mb"], 0.1), 2),
                }
            )
    result = {
        "name": "attention_backends",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": _git_commit(),
        "machine": {**_machine(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "started_at": started,
        "wall_s": None,
        "config": {"batch": 1, "heads": H, "head_dim": DH, "dtype": "float32", "threads": 2, "padding": None},
        "memory_method": "peak RSS growth per case in a fresh subprocess (ru_maxrss after - RSS before)",
        "rows": rows,
        "linear_vs_sdpa": ratios,
        "gpu": _gpu_section(lengths + extra, args.chunk_size),
    }
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
