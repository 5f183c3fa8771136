"""LLM-backed recommender (Lite-LLM4Rec style, SmolLM2-135M) on the ML-1M half next to SASRec.

Leave-one-out, full ranking over the catalog, history masked: the same split and evaluator as
configs/experiment/sasrec_ml-1m.yaml, whose records (bench/cold_start.py --split leave_one_out)
give SASRec's converged row, and row `sasrec_budget` trains SASRec (configs/experiment/sasrec_ml-1m.yaml)
under the LLM rows' budget. Each row is one training run (configs/experiment/llm_rec_ml-1m.yaml plus the
row's overrides) under the same wall-clock budget (`--minutes`, `train.max_minutes`), written to
bench/results/experiments/llm_rec/<row>_seed<s>.json with parameters, trainable parameters, time
per epoch (fit time / epochs, validation included) and inference users/s (every user's history
encoded and the catalog ranked, batch 256, on this machine). The summary table goes to
bench/results/experiments/llm_rec/summary.json.

python bench/llm_rec.py --rows lora_l2 random_l2 frozen_l2 lora_l1 lora_l4 sasrec_budget --minutes 6
python bench/llm_rec.py --summary-only   # rebuild the summary from the records
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results_table import format_mean_sd  # noqa: E402

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.eval.evaluate import evaluate  # noqa: E402
from recsys.model_io import load_model  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402
from recsys.train.experiment import load_experiment  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402
from recsys.train.run import train_experiment  # noqa: E402

OUT = ROOT / "bench/results/experiments/llm_rec"
DOC = ROOT / "docs/llm_rec.md"  # its table between these markers is generated with summary.md
DOC_START, DOC_END = "<!-- llm_rec:start -->", "<!-- llm_rec:end -->"
SASREC = ROOT / "bench/results/experiments/cold_start"  # sasrec_loo_seed<s>.json (bench/cold_start.py)
EXPERIMENT = ROOT / "configs/experiment/llm_rec_ml-1m.yaml"
SASREC_EXPERIMENT = ROOT / "configs/experiment/sasrec_ml-1m.yaml"
# rows of another experiment than EXPERIMENT: SASRec under the same wall-clock budget as the LLM rows
OTHER_EXPERIMENT: dict[str, Path] = {"sasrec_budget": SASREC_EXPERIMENT}
# row -> overrides of its experiment (the main row: pretrained SmolLM2, first 2 blocks, LoRA r 8 on q/v;
# `windows` spelled in every LLM row, so a row keeps its meaning when the experiment's default changes)
ROWS: dict[str, list[str]] = {
    "sasrec_budget": [],
    "lora_l2": ["model.params.windows=last"],
    "random_l2": ["model.params.windows=last", "model.params.pretrained=false"],
    "frozen_l2": ["model.params.windows=last", "model.params.tuning=frozen"],
    "full_l2": ["model.params.windows=last", "model.params.tuning=full"],
    "lora_l1": ["model.params.windows=last", "model.params.n_layers=1"],
    "lora_l4": ["model.params.windows=last", "model.params.n_layers=4"],
    "noid_l2": ["model.params.windows=last", "model.params.id_embedding=false"],
    # inputs rescaled to the norm of the backbone's own token embeddings (pretrained vs random again)
    "lora_l2_tn": ["model.params.windows=last", "model.params.input_scale=token_norm"],
    "random_l2_tn": [
        "model.params.windows=last",
        "model.params.pretrained=false",
        "model.params.input_scale=token_norm",
    ],
    # a random window of each user's sequence per epoch instead of its last one (all of the data trains;
    # the experiment's default since 2026-12-03)
    "lora_l2_rw": ["model.params.windows=random"],
    "random_l2_rw": ["model.params.windows=random", "model.params.pretrained=false"],
}

METRICS = ("test/ndcg@10", "test/hr@10", "val/ndcg@10")


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable ones) of a model as built for training."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@torch.no_grad()
def users_per_second(model: SequentialRecommender, max_len: int, batch: int = 256) -> float:
    """Test users per second through the evaluator: each history encoded, the whole catalog scored
    and ranked (history masked), batch `batch`."""
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    dm = SequenceDataModule(data_dir, max_len=max_len, batch_size=batch, eval_batch_size=batch, seed=0)
    dm.setup()
    loader = dm.test_dataloader()
    t0 = time.perf_counter()
    evaluate(model.eval(), loader, split="test")
    return len(loader.dataset) / (time.perf_counter() - t0)  # type: ignore[arg-type]


def trained_model(record: dict[str, Any], tracking_uri: str, tmp: Path) -> SequentialRecommender:
    return load_model(download_run_artifacts(tracking_uri, record["mlflow_run_id"], "model", tmp))


def run_row(row: str, seed: int, minutes: float, tracking_uri: str, command: str) -> dict[str, Any]:
    overrides = [f"train.seed={seed}", "train.progress_bar=false", f"train.max_minutes={minutes}", *ROWS[row]]
    cfg = load_experiment(OTHER_EXPERIMENT.get(row, EXPERIMENT), overrides)
    torch.manual_seed(seed)
    outcome = train_experiment(cfg, tracking_uri=tracking_uri, command=command)
    assert outcome is not None
    record = outcome.record
    model = trained_model(record, tracking_uri, ROOT / "bench/results/tmp/llm_rec" / f"{row}_{seed}")
    params, trainable = count_parameters(model)  # a rebuilt model keeps its tuning's requires_grad flags
    record |= {
        "row": row,
        "overrides": overrides,
        "parameters": params,
        "trainable_parameters": trainable,
        "epoch_s": round(record["fit_s"] / max(record["epochs"], 1), 1),
        "inference_users_per_s": round(users_per_second(model, cfg.model.params.get("max_len", 20)), 1),
        "load_average": os.getloadavg(),
        "budget": {
            "max_minutes": minutes,
            "max_len": cfg.model.params.get("max_len"),
            "batch_size": cfg.train.batch_size,
        },
    }
    write_record(OUT / f"{row}_seed{seed}.json", record)
    return record


def sasrec_rows(tracking_uri: str) -> list[dict[str, Any]]:
    """SASRec's leave-one-out records (bench/cold_start.py), with its parameters and users/s measured here."""
    rows = []
    for path in sorted(SASREC.glob("sasrec_loo_seed*.json")):
        record = json.loads(path.read_text())
        row = {
            "row": "sasrec_converged",  # early stopping only, no time budget
            "file": str(path.relative_to(ROOT)),
            "seed": record.get("config", {}).get("train", {}).get("seed"),
        }
        row |= {k: record["metrics"].get(k) for k in METRICS}
        row["epoch_s"] = round(record["fit_s"] / max(record["epochs"], 1), 1)
        try:
            model = trained_model(record, tracking_uri, ROOT / "bench/results/tmp/llm_rec" / path.stem)
            row["parameters"], row["trainable_parameters"] = count_parameters(model)
            row["inference_users_per_s"] = round(
                users_per_second(model, int(record["config"]["model"]["params"]["max_len"])), 1
            )
        except Exception as err:  # the run may live in another store: the record still gives the metrics
            row["note"] = f"model not loaded: {err}"
        rows.append(row)
    return rows


