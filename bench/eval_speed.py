"""Full-ranking evaluation speed on Beauty: the fast evaluator against its slow reference, in one run.

python bench/eval_speed.py [--threads 2] [--repeats 3] [--beauty-dir data/processed/beauty] [--note TEXT]

SASRec built from the shipped Beauty config (configs/experiment/sasrec_beauty.yaml) at random init
(nothing trained, nothing loaded) ranks every Beauty test user (leave-one-out, history items masked,
HR/NDCG/MRR@{5,10,20} and coverage) against the whole catalog, through `evaluate` with the slow
reference ranking (`reference=True`, one [B, N] score matrix per batch, every rank by comparison)
and with the fast path, alternating, `--repeats` times each after a one-batch warm-up of each.
Metrics, ranks and top-k lists must be identical (else exit 1). Records the wall and process-CPU
medians, their ratio, and the load average before and after: other jobs on a shared machine
inflate every time here, so the record says how busy it was. Target: the fast path under 1 s.
Writes bench/results/eval_speed.json (or --out).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.eval.evaluate import EvalResult, evaluate  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.registry import build_model  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402
from recsys.train.experiment import EvalConfig, load_experiment  # noqa: E402

CONFIG = ROOT / "configs/experiment/sasrec_beauty.yaml"
TARGET_S = 1.0


def timed_eval(
    model: SequentialRecommender, dm: SequenceDataModule, cfg: EvalConfig, *, reference: bool
) -> tuple[EvalResult, float, float]:
    """One evaluation of every test user: (result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = evaluate(
        model,
        dm.test_dataloader(),
        split="test",
        ks=cfg.ks,
        exclude_seen=cfg.exclude_seen,
        item_chunk=cfg.item_chunk,
        reference=reference,
    )
    return result, time.perf_counter() - wall, time.process_time() - cpu


def identical(a: EvalResult, b: EvalResult) -> bool:
    """Same metrics, ranks and top-k lists, exactly."""
    assert a.ranks is not None and b.ranks is not None and a.topk_ids is not None and b.topk_ids is not None
    return a.metrics == b.metrics and torch.equal(a.ranks, b.ranks) and torch.equal(a.topk_ids, b.topk_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beauty-dir", type=Path, default=ROOT / "data/processed/beauty")
    parser.add_argument("--note", default="", help="how the machine was used meanwhile, stored in the record")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/eval_speed.json")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not (args.beauty_dir / "sequences.parquet").exists():
        parser.error(f"{args.beauty_dir} has no processed Beauty data: python -m pipelines.prepare_data "
                     "--config configs/data/beauty.yaml")  # fmt: skip
    torch.set_num_threads(args.threads)
    started, t_start, load_start = now_iso(), time.perf_counter(), os.getloadavg()

    cfg = load_experiment(CONFIG, [])
    torch.manual_seed(0)
    max_len = build_model(cfg.model.name, cfg.model.params, 1).max_len
    dm = SequenceDataModule(
        args.beauty_dir, max_len=max_len, batch_size=cfg.train.batch_size, eval_batch_size=cfg.eval.batch_size, seed=0
    )
    dm.setup()
    model = build_model(cfg.model.name, cfg.model.params, dm.n_items).eval()

    for reference in (True, False):  # warm-up: one batch each (allocator, thread pool, kernels)
        evaluate(model, itertools.islice(dm.test_dataloader(), 1), split="test", ks=cfg.eval.ks, reference=reference)
    times: dict[str, dict[str, list[float]]] = {k: {"wall_s": [], "cpu_s": []} for k in ("reference", "fast")}
    results: dict[str, EvalResult] = {}
    for _ in range(args.repeats):
        for name in ("reference", "fast"):
            result, wall, cpu = timed_eval(model, dm, cfg.eval, reference=name == "reference")
            times[name]["wall_s"].append(round(wall, 3))
            times[name]["cpu_s"].append(round(cpu, 3))
            if name in results and not identical(result, results[name]):
                raise RuntimeError(f"the {name} evaluator gave different results on a repeat")
            results[name] = result
    same = identical(results["reference"], results["fast"])

    summary = {name: {k: summarize(v) for k, v in t.items()} for name, t in times.items()}
    ref_wall, fast_wall = summary["reference"]["wall_s"]["median"], summary["fast"]["wall_s"]["median"]
    ref_cpu, fast_cpu = summary["reference"]["cpu_s"]["median"], summary["fast"]["cpu_s"]["median"]
    record: dict[str, Any] = base_record(
        "eval_speed", "python " + " ".join(sys.argv), started, time.perf_counter() - t_start
    )
    record |= {
        "dataset": "beauty",
        "model": cfg.model.name,
        "config": str(CONFIG.relative_to(ROOT)),
        "model_params": dict(cfg.model.params),
        "init": "random (torch.manual_seed(0)), nothing trained",
        "protocol": results["fast"].protocol,
        "threads": args.threads,
        "repeats": args.repeats,
        "loadavg_1_5_15": {"start": list(load_start), "end": list(os.getloadavg())},
        "note": args.note,
        "reference": summary["reference"],
        "fast": summary["fast"],
        "speedup_wall": round(ref_wall / fast_wall, 2),
        "speedup_cpu": round(ref_cpu / fast_cpu, 2),
        "identical": same,
        "metrics": results["fast"].metrics,
        "target_s": TARGET_S,
        "met": fast_wall < TARGET_S,
    }
    write_record(args.out, record)
    print(
        f"{results['fast'].n_users} users x {dm.n_items} items, {args.threads} threads, load {load_start[0]:.1f}: "
        f"reference {ref_wall:.2f} s, fast {fast_wall:.2f} s (x{ref_wall / fast_wall:.2f} wall, "
        f"x{ref_cpu / fast_cpu:.2f} CPU), identical: {same} -> {args.out}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
