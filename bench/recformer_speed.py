"""Recformer's cost on the ML-1M half: training seconds per step and per epoch, items embedded per
second (the item table refresh and cold items), and the same training step of SASRec on the same
rows as the reference (a ratio in the same run). Then the encoder's attention, softmax (`sdpa`, as
pretrained) vs `linear`, at the configured history (12 items, 160 tokens) and the reference's 50 items.

python bench/recformer_speed.py [--steps 8] [--threads 2] [--long-items 50]
                                [--out bench/results/recformer_speed.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.objectives import build_objective, training_losses  # noqa: E402
from recsys.registry import build_model  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.experiment import load_experiment  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402
from recsys.train.module import build_loss  # noqa: E402


def step_seconds(model: SequentialRecommender, data_dir: Path, batch_size: int, steps: int) -> tuple[float, int]:
    """Median seconds of a training step (forward, backward, AdamW) and the rows of an epoch."""
    objective = build_objective(model.objective)
    dm = SequenceDataModule(
        data_dir, max_len=model.max_len, batch_size=batch_size, eval_batch_size=64, seed=0, rows=objective.train_rows
    )
    dm.setup()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    loss_fn = build_loss(load_experiment(ROOT / "configs/experiment/recformer_ml-1m.yaml").train)
    objective.on_epoch_start(model, dm.ordered_train_dataloader(), 10**6)  # fine-tuning stage 2: no refresh
    times = []
    for i, batch in enumerate(dm.train_dataloader()):
        t0 = time.perf_counter()
        loss = training_losses(model.train(), objective, batch, loss_fn).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
        if i + 1 == steps + 1:
            break
    return statistics.median(times[1:]), len(dm.train_set)  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-items", type=int, default=50, help="long-history rows' items (the reference's 50)")
    parser.add_argument("--out", default=str(ROOT / "bench/results/recformer_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, t_start = now_iso(), time.perf_counter()
    load_start = round(os.getloadavg()[0], 2)
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    features = load_item_features(data_dir)
    cfg = load_experiment(ROOT / "configs/experiment/recformer_ml-1m.yaml")
    torch.manual_seed(0)
    recformer = build_model("recformer", cfg.model.params, features.n_items, item_features=features)
    t0 = time.perf_counter()
    recformer.refresh_items()  # type: ignore[operator]
    items_per_s = features.n_items / (time.perf_counter() - t0)
    batch = cfg.train.batch_size
    rec_step, rows = step_seconds(recformer, data_dir, batch, args.steps)
    sasrec = build_model("sasrec", {"max_len": recformer.max_len}, features.n_items)
    ref_step, _ = step_seconds(sasrec, data_dir, batch, args.steps)
    attention_rows = []
    base = dict(cfg.model.params)
    # the configured history; the long one keeps its tokens per item (past the backbone's 512 positions, they
    # are extended: recsys.nn.hf_positions)
    short = recformer.cfg
    long = {"max_len": args.long_items, "max_tokens": short.max_tokens * args.long_items // short.max_len}
    for history in ({}, long):
        for attention in ("sdpa", "linear"):
            params = base | history | {"attention": attention}
            torch.manual_seed(0)
            model = build_model("recformer", params, features.n_items, item_features=features)
            step, _ = step_seconds(model, data_dir, batch, args.steps)
            attention_rows.append(
                {
                    "attention": attention,
                    "max_len": model.cfg.max_len,
                    "max_tokens": model.cfg.max_tokens,
                    "step_s": round(step, 3),
                    "epoch_min": round(step * rows / batch / 60, 1),
                }
            )
            print(attention_rows[-1])
            del model
    record = base_record("recformer_speed", "python " + " ".join(sys.argv), started, time.perf_counter() - t_start)
    record |= {
        "dataset": "ml-1m",
        "threads": args.threads,
        "batch_size": batch,
        "model_params": dataclasses.asdict(recformer.cfg),
        "items_embedded_per_s": round(items_per_s, 1),
        "recformer_step_s": round(rec_step, 3),
        "recformer_epoch_min": round(rec_step * rows / batch / 60, 1),
        "sasrec_step_s": round(ref_step, 4),  # one window of <= max_len + 1 items per user, same batch size
        "recformer_over_sasrec_step": round(rec_step / ref_step, 1),
        "train_rows_per_epoch": rows,
        "attention": attention_rows,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # > 2 on 2 cores: other jobs ran alongside
        "load_average_1m_at_start": load_start,
    }
    write_record(args.out, record)
    print({k: v for k, v in record.items() if k not in ("machine", "command")})


if __name__ == "__main__":
    main()
