"""Two-stage quality on the ML-1M half, leave-one-out (issue 31): SASRec retrieves the top-N of the
full catalog (history items masked), DARE re-orders those N; test HR@10 / NDCG@10 of SASRec alone vs
SASRec + DARE, and the latency the ranker adds per request (p50 / p99, one request at a time).

The SASRec is a trained run's saved model (`--sasrec-dir`, a `save_model` directory). DARE trains on
labelled samples cut from the leave-one-out *training* sequences only (targets at offsets 3, 3 +
stride, ... of each user's sequence without its test item; the sample at offset 2, the validation
item, selects the epoch; the test item is never a target, never a history event and never a
negative), 2 frequency-proportional negatives per positive.

python bench/dare_two_stage.py --sasrec-dir mlartifacts/<run>/artifacts/model   # bench/results/dare_two_stage.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as lightning
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import to_dict  # noqa: E402
from recsys.data import schema as S  # noqa: E402
from recsys.data.datasets import left_pad  # noqa: E402
from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.data.labelled import LabelledConfig, LabelledData, paper_samples  # noqa: E402
from recsys.data.labelled_datamodule import LabelledDataModule  # noqa: E402
from recsys.data.processed import load_processed  # noqa: E402
from recsys.data.split import leave_one_out_split  # noqa: E402
from recsys.eval.metrics import hit_rate_at_k, ndcg_at_k, ranks_from_topk  # noqa: E402
from recsys.eval.ranking import rank_targets  # noqa: E402
from recsys.model_io import load_model  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.models.ranker import Ranker  # noqa: E402
from recsys.registry import build_ranker  # noqa: E402
from recsys.retrieval.ranking import RankingStage  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.experiment import EvalConfig, TrainConfig  # noqa: E402
from recsys.train.module import RecModule  # noqa: E402

OUT = ROOT / "bench/results/dare_two_stage.json"
PARAMS: dict[str, Any] = {"d_att": 16, "d_rep": 16, "top_k": 20, "max_len": 200, "n_genres": 19}


def retrieve(model: SequentialRecommender, hist: list[np.ndarray], targets: torch.Tensor, n: int) -> torch.Tensor:
    """Top-n item ids [U, n] of `model` over the whole catalog after each history, its items masked."""
    topn = []
    with torch.inference_mode():
        for start in range(0, len(hist), 256):
            rows = [h.tolist() for h in hist[start : start + 256]]
            items = left_pad(rows, model.max_len)
            seen = left_pad(rows, max(1, max(map(len, rows))))
            res = rank_targets(
                model.sequence_representation(items, items != 0),
                model.item_embeddings(),
                targets[start : start + 256],
                seen,
                topk=n,
                item_chunk=262_144,
            )
            topn.append(res.topk_ids)
    return torch.cat(topn)


def retrieval_negatives(
    samples: pl.DataFrame, model: SequentialRecommender, full: list[np.ndarray], n: int, rng: np.random.Generator
) -> pl.DataFrame:
    """`samples` with every negative replaced by an item drawn uniformly from the retrieval model's
    top-n after the same history, never one of the user's items (the candidates a ranker sees when serving)."""
    pos = samples.filter(pl.col("label") == 1)
    users, positions = pos["user_idx"].to_numpy(), pos["position"].to_numpy()
    hist = [full[u][:p] for u, p in zip(users, positions, strict=True)]
    top = retrieve(model, hist, torch.tensor(pos["item_idx"].to_list()), n).numpy()  # [P, n]
    negs = samples.filter(pl.col("label") == 0)
    per = negs.height // pos.height
    drawn = np.empty((pos.height, per), dtype=np.int64)
    for row, (u, cands) in enumerate(zip(users, top, strict=True)):
        allowed = cands[~np.isin(cands, full[u])]
        drawn[row] = rng.choice(allowed, size=per, replace=len(allowed) < per)
    # negatives follow their positive in `samples` (paper_samples writes positive, then its negatives)
    order = samples.with_row_index("row").filter(pl.col("label") == 0)["row"].to_numpy()
    items = samples["item_idx"].to_numpy().copy()
    items[order] = drawn.reshape(-1)
    return samples.with_columns(pl.Series("item_idx", items))


