"""DARE vs TWIN, TWIN with projections and DIN on the ML-1M half (issue 31), several seeds, one budget.

Two labelled datasets built from the processed ML-1M half (recsys.data.labelled): the DARE paper's
recipe (configs/data/labelled/ml-1m_paper.yaml) and explicit labels (rating >= 4, global temporal
split; configs/data/labelled/ml-1m_explicit.yaml). Every (dataset, model, seed) trains for the same
fixed number of epochs through the one run path (`recsys.train.run.train_experiment`), keeps its best
validation-AUC epoch, and writes a results record to bench/results/experiments/dare/ (and an MLflow run,
experiment "dare").

Search-stage quality (the paper's retrieval NDCG): per positive test sample, the top-K history
behaviours a model's stage-1 search returns (by its attention embeddings), scored with graded
relevance; NDCG@K. Two relevance references: `_pmi`, the positive pointwise mutual information of
the behaviour and the target item co-occurring in users' histories (counted before any held-out
sample; model-independent, the paper's idea of a data-derived ground truth), and `_din`, the full
attention weights of the trained DIN of the same seed over the whole history (a model's own full
attention ranks its behaviours exactly as its search does, so the reference must be another model;
DIN shares TWIN's coupled table and initialisation, which favours TWIN under this reference).

python bench/dare.py --datasets paper --seeds 0 1 2               # records, one process per dataset
python bench/dare.py --datasets explicit --seeds 0 1 2
python bench/dare.py --summary                                    # bench/results/dare.json from the records
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytorch_lightning as lightning
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.config import from_dict, load_config, to_dict  # noqa: E402
from recsys.data.labelled import (  # noqa: E402
    LabelledBatch,
    LabelledConfig,
    LabelledData,
    build_labelled,
    load_labelled,
)
from recsys.model_io import load_model, resolved_config, save_model  # noqa: E402
from recsys.models.dare import DARE  # noqa: E402
from recsys.models.din import DIN  # noqa: E402
from recsys.models.twin import TWIN  # noqa: E402
from recsys.nn.target_attention import search_topk  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.tracking.records import summarize as summarize_values  # noqa: E402
from recsys.train.experiment import ExperimentConfig  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402
from recsys.train.run import train_experiment  # noqa: E402

log = logging.getLogger("bench.dare")
DATASETS = {"paper": "configs/data/labelled/ml-1m_paper.yaml", "explicit": "configs/data/labelled/ml-1m_explicit.yaml"}
OUT = ROOT / "bench/results/experiments/dare"
SUMMARY = ROOT / "bench/results/dare.json"
DOC = ROOT / "docs/dare.md"  # its results block is generated here
DOC_START, DOC_END = "<!-- dare:start -->", "<!-- dare:end -->"
WEIGHTS = ROOT / "bench/results/tmp/dare"  # trained models (git-ignored, recsys.model_io dirs), for later analysis
TOP_K = 20  # behaviours kept by the stage-1 search
# row -> (registered ranker, its params); DIN first: it is the search-NDCG reference of the others.
# The side features are the configs' `auto`: ML-1M's 18 genres + padding, ratings 1..5 with explicit labels.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "din": ("din", {"d_rep": 16}),
    "dare": ("dare", {"d_att": 16, "d_rep": 16, "top_k": TOP_K}),
    "dare_att4": ("dare", {"d_att": 4, "d_rep": 16, "top_k": TOP_K}),  # d_att = d_rep / 4
    "twin": ("twin", {"d_rep": 16, "top_k": TOP_K}),
    "twin_proj": ("twin", {"d_rep": 16, "d_proj": 16, "top_k": TOP_K}),  # TWIN with projection
    # with the reference's 16-d time embedding (issue 43: `use_time_mode concat -time_embedding_dim 16`)
    "din_time": ("din", {"d_rep": 16, "d_time": 16}),
    "dare_time": ("dare", {"d_att": 16, "d_rep": 16, "top_k": TOP_K, "d_time": 16}),
    "twin_time": ("twin", {"d_rep": 16, "top_k": TOP_K, "d_time": 16}),
}
COMMON: dict[str, Any] = {"max_len": 200, "mlp": [200, 80]}
SearchRanker = DARE | TWIN | DIN  # the rankers with `attention_scores` (the search logits)


def cooccurrence_pmi(data: LabelledData) -> torch.Tensor:
    """[N + 1, N + 1] positive pointwise mutual information of two items being in one user's history,
    counted over each user's events before their first validation or test sample (no held-out item)."""
    heldout = data.samples.filter(pl.col("split") != 0).group_by("user_idx").agg(pl.col("position").min())
    cutoff = torch.full((data.sequences.shape[0],), data.sequences.shape[1], dtype=torch.long)
    cutoff[torch.tensor(heldout["user_idx"].to_list())] = torch.tensor(heldout["position"].to_list())
    keep = torch.arange(data.sequences.shape[1])[None, :] < cutoff[:, None]
    x = torch.zeros(data.sequences.shape[0], data.n_items + 1)
    x.scatter_(1, data.sequences * keep, 1.0)
    x[:, 0] = 0.0
    counts = x.sum(0)  # [N + 1] users per item
    joint = x.T @ x  # [N + 1, N + 1] users per item pair
    pmi = torch.log(joint * x.shape[0] / (counts[:, None] * counts[None, :]).clamp(min=1.0))
    pmi = pmi.nan_to_num(0.0, neginf=0.0).clamp(min=0.0)
    pmi.fill_diagonal_(0.0)
    return pmi


