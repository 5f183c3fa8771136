"""Attention backends side by side: forward+backward time and peak memory vs sequence length.

    .venv/bin/python bench/attention.py            # writes bench/results/attention.json

Shapes: batch 1, 2 heads, head dim 64, fp32, no padding, causal (SASRec) and bidirectional
(BERT4Rec), torch.set_num_threads(2) (--threads).

Time: for each (mode, L) one subprocess warms every backend up, then runs `reps` rounds that
time one forward+backward of each backend in turn (round-robin), so a change in machine load
hits all backends alike. Rows give the median and the min over rounds; ratios use medians.

Memory (CPU): each (backend, mode, L) runs once more in its own fresh subprocess; the figure is
the peak resident-set growth, `ru_maxrss` after two forward+backward passes minus the RSS just
before them (inputs already allocated). It counts what the process really touched, allocator
slack included: an upper bound on live tensor memory, not an exact count. Where the runs never
rose above the import-time peak, `ru_maxrss` does not move and the row says
`peak_below_import_peak: true` (then a lower bound; tiny cases only).

eager is skipped where its L x L tensors (about 6 live fp32 copies) would exceed --max-gb. The
GPU section (fla kernel vs pure-PyTorch linear vs sdpa, CUDA allocator peak) runs only on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.nn.attention import AttentionFn, get_attention  # noqa: E402
from recsys.nn.linear_attention import linear_attention  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402

H, DH = 2, 64
BACKENDS = ("eager", "sdpa", "linear")
MODES = ("causal", "bidirectional")


def _inputs(L: int, device: str = "cpu") -> list[torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(0)
    return [torch.randn(1, H, L, DH, generator=g, device=device, requires_grad=True) for _ in range(3)]


def _step(fn: AttentionFn, qkv: list[torch.Tensor], causal: bool) -> float:
    """One forward+backward; returns its wall time in seconds."""
    t0 = time.perf_counter()
    q, k, v = qkv
    fn(q, k, v, causal=causal, key_padding_mask=None, dropout=0.0).sum().backward()
    if q.is_cuda:
        torch.cuda.synchronize()
    for t in qkv:
        t.grad = None
    return time.perf_counter() - t0


def time_group(backends: list[str], mode: str, L: int, reps: int, chunk_size: int) -> dict:
    """Round-robin timing of `backends` at one (mode, L), in this process."""
    fns = {b: get_attention(b, chunk_size=chunk_size) for b in backends}
    qkv = _inputs(L)
    for fn in fns.values():
        _step(fn, qkv, mode == "causal")  # warm-up
    times: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(reps):
        for b, fn in fns.items():
            times[b].append(_step(fn, qkv, mode == "causal"))
    return times


def peak_memory(backend: str, mode: str, L: int, chunk_size: int) -> dict:
    """Peak RSS growth of two forward+backward passes, in this (fresh) process."""
    fn = get_attention(backend, chunk_size=chunk_size)
    qkv = _inputs(L)
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    rss_before = psutil.Process().memory_info().rss
    for _ in range(2):
        _step(fn, qkv, mode == "causal")
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "peak_mem_mb": round(max(0, maxrss_after - rss_before) / 2**20, 1),
        "peak_below_import_peak": maxrss_after == maxrss_before,
    }


def _subprocess(args: list[str]) -> dict:
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": f"rc={res.returncode}: {res.stderr.strip().splitlines()[-1:]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _eager_gb(L: int) -> float:
    return 6 * H * L * L * 4 / 2**30


def _attention_code_changed() -> bool:
    """Whether recsys/nn or this script differ from the commit (the record's commit then gets `-dirty`)."""
    mine = ["git", "status", "--porcelain", "--", "recsys/nn", "bench/attention.py"]
    try:
        return bool(subprocess.run(mine, capture_output=True, text=True).stdout.strip())
    except OSError:
        return False


def _gpu_section(lengths: list[int], chunk_size: int) -> dict:
    """fla kernel vs pure-PyTorch linear vs sdpa on CUDA, causal (peak from the CUDA allocator)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    try:
        import fla  # noqa: F401

        has_fla = True
    except ImportError:
        has_fla = False
    fns: dict[str, AttentionFn] = {
        "sdpa": get_attention("sdpa"),
        "linear_torch": lambda q, k, v, **kw: linear_attention(q, k, v, chunk_size=chunk_size, use_fla=False, **kw),
    }
    if has_fla:
        fns["linear_fla"] = lambda q, k, v, **kw: linear_attention(q, k, v, use_fla=True, **kw)
    rows = []
    for L in lengths:
        for name, fn in fns.items():
            qkv = _inputs(L, "cuda")
            _step(fn, qkv, True)
            torch.cuda.reset_peak_memory_stats()
            times = [_step(fn, qkv, True) for _ in range(10)]
            peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            rows.append({"backend": name, "L": L, "median_s": statistics.median(times), "peak_mem_mb": peak})
    return {"fla_available": has_fla, "mode": "causal", "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="256,1024,4096,8192,16384")
    p.add_argument("--linear-extra", default="32768", help="lengths run for linear only")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--max-gb", type=float, default=8.0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every case")
    p.add_argument("--out", default="bench/results/attention.json")
    p.add_argument("--time-group", nargs=4, metavar=("BACKENDS", "MODE", "L", "REPS"), help=argparse.SUPPRESS)
    p.add_argument("--mem-case", nargs=3, metavar=("BACKEND", "MODE", "L"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.time_group:
        backends, mode, L, reps = args.time_group
        print(json.dumps(time_group(backends.split(","), mode, int(L), int(reps), args.chunk_size)))
        return
    if args.mem_case:
        backend, mode, L = args.mem_case
        print(json.dumps(peak_memory(backend, mode, int(L), args.chunk_size)))
        return

    started, t_start = now_iso(), time.perf_counter()
    load_start = os.getloadavg()
    lengths = [int(x) for x in args.lengths.split(",")]
    extra = [int(x) for x in args.linear_extra.split(",") if x]
    chunk = ["--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
    rows = []
    for mode in args.modes.split(","):
        for L in sorted(set(lengths + extra)):
            skipped = {}
            if L not in lengths:
                skipped = {"eager": "not in --lengths (linear-only length)", "sdpa": "not in --lengths"}
            elif _eager_gb(L) > args.max_gb:
                skipped["eager"] = f"eager would need ~{_eager_gb(L):.0f} GB of L x L tensors (> {args.max_gb} GB)"
            run = [b for b in BACKENDS if b not in skipped]
            reps = 7 if L <= 4096 else 3
            times = _subprocess([*chunk, "--time-group", ",".join(run), mode, str(L), str(reps)])
            load = os.getloadavg()[0]
            for backend in BACKENDS:
                row: dict = {"backend": backend, "mode": mode, "L": L}
                if backend == "linear":
                    row["chunk_size"] = args.chunk_size
                if backend in skipped:
                    if L in lengths:
                        rows.append({**row, "skipped": skipped[backend]})
                    continue
                if "error" in times:
                    row["skipped"] = f"failed: {times['error']}"
                else:
                    t = times[backend]
                    row.update(median_s=round(statistics.median(t), 5), min_s=round(min(t), 5))
                    row["times_s"] = [round(x, 5) for x in t]
                    row.update(_subprocess([*chunk, "--mem-case", backend, mode, str(L)]))
                row["loadavg_1m"] = round(load, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)

    timed = {(r["backend"], r["mode"], r["L"]): r for r in rows if "median_s" in r}
    ratios = []
    for (backend, mode, L), r in sorted(timed.items()):
        s = timed.get(("sdpa", mode, L))
        if backend == "linear" and s is not None:
            ratios.append(
                {
                    "mode": mode,
                    "L": L,
                    "linear_speedup_vs_sdpa_median": round(s["median_s"] / r["median_s"], 2),
                    "linear_speedup_vs_sdpa_min": round(s["min_s"] / r["min_s"], 2),
                    "linear_mem_ratio_vs_sdpa": round(r.get("peak_mem_mb", 0) / max(s.get("peak_mem_mb", 0), 0.1), 2),
                }
            )
    gpu = _gpu_section(lengths + extra, args.chunk_size)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    result = base_record("attention_backends", command, started, time.perf_counter() - t_start)
    if result["git_commit"] and _attention_code_changed():
        result["git_commit"] += "-dirty"
    result["machine"] |= {"torch": torch.__version__, "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    result |= {
        "config": {
            "batch": 1,
            "heads": H,
            "head_dim": DH,
            "dtype": "float32",
            "threads": args.threads,
            "padding": None,
        },
        "time_method": "round-robin over backends per (mode, L) in one subprocess; 1 warm-up each",
        "memory_method": "peak RSS growth per case in a fresh subprocess (ru_maxrss after - RSS before)",
        "rows": rows,
        "linear_vs_sdpa": ratios,
        "gpu": gpu,
    }
    write_record(args.out, result)
    print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
    main()