def fit_ranker(model: Ranker, data: LabelledData, *, epochs: int, seed: int) -> int:
    """Train `model` on `data`'s rows with the one LightningModule for `epochs` epochs and keep its
    best validation-AUC epoch (returned, 0-based): the issue-31 recipe (batch 256, lr 1e-3, no clip)."""
    dm = LabelledDataModule(data, max_history=model.max_len, batch_size=256, eval_batch_size=1024, seed=seed)
    module = RecModule(model, TrainConfig(batch_size=256, lr=1e-3, grad_clip=None), EvalConfig())
    with tempfile.TemporaryDirectory() as tmp:
        best = ModelCheckpoint(dirpath=tmp, monitor=module.monitor, mode="max", filename="best")
        trainer = lightning.Trainer(
            max_epochs=epochs,
            callbacks=[best],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=dm)
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    return int(state["epoch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sasrec-dir", required=True)
    parser.add_argument("--data", default="data/processed/ml-1m")
    parser.add_argument("--top-n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=10)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument(
        "--negatives",
        choices=["frequency", "retrieval"],
        default="frequency",
        help="ranker training negatives: item frequency (the paper's) or SASRec's top-N at that history",
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    command = "python " + shlex.join(["bench/dare_two_stage.py", *sys.argv[1:]])
    started, t0, load0 = now_iso(), time.perf_counter(), os.getloadavg()
    ds = load_processed(args.data)
    split = leave_one_out_split(ds.sequences)
    full = [np.asarray(s, dtype=np.int64) for s in ds.sequences.sort(S.USER_IDX)[S.ITEMS].to_list()]

    # stage 1: SASRec over the whole catalog, test histories (all but the last item), seen items masked
    sasrec = load_model(Path(args.sasrec_dir)).eval()
    test = split.test.sort(S.USER_IDX)
    hist = [np.asarray(h, dtype=np.int64) for h in test[S.ITEMS].to_list()]
    targets = torch.tensor(test["target"].to_list())
    cands = retrieve(sasrec, hist, targets, args.top_n)  # [U, N]
    sasrec_ranks = ranks_from_topk(cands, targets)

    # stage 2: DARE trained on the training sequences only
    cfg_l = LabelledConfig(
        processed=args.data,
        output_dir="-",
        min_events=3 + args.stride * (args.n_train - 1) + 1,
        n_train=args.n_train,
        stride=args.stride,
        seed=args.seed,
    )
    cut = [s[:-1] for s in full]  # without the test item; offset 1 of `cut` is the validation item
    samples = paper_samples(cut, ds.n_items, cfg_l, forbidden=full).with_columns(
        pl.col("split").replace({2: 1})  # offset 1 (validation item) selects the epoch; nothing is test here
    )
    if args.negatives == "retrieval":
        samples = retrieval_negatives(samples, sasrec, full, args.top_n, np.random.default_rng(args.seed))
    longest = max(map(len, full))
    seq_t = torch.zeros(len(full), longest, dtype=torch.long)
    for u, s in enumerate(full):
        seq_t[u, : len(s)] = torch.from_numpy(s)
    data = LabelledData(samples, seq_t, torch.zeros_like(seq_t), ds.n_items, {})
    torch.manual_seed(args.seed)
    dare = build_ranker("dare", PARAMS, ds.n_items, item_features=load_item_features(args.data))
    t_fit = time.perf_counter()
    best_epoch = fit_ranker(dare, data, epochs=args.epochs, seed=args.seed)
    fit_s = time.perf_counter() - t_fit
    dare.eval()
    stage = RankingStage("dare", dare, args.top_n, PARAMS["max_len"])
    reranked = []
    for u in range(len(hist)):
        reranked.append(torch.from_numpy(stage.rerank(hist[u], cands[u].numpy(), np.zeros(args.top_n)).items))
    two_stage_ranks = ranks_from_topk(torch.stack(reranked), targets)

    # latency the ranker adds: one request (one history, N candidates) at a time
    lat = []
    for u in range(min(args.latency_requests, len(hist))):
        t = time.perf_counter()
        stage.rerank(hist[u], cands[u].numpy(), np.zeros(args.top_n))
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    metrics = {
        "sasrec/test/hr@10": hit_rate_at_k(sasrec_ranks, 10),
        "sasrec/test/ndcg@10": ndcg_at_k(sasrec_ranks, 10),
        f"sasrec/test/recall@{args.top_n}": hit_rate_at_k(sasrec_ranks, args.top_n),
        "sasrec+dare/test/hr@10": hit_rate_at_k(two_stage_ranks, 10),
        "sasrec+dare/test/ndcg@10": ndcg_at_k(two_stage_ranks, 10),
    }
    record = base_record("dare_two_stage", command, started, time.perf_counter() - t0)
    record |= {
        "dataset": "ml-1m-half",
        "protocol": {
            "split": "leave_one_out",
            "full_ranking": True,
            "exclude_seen": True,
            "users": len(hist),
            "retrieval_top_n": args.top_n,
            "ranker_training": to_dict(cfg_l) | {"samples": samples.height, "negatives": args.negatives},
        },
        "sasrec_dir": args.sasrec_dir,
        "ranker": {
            "params": PARAMS,
            "train": {"epochs": args.epochs, "batch_size": 256, "lr": 1e-3, "grad_clip": None},
            "best_epoch": best_epoch,
            "fit_s": fit_s,
        },
        "metrics": metrics,
        "ranker_latency_ms": {
            "p50": statistics.median(lat),
            "p99": lat[int(0.99 * (len(lat) - 1))],
            "requests": len(lat),
            "note": "RankingStage.rerank alone (one history, top-N candidates), torch threads "
            f"{args.threads}; not measured through bench/serve.py",
        },
        "load_average": {"start": list(load0), "end": list(os.getloadavg())},
        "note": "contended: other jobs running on the same 2 cores (see load_average)",
    }
    write_record(Path(args.out), record)
    sys.stdout.write(f"{metrics}\nlatency p50 {record['ranker_latency_ms']['p50']:.2f} ms\n")


if __name__ == "__main__":
    main()
