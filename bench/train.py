"""Training and evaluation speed: SASRec throughput per attention backend, full-ranking eval time.

python bench/train.py [--steps 20] [--threads 2] [--beauty-dir data/processed/beauty] [--run-id ID]

1. Throughput: SASRec (L = 200, hidden 64, 2 layers, batch 256, full CE) on a synthetic
   ML-1M-shaped set (6,040 users, 3,416 items, ~165 items per user): sequences/s and the implied
   epoch time, for sdpa, linear and the eager reference, side by side in one run.
2. Full-ranking evaluation of every Beauty user (leave-one-out test, seen items masked), batched,
   against a one-user-at-a-time reference on a sample of users (the ratio is per user).
3. Epoch time on the real Beauty training rows for each model in --epoch-models (its experiment
   config's model and batch size): --epoch-steps optimiser steps timed and scaled to the epoch's
   batch count, plus the epoch-start hook (ICSRec refits its k-means intents there). ICSRec is
   also timed without its padding savings (`icsrec_plain`: shuffled batches, views padded to the
   batch's longest), and SASRec / BERT4Rec with length-grouped batches (`<model>_pooled`,
   `train.length_pool=64`); every model also runs its encoder's padded reference computation
   (`<model>_padded`: every layer over the padding, not only attention). Each ratio is recorded.
4. With --run-id: wall time until a tracked Beauty run first reached val/ndcg@10 >= 0.053 (read
   from the MLflow metric history; the run itself is the experiment, not re-run here).
Writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.datasets import EvalBatch, TrainBatch, left_pad  # noqa: E402
from recsys.eval.evaluate import evaluate  # noqa: E402
from recsys.nn.sequence_encoder import ItemSequenceEncoder  # noqa: E402
from recsys.objectives import build_objective, training_losses  # noqa: E402
from recsys.registry import build_model  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.experiment import EvalConfig, TrainConfig, load_experiment  # noqa: E402
from recsys.train.module import RecModule  # noqa: E402


def synthetic_ml1m(n_users: int = 6040, n_items: int = 3416, mean_len: int = 165, seed: int = 0) -> torch.Tensor:
    """Left-padded training windows [U, 201] with ML-1M-like lengths (log-normal, 20..1000)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_len) - 0.5, 1.0, n_users).astype(int), 20, 1000)
    popularity = rng.zipf(1.3, n_items * 4) % n_items + 1
    seqs = [rng.choice(popularity, size=n).tolist() for n in lengths]
    return left_pad(seqs, 201)