def search_ndcg(
    model: SearchRanker,
    gains_of: Callable[[LabelledBatch], torch.Tensor],
    data: LabelledData,
    rows: pl.DataFrame,
    k: int,
    max_history: int,
) -> float:
    """Mean NDCG@k of `model`'s stage-1 top-k behaviours under graded relevance `gains_of(batch)` [B, L]
    (samples whose history has no relevant behaviour are left out)."""
    model.eval()
    total, n = 0.0, 0
    discount = 1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0)  # [k]
    with torch.no_grad():
        for start in range(0, rows.height, 1024):
            b = data.batch(rows[start : start + 1024], max_history)
            gain = gains_of(b).double() * (b.items != 0)  # [B, L]
            idx, kept = search_topk(model.attention_scores(b.items, b.candidates[:, None])[:, 0], k)  # [B, k]
            d = discount[: idx.shape[1]]
            dcg = (gain.gather(1, idx) * kept * d).sum(1)
            ideal = (gain.sort(1, descending=True).values[:, : idx.shape[1]] * d).sum(1)
            ok = ideal > 0
            total += float((dcg[ok] / ideal[ok]).sum())
            n += int(ok.sum())
    return total / max(n, 1)


def run_one(
    dataset: str,
    data: LabelledData,
    model_name: str,
    seed: int,
    args: argparse.Namespace,
    refs: dict[int, SearchRanker],
    pmi: torch.Tensor,
) -> dict[str, Any]:
    """Train one (model, seed) on `dataset`, evaluate, log to MLflow and write its record."""
    started, t0, load0 = now_iso(), time.perf_counter(), os.getloadavg()
    ranker, own = MODELS[model_name]
    train = {
        "max_epochs": args.epochs[dataset],
        "patience": args.epochs[dataset],
        "batch_size": args.batch_size,
        "lr": args.lr,
        "steps_per_epoch": args.steps[dataset],
        "grad_clip": None,
        "seed": seed,
        "progress_bar": False,
    }
    experiment = {
        "name": f"dare_{dataset}_{model_name}_seed{seed}",
        "data": DATASETS[dataset],
        "model": {"name": ranker, "params": {**COMMON, **own}},
        "train": train,
        "tracking": {"experiment": "dare", "run_name": f"{dataset}_{model_name}_seed{seed}"},
    }
    cfg = from_dict(ExperimentConfig, experiment, source="bench/dare.py")
    lightning.seed_everything(seed, verbose=False)
    outcome = train_experiment(cfg, tracking_uri=args.tracking_uri, command=args.command)
    assert outcome is not None
    model = load_model(download_run_artifacts(args.tracking_uri, outcome.run_id, "model"), kind="ranker")
    assert isinstance(model, DARE | TWIN | DIN)
    params = resolved_config(model)
    metrics = dict(outcome.metrics)
    max_history = model.max_len
    positives = data.split("test").filter(pl.col("label") == 1)
    k = TOP_K
    metrics["test/search_ndcg@20_pmi"] = search_ndcg(
        model, lambda b: pmi[b.items, b.candidates[:, None]], data, positives, k, max_history
    )
    if model_name != "din" and seed in refs:
        ref = refs[seed].eval()
        metrics["test/search_ndcg@20_din"] = search_ndcg(
            model,
            lambda b: torch.softmax(ref.attention_scores(b.items, b.candidates[:, None])[:, 0], -1),
            data,
            positives,
            k,
            max_history,
        )
    save_model(model, ranker, params, data.n_items, WEIGHTS / f"{dataset}_{model_name}_seed{seed}")
    if model_name == "din":
        refs[seed] = model
    wall = time.perf_counter() - t0
    record = base_record(f"dare_{dataset}_{model_name}_seed{seed}", args.command, started, wall)
    record |= {
        "dataset": f"ml-1m-half/{dataset}",
        "model": model_name,
        "attention": "target attention" + (" over the top-20 searched behaviours" if model_name != "din" else ""),
        "protocol": {
            "labelled": to_dict(load_config(LabelledConfig, DATASETS[dataset])),
            "selection": "best validation AUC epoch",
            "samples": data.meta["samples"],
        },
        "config": outcome.record["config"] | {"seed": seed, "torch_threads": torch.get_num_threads()},
        "metrics": metrics,
        "epochs": outcome.record["epochs"],
        "best_epoch": outcome.record["best_epoch"],
        "mlflow_run_id": outcome.run_id,
        "load_average": {"start": list(load0), "end": list(os.getloadavg())},
        "note": "contended: other jobs running on the same 2 cores (see load_average)",
    }
    write_record(OUT / f"{dataset}_{model_name}_seed{seed}.json", record)
    log.info(
        "%s %s seed %d: %s (%.0f s)", dataset, model_name, seed, {k: round(v, 4) for k, v in metrics.items()}, wall
    )
    return record