def summary(tracking_uri: str, with_sasrec_speed: bool, command: str, started: str, t0: float) -> dict[str, Any]:
    """The summary record: every row's record, `by_row` over seeds, and SASRec's converged rows."""
    rows: list[dict[str, Any]] = []
    for path in sorted(OUT.glob("*_seed*.json")):
        r = json.loads(path.read_text())
        rows.append(
            {"row": r["row"], "file": str(path.relative_to(ROOT)), "seed": r["config"]["train"]["seed"]}
            | {k: r["metrics"].get(k) for k in METRICS}
            | {
                k: r.get(k)
                for k in (
                    "parameters",
                    "trainable_parameters",
                    "epoch_s",
                    "epochs",
                    "stopped_by",
                    "inference_users_per_s",
                    "load_average",
                )
            }
        )
    sasrec = sasrec_rows(tracking_uri) if with_sasrec_speed else []
    return base_record("llm_rec_ml-1m", command, started, time.perf_counter() - t0) | {
        "protocol": "ML-1M half, leave-one-out, full ranking, history masked (as sasrec_ml-1m)",
        "rows": rows,
        "by_row": by_row(rows),
        "sasrec": sasrec or "no SASRec leave-one-out record yet (bench/cold_start.py --split leave_one_out)",
    }


def by_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row: the seeds, test NDCG@10 / HR@10 as `mean ± sd (median, n)`, and the medians of the rest."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["row"], []).append(r)
    out = []
    for name, runs in groups.items():

        def median(key: str, runs: list[dict[str, Any]] = runs) -> float | None:
            values = [float(r[key]) for r in runs if r.get(key) is not None]
            return summarize(values)["median"] if values else None

        out.append(
            {
                "row": name,
                "seeds": sorted(r["seed"] for r in runs),
                "test/ndcg@10": format_mean_sd([float(r["test/ndcg@10"]) for r in runs]),
                "test/hr@10": format_mean_sd([float(r["test/hr@10"]) for r in runs]),
                "epochs_median": median("epochs"),
                "epoch_s_median": median("epoch_s"),
                "users_per_s_median": median("inference_users_per_s"),
                "parameters": runs[0].get("parameters"),
                "trainable_parameters": runs[0].get("trainable_parameters"),
                "load_1min_max": max(float(r["load_average"][0]) for r in runs if r.get("load_average")),
            }
        )
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The table of `by_row`, generated (docs/llm_rec.md includes it; never typed by hand)."""
    lines = [
        "<!-- generated by `python bench/llm_rec.py --summary-only`; do not edit -->",
        "| row | seeds | test NDCG@10 | test HR@10 | epochs (median) | epoch s (median) | users/s (median) "
        "| params | trainable | load (1 min, max) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["by_row"]:
        cells = [
            f"`{r['row']}`",
            ",".join(map(str, r["seeds"])),
            r["test/ndcg@10"],
            r["test/hr@10"],
            f"{r['epochs_median']:g}" if r["epochs_median"] is not None else "",
            f"{r['epoch_s_median']:.0f}" if r["epoch_s_median"] is not None else "",
            f"{r['users_per_s_median']:.0f}" if r["users_per_s_median"] is not None else "",
            f"{r['parameters']:,}" if r["parameters"] else "",
            f"{r['trainable_parameters']:,}" if r["trainable_parameters"] else "",
            f"{r['load_1min_max']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", nargs="+", default=["sasrec_budget", "lora_l2_rw", "random_l2_rw", "lora_l2", "random_l2"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per row (train.max_minutes)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python " + " ".join(sys.argv)
    started, t0 = now_iso(), time.perf_counter()
    if not args.summary_only:
        for seed in args.seeds:
            for row in args.rows:
                r = run_row(row, seed, args.minutes, args.tracking_uri, command)
                print(f"{row} seed {seed}: test NDCG@10 {r['metrics']['test/ndcg@10']:.4f} epochs {r['epochs']}")
    result = summary(args.tracking_uri, True, command, started, t0)
    write_record(OUT / "summary.json", result)
    table = markdown(result)
    (OUT / "summary.md").write_text(table)
    doc = DOC.read_text()
    if DOC_START in doc and DOC_END in doc:  # the docs' copy of the table, regenerated with it
        head, rest = doc.split(DOC_START, 1)
        DOC.write_text(head + DOC_START + "\n" + table + DOC_END + rest.split(DOC_END, 1)[1])


if __name__ == "__main__":
    main()
