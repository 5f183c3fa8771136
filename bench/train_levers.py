"""What each speed lever buys per training step: SASRec on the real ML-1M half rows, one recipe, the
same batches, each lever against the plain fp32 step in the same run (a ratio).

python bench/train_levers.py [--config configs/experiment/sasrec_ml-1m.yaml] [--steps 12] [--compile]

Levers: AdamW `foreach` / `fused` (`train.optimizer_impl`), bf16 autocast (`train.precision=bf16-mixed`,
reported with whether the CPU has native bf16: avx512_bf16 / amx_bf16), one torch thread instead of two,
and (with --compile) `torch.compile` of the model. A step is the forward, the loss of the model's objective,
the backward and the optimiser step (`recsys.objectives.training_losses`), timed after 2 warm-up steps;
median over --steps. Writes bench/results/train_levers.json. Measure alone: the load average is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.objectives import training_losses  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402
from recsys.train.experiment import load_experiment  # noqa: E402
from recsys.train.fit import datamodule_for  # noqa: E402
from recsys.train.module import RecModule  # noqa: E402
from recsys.train.run import assemble_run  # noqa: E402


def cpu_bf16() -> list[str]:
    """The CPU's native bf16 instruction sets (empty: bf16 is emulated)."""
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "avx_vnni")})


def time_steps(config: str, overrides: list[str], steps: int, *, bf16: bool, compile_model: bool) -> dict[str, Any]:
    """Median seconds per optimiser step (and the losses, to see the lever trains the same)."""
    cfg = load_experiment(config, overrides)
    torch.manual_seed(cfg.train.seed)
    parts = assemble_run(cfg)
    dm = datamodule_for(cfg, parts.data, parts.model, parts.objective)
    dm.setup()
    module = RecModule(parts.model, cfg.train, cfg.eval, objective=parts.objective)
    optimizer = module.build_optimizer()
    model = torch.compile(parts.model) if compile_model else parts.model
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )
    times, losses = [], []
    batches: Iterator[Any] = iter(dm.train_dataloader())
    for step in range(steps + 2):
        batch = next(batches)
        t0 = time.perf_counter()
        with autocast():
            loss = training_losses(model, module.objective, batch, module.loss).total  # type: ignore[arg-type]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if step >= 2:  # warm-up steps (allocator, compilation) left out
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
    batches_per_epoch = len(dm.train_dataloader())
    median = summarize(times)["median"]
    return {
        "step_s": median,
        "epoch_s_est": median * batches_per_epoch,
        "losses": losses,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/experiment/sasrec_ml-1m.yaml")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/train_levers.json")
    args = p.parse_args()
    os.chdir(ROOT)
    command = "python " + shlex.join(["bench/train_levers.py", *sys.argv[1:]])
    started, t0, load0 = now_iso(), time.perf_counter(), os.getloadavg()
    levers: dict[str, tuple[list[str], bool, bool]] = {
        "fp32 (baseline)": ([], False, False),
        "AdamW foreach": (["train.optimizer_impl=foreach"], False, False),
        "AdamW fused": (["train.optimizer_impl=fused"], False, False),
        "bf16 autocast": ([], True, False),
        "1 thread": (["train.num_threads=1"], False, False),
    }
    if args.compile:
        levers["torch.compile"] = ([], False, True)
    rows = []
    for name, (overrides, bf16, comp) in levers.items():
        threads = 1 if "train.num_threads=1" in overrides else 2
        torch.set_num_threads(threads)
        row = {"lever": name, **time_steps(args.config, overrides, args.steps, bf16=bf16, compile_model=comp)}
        rows.append(row)
        print(f"{name}: {row['step_s'] * 1000:.0f} ms/step", flush=True)  # noqa: T201
    base = rows[0]["step_s"]
    for row in rows:
        row["speedup_vs_fp32"] = base / row["step_s"]
    record = base_record("train_levers", command, started, time.perf_counter() - t0) | {
        "config": args.config,
        "cpu_bf16": cpu_bf16(),
        "rows": rows,
        "load_average": {"start": list(load0), "end": list(os.getloadavg())},
    }
    write_record(args.out, record)


if __name__ == "__main__":
    main()