def _stats(values: list[float]) -> dict[str, Any]:
    return summarize_values(values) | {"n": len(values)}


def summarize(command: str) -> dict[str, Any]:
    """Mean ± sd and median per (dataset, model) over the records' seeds, and the issue's checks."""
    records = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    table: dict[str, dict[str, Any]] = {}
    for dataset in DATASETS:
        rows: dict[str, dict[str, Any]] = {}
        for model in MODELS:
            recs = [r for r in records if r["dataset"].endswith(dataset) and r["model"] == model]
            if not recs:
                continue
            keys = sorted({k for r in recs for k in r["metrics"] if k.startswith("test/")})
            rows[model] = {"seeds": sorted(r["config"]["seed"] for r in recs)} | {
                k: _stats([r["metrics"][k] for r in recs if k in r["metrics"]]) for k in keys
            }
            train = recs[0]["config"]["train"]  # records written before issue 41 name it `epochs`
            rows[model]["epochs"] = train.get("epochs", train.get("max_epochs"))
            rows[model]["wall_s_mean"] = statistics.fmean(r["wall_s"] for r in recs)
            rows[model]["load_average_1m"] = [r["load_average"]["start"][0] for r in recs]
        checks: dict[str, Any] = {}
        if {"dare", "twin"} <= set(rows):
            checks["dare_minus_twin_test_auc"] = rows["dare"]["test/auc"]["mean"] - rows["twin"]["test/auc"]["mean"]
            checks["dare_above_twin"] = checks["dare_minus_twin_test_auc"] > 0
            checks["dare_minus_twin_test_gauc"] = rows["dare"]["test/gauc"]["mean"] - rows["twin"]["test/gauc"]["mean"]
            key = "test/search_ndcg@20_pmi"
            if key in rows["dare"] and key in rows["twin"]:
                checks["dare_minus_twin_search_ndcg_pmi"] = rows["dare"][key]["mean"] - rows["twin"][key]["mean"]
        if {"dare", "dare_att4"} <= set(rows):
            gap = rows["dare"]["test/auc"]["mean"] - rows["dare_att4"]["test/auc"]["mean"]
            checks["dare_minus_dare_att4_test_auc"] = gap
            checks["dare_att4_within_0.1_auc_points"] = abs(gap) <= 0.001
        table[dataset] = {"models": rows, "checks": checks}
    summary = base_record("dare_summary", command, now_iso(), 0.0) | {
        "records": str(OUT.relative_to(ROOT)),
        "table": table,
    }
    write_record(SUMMARY, summary)
    if DOC.is_file():
        text = DOC.read_text()
        start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
        DOC.write_text(text[:start] + "\n" + render_table(table) + text[end:])
    return summary


def render_table(table: dict[str, Any]) -> str:
    """The summary as markdown: test AUC / GAUC / log loss and search NDCG, mean ± sd (median) over seeds."""
    cols = ["test/auc", "test/gauc", "test/logloss", "test/search_ndcg@20_pmi", "test/search_ndcg@20_din"]
    lines = []
    for dataset, part in table.items():
        lines += [f"**{dataset}**", "", "| model | seeds | epochs | " + " | ".join(cols) + " |"]
        lines.append("|" + "---|" * (len(cols) + 3))
        for model, row in part["models"].items():
            cells = [
                f"{row[c]['mean']:.4f} ± {row[c]['sd']:.4f} ({row[c]['median']:.4f})" if c in row else "-" for c in cols
            ]
            lines.append(f"| {model} | {len(row['seeds'])} | {row['epochs']} | " + " | ".join(cells) + " |")
        checks = ", ".join(f"{k}: {round(v, 4) if isinstance(v, float) else v}" for k, v in part["checks"].items())
        lines += ["", f"Checks: {checks or 'n/a'}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs-paper", type=int, default=3)
    parser.add_argument("--epochs-explicit", type=int, default=1)
    parser.add_argument("--steps-explicit", type=int, default=400, help="batches per explicit epoch (of ~1520)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: best on a loaded 2-core box)")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--summary", action="store_true", help="only write bench/results/dare.json from the records")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.command = "python " + shlex.join(["bench/dare.py", *sys.argv[1:]])
    if args.summary:
        summarize(args.command)
        return
    args.epochs = {"paper": args.epochs_paper, "explicit": args.epochs_explicit}
    args.steps = {"paper": None, "explicit": args.steps_explicit}
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)
    ensure_processed("configs/data/ml-1m.yaml")
    for dataset in args.datasets:
        data = load_labelled(build_labelled(load_config(LabelledConfig, DATASETS[dataset])))  # seeded: same samples
        refs: dict[int, SearchRanker] = {}
        pmi = cooccurrence_pmi(data)
        for seed in args.seeds:
            for model in args.models:
                run_one(dataset, data, model, seed, args, refs, pmi)
    summarize(args.command)


if __name__ == "__main__":
    main()