def throughput(attention: str, windows: torch.Tensor, steps: int, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    params = {"max_len": 200, "hidden": 64, "n_layers": 2, "n_heads": 2, "dropout": 0.2, "attn_dropout": 0.2}
    model = build_model("sasrec", {**params, "attention": attention}, int(windows.max()))
    module = RecModule(model, TrainConfig(batch_size=batch), EvalConfig())
    opt = module.build_optimizer()
    gen = torch.Generator().manual_seed(0)
    times = []
    for step in range(steps + 2):
        rows = torch.randint(0, len(windows), (batch,), generator=gen)
        t0 = time.perf_counter()
        loss = training_losses(model, module.objective, TrainBatch(windows[rows]), module.loss).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    return {
        "step_s_median": round(step_s, 4),
        "sequences_per_s": round(batch / step_s, 1),
        "epoch_s_estimate": round(step_s * len(windows) / batch, 1),
    }


# ICSRec without its two padding savings (length-grouped batches, positive views encoded by length):
# the reference its epoch time is compared with in the same run
ICSREC_PLAIN = ["train.length_pool=0", "model.params.view_groups=1"]
POOLED = ["train.length_pool=64"]  # length-grouped batches for the models that train on plain ones


def beauty_epoch_time(
    model_name: str, beauty_dir: Path, steps: int, overrides: list[str] | None = None, *, unpad: bool = True
) -> dict[str, float]:
    """Seconds per training epoch of `configs/experiment/<model>_beauty.yaml`'s model on Beauty
    (`unpad=False`: its encoder runs the padded reference computation)."""
    cfg = load_experiment(ROOT / f"configs/experiment/{model_name}_beauty.yaml", overrides or [])
    torch.manual_seed(0)
    probe = build_model(cfg.model.name, cfg.model.params, 1)
    dm = SequenceDataModule(
        beauty_dir,
        max_len=probe.max_len,
        batch_size=cfg.train.batch_size,
        eval_batch_size=cfg.eval.batch_size,
        seed=0,
        rows=build_objective(probe.objective).train_rows,
        length_pool=cfg.train.length_pool,
    )
    dm.setup()
    model = build_model(cfg.model.name, cfg.model.params, dm.n_items)
    for encoder in (m for m in model.modules() if isinstance(m, ItemSequenceEncoder)):
        encoder.unpad = unpad
    module = RecModule(model, cfg.train, cfg.eval)
    opt = module.build_optimizer()
    if cfg.train.length_pool:  # as fit does: every target weighs the same in length-grouped batches
        module.targets_per_batch = module.objective.expected_targets_per_batch(
            model, dm.train_set, cfg.train.batch_size
        )
    t0 = time.perf_counter()
    module.objective.on_epoch_start(model, dm.ordered_train_dataloader(), 0)
    epoch_start_s = time.perf_counter() - t0
    model.train()
    loader = dm.train_dataloader()
    times = []
    for step, batch in enumerate(loader):
        t0 = time.perf_counter()
        loss = training_losses(
            model, module.objective, batch, module.loss, targets_per_batch=module.targets_per_batch
        ).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        if step + 1 == steps:
            break
    step_s = statistics.mean(times)  # mean, not median: batch lengths vary, the epoch pays for all
    return {
        "train_rows": len(dm.train_set),
        "batch": cfg.train.batch_size,
        "batches_per_epoch": len(loader),
        "step_s_mean": round(step_s, 4),
        "epoch_start_hook_s": round(epoch_start_s, 2),
        "epoch_s_estimate": round(step_s * len(loader) + epoch_start_s, 1),
    }


def eval_speed(beauty_dir: Path, reference_users: int) -> dict[str, float]:
    dm = SequenceDataModule(beauty_dir, max_len=50, batch_size=256, eval_batch_size=1024, seed=0)
    dm.setup()
    model = build_model("sasrec", {}, dm.n_items).eval()
    t0 = time.perf_counter()
    result = evaluate(model, dm.test_dataloader(), split="test")
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    singles = (
        EvalBatch(*(t[i : i + 1] for t in (dm.test_set.items, dm.test_set.targets, dm.test_set.seen)))
        for i in range(reference_users)
    )
    evaluate(model, singles, split="test")
    per_user_ref = (time.perf_counter() - t0) / reference_users
    per_user = batched_s / result.n_users
    return {
        "users": result.n_users,
        "items": dm.n_items,
        "batched_s": round(batched_s, 3),
        "one_user_at_a_time_s_per_user": round(per_user_ref, 5),
        "speedup_per_user": round(per_user_ref / per_user, 1),
        "target_s": 5.0,
        "met": batched_s < 5.0,
    }


def time_to_target(run_id: str, uri: str, target: float) -> dict[str, object]:
    from mlflow.tracking import MlflowClient  # bench-only reader of the run's history

    from recsys.tracking.mlflow import read_run

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    history = sorted(client.get_metric_history(run_id, "val/ndcg_at_10"), key=lambda m: m.timestamp)
    hit = next((m for m in history if m.value >= target), None)
    epochs = client.get_metric_history(run_id, "epoch")  # Lightning logs the epoch at every logged step
    return {
        "run_id": run_id,
        "target_val_ndcg@10": target,
        "reached": hit is not None,
        "minutes_to_target": round((hit.timestamp - run.info.start_time) / 60000, 1) if hit else None,
        "step_at_target": hit.step if hit else None,  # the optimiser step MLflow stored with the metric
        "epoch_at_target": next((int(m.value) for m in epochs if hit and m.step == hit.step), None),
        "final_metrics": {k: v for k, v in read_run(uri, run_id)["metrics"].items() if "@10" in k},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="sdpa,linear,eager")
    parser.add_argument("--beauty-dir", type=Path, default=ROOT / "data/processed/beauty")
    parser.add_argument("--reference-users", type=int, default=300)
    parser.add_argument("--epoch-models", default="sasrec,bert4rec,icsrec")
    parser.add_argument("--epoch-steps", type=int, default=60)
    parser.add_argument("--run-id", help="a tracked Beauty SASRec run, for the time-to-target figure")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, t0 = now_iso(), time.perf_counter()
    load_at_start = os.getloadavg()  # other jobs on the machine slow every figure here
    windows = synthetic_ml1m()
    results: dict[str, object] = {"threads": args.threads, "batch": args.batch, "L": 200, "hidden": 64}
    tp = {b: throughput(b, windows, args.steps, args.batch) for b in args.backends.split(",") if b}
    if "eager" in tp:
        for b in tp:
            tp[b]["speedup_vs_eager"] = round(tp["eager"]["step_s_median"] / tp[b]["step_s_median"], 2)
    results["throughput_ml1m_shaped"] = tp
    print(json.dumps(tp, indent=1))
    if (args.beauty_dir / "meta.json").is_file():
        results["beauty_full_ranking_eval"] = eval_speed(args.beauty_dir, args.reference_users)
        print(json.dumps(results["beauty_full_ranking_eval"], indent=1))
        epochs = {m: beauty_epoch_time(m, args.beauty_dir, args.epoch_steps) for m in args.epoch_models.split(",") if m}

        def variant(model: str, overrides: list[str], unpad: bool = True) -> dict[str, float]:
            timed = beauty_epoch_time(model, args.beauty_dir, args.epoch_steps, overrides, unpad=unpad)
            return timed | {"overrides": " ".join(overrides), "unpad": unpad}  # type: ignore[dict-item]

        def ratio(slow: dict[str, float], fast: dict[str, float]) -> float:
            return round(slow["epoch_s_estimate"] / fast["epoch_s_estimate"], 2)

        for model in list(epochs):  # every encoder skips padding by default: against the padded reference
            epochs[f"{model}_padded"] = variant(model, [], unpad=False)
            epochs[model]["speedup_vs_padded"] = ratio(epochs[f"{model}_padded"], epochs[model])
        if "icsrec" in epochs:  # grouped by default: against its plain reference
            epochs["icsrec_plain"] = variant("icsrec", ICSREC_PLAIN)
            epochs["icsrec"]["speedup_vs_plain"] = ratio(epochs["icsrec_plain"], epochs["icsrec"])
        for model in [m for m in ("sasrec", "bert4rec") if m in epochs]:  # plain by default: against grouped
            epochs[f"{model}_pooled"] = variant(model, POOLED)
            epochs[f"{model}_pooled"]["speedup_vs_plain"] = ratio(epochs[model], epochs[f"{model}_pooled"])
        results["beauty_epoch_time"] = epochs
        print(json.dumps(epochs, indent=1))
    if args.run_id:
        results["beauty_time_to_target"] = time_to_target(args.run_id, args.tracking_uri, 0.053)
        print(json.dumps(results["beauty_time_to_target"], indent=1))
    cmd = "python bench/train.py " + " ".join(sys.argv[1:])
    record = base_record("train_speed", cmd, started, time.perf_counter() - t0) | {"results": results}
    record["machine"]["loadavg_1_5_15"] = {"start": load_at_start, "end": os.getloadavg()}
    write_record(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
