"""Two-stage ranking on the ML-1M half: the converged SASRec's top-200 re-ordered by DARE, TWIN and DIN
(issue 43), 3 seeds, every user, a target stage 1 missed counted as a miss.

Stage 1 of seed s is the shipped `sasrec_ml-1m` trained with `train.seed=s` (the baseline recipe),
tracked in a local store; a second SASRec of the same recipe trained with `split.holdout_tail=3` (the
3 items before each validation target train nothing) retrieves the extra training lists for those 3
targets. Both feed the candidate lists (configs/data/candidates/) and each ranker variant trains on
them with `train.seed=s` through `pipelines.train`.

python bench/two_stage.py stage1 --seeds 0 1 2          # the stage-1 SASRec runs, plain and tail
python bench/two_stage.py rankers --seeds 0 1 2          # every variant on each seed's lists
python bench/two_stage.py --summary                      # bench/results/two_stage.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import train  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402

RECORDS = ROOT / "bench/results/experiments/two_stage"
WORK = ROOT / "bench/results/tmp/two_stage"  # the local tracking store, stage-1 models, list configs
TRACKING = f"sqlite:///{WORK / 'mlflow.db'}"
SUMMARY = ROOT / "bench/results/two_stage.json"
# variant -> (experiment config, overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "dare": ("configs/experiment/dare_two_stage_ml-1m.yaml", []),
    "twin": ("configs/experiment/twin_two_stage_ml-1m.yaml", []),
    "din": ("configs/experiment/din_two_stage_ml-1m.yaml", []),
    "dare_att4": ("configs/experiment/dare_two_stage_ml-1m.yaml", ["model.params.d_att=4"]),
}
METRICS = ("test/ndcg@10", "test/hr@10")
TAIL = 3  # training targets per user from the tail stage 1


def stage1(seed: int, extra: list[str], *, tail: bool) -> int:
    """Train seed `seed` of the stage-1 SASRec (the baseline config; `tail`: without each history's last
    `TAIL` training items) into the local store."""
    WORK.mkdir(parents=True, exist_ok=True)
    name = "stage1_tail" if tail else "stage1"
    split = [f"split.holdout_tail={TAIL}"] if tail else []
    return train.main(
        ["--config", "configs/experiment/sasrec_ml-1m.yaml", "--results-json", str(RECORDS / f"{name}_seed{seed}.json")]
        + [f"train.seed={seed}", f"tracking.tracking_uri={TRACKING}", "tracking.experiment=two_stage_stage1"]
        + split
        + extra
    )


def _model_dir(name: str, seed: int) -> Path:
    """The saved model of run record `<name>_seed<seed>.json`, downloaded from its run once."""
    record = json.loads((RECORDS / f"{name}_seed{seed}.json").read_text())
    model_dir = WORK / f"{name}_seed{seed}"
    if not (model_dir / "model").is_dir():
        download_run_artifacts(TRACKING, record["mlflow_run_id"], "model", model_dir)
    return model_dir / "model"


def lists_config(seed: int) -> Path:
    """The candidate-list data config of seed `seed`: its stage-1 and tail stage-1 models."""
    base = yaml.safe_load((ROOT / "configs/data/candidates/ml-1m_sasrec.yaml").read_text())
    path = WORK / f"lists_seed{seed}.yaml"
    lists = {"stage1": str(_model_dir("stage1", seed)), "seed": seed}
    lists |= {"tail_stage1": str(_model_dir("stage1_tail", seed)), "tail_targets": TAIL}
    path.write_text(yaml.safe_dump(base | lists))
    return path


def ranker(variant: str, seed: int, extra: list[str]) -> int:
    config, overrides = VARIANTS[variant]
    out = RECORDS / f"{variant}_seed{seed}.json"
    return train.main(
        ["--config", config, "--results-json", str(out), f"data={lists_config(seed)}", f"train.seed={seed}"]
        + [f"tracking.tracking_uri={TRACKING}", "tracking.experiment=two_stage", *overrides, *extra]
    )


def _row(variant: str, subset: str, records: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    name = prefix if subset == "all" else f"{prefix}_long"
    row: dict[str, Any] = {
        "variant": variant,
        "subset": subset,
        "seeds": [r["config"]["train"]["seed"] for r in records],
    }
    for metric in METRICS:
        row[metric] = summarize([r["metrics"][metric.replace("test", name)] for r in records])
    row["oracle_recall@200"] = summarize([r["metrics"][f"{name}/recall@200"] for r in records])
    row["users"] = records[0]["metrics"][f"{name}/users"]
    if subset == "all":
        row["hr@10_in_list"] = summarize([r["metrics"][f"{prefix}/hr@10_in_list"] for r in records])
        if prefix == "test":  # the ranker's own order (stage-1 weight 0): what it adds before the mix
            row["ranker_alone_test/ndcg@10"] = summarize([r["metrics"]["ranker_test/ndcg@10"] for r in records])
    return row


DOC = ROOT / "docs/two_stage.md"
DOC_START, DOC_END = "<!-- two_stage:start -->", "<!-- two_stage:end -->"


def _cell(stats: dict[str, Any]) -> str:
    sd = "" if stats["sd"] is None else f" ± {stats['sd']:.4f}"
    return f"{stats['mean']:.4f}{sd} (median {stats['median']:.4f})"


def render(record: dict[str, Any]) -> str:
    """The summary as a markdown table, with each ranker's ratio to stage 1 on the same subset."""
    stage1 = {r["subset"]: r["test/ndcg@10"]["mean"] for r in record["rows"] if r["variant"] == "stage1"}
    lines = [
        "| variant | subset | seeds | test NDCG@10 | x stage 1 | test HR@10 | HR@10 in list | recall@200 | w "
        "| ranker alone |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in record["rows"]:
        ratio = r["test/ndcg@10"]["mean"] / stage1[r["subset"]] if r["subset"] in stage1 else float("nan")
        in_list = f"{r['hr@10_in_list']['mean']:.4f}" if "hr@10_in_list" in r else ""
        weights = ", ".join(f"{w:g}" for w in r.get("stage1_weight", []))
        alone = f"{r['ranker_alone_test/ndcg@10']['mean']:.4f}" if "ranker_alone_test/ndcg@10" in r else ""
        lines.append(
            f"| {r['variant']} | {r['subset']} ({r['users']:.0f} users) | {len(r['seeds'])} | "
            f"{_cell(r['test/ndcg@10'])} | {ratio:.3f} | {_cell(r['test/hr@10'])} | {in_list} | "
            f"{r['oracle_recall@200']['mean']:.4f} | {weights} | {alone} |"
        )
    return "\n".join(lines)


def write_doc(record: dict[str, Any]) -> None:
    """Put the rendered table between the markers of docs/two_stage.md."""
    text = DOC.read_text()
    head, rest = text.split(DOC_START, 1)
    _, tail = rest.split(DOC_END, 1)
    DOC.write_text(f"{head}{DOC_START}\n{render(record)}\n{DOC_END}{tail}")


def write_summary() -> dict[str, Any]:
    """Rows per variant and subset over the seeds recorded; stage 1 alone from the rankers' own lists."""
    rows = []
    for variant in VARIANTS:
        records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob(f"{variant}_seed*.json"))]
        if not records:
            continue
        if variant == "dare":  # stage 1 alone, on the same lists (every ranker's records agree on it)
            rows += [_row("stage1", subset, records, "stage1_test") for subset in ("all", "long")]
        for subset in ("all", "long"):
            row = _row(f"stage1+{variant}", subset, records, "test")
            row["stage1_weight"] = [r["metrics"]["stage1_weight"] for r in records]
            row["fit_s"] = summarize([r["fit_s"] for r in records])
            row["best_epoch"] = [r["best_epoch"] for r in records]
            rows.append(row)
    stage1_records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("stage1_seed*.json"))]
    tail_records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("stage1_tail_seed*.json"))]
    record = base_record("two_stage", "python bench/two_stage.py --summary", now_iso(), 0.0) | {
        "dataset": "ml-1m-half",
        "protocol": (
            "leave-one-out test target of every user; stage 1 (sasrec_ml-1m, seed s) ranks the catalog with the "
            "history masked and keeps its top-200; a ranker re-orders them; a target outside the top-200 is a miss"
        ),
        "stage1_full_ranking_test_ndcg@10": summarize([r["metrics"]["test/ndcg@10"] for r in stage1_records])
        if stage1_records
        else None,
        "tail_stage1_full_ranking_test_ndcg@10": summarize([r["metrics"]["test/ndcg@10"] for r in tail_records])
        if tail_records
        else None,
        "rows": rows,
    }
    write_record(SUMMARY, record)
    write_doc(record)
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", nargs="?", choices=["stage1", "rankers"], help="what to run (none: only --summary)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--summary", action="store_true", help="write the summary from the records")
    p.add_argument("--set", nargs="*", default=[], help="key=value overrides for every run")
    args = p.parse_args()
    os.chdir(ROOT)
    RECORDS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds if args.step else []:
        for name in ["stage1", "stage1_tail"] if args.step == "stage1" else args.variants:
            if name.startswith("stage1"):
                if (RECORDS / f"{name}_seed{seed}.json").is_file():  # trained already: its model is in the store
                    print(f"{name} seed {seed}: recorded, not retrained")
                    continue
                code = stage1(seed, args.set, tail=name == "stage1_tail")
            else:
                code = ranker(name, seed, args.set)
            if code != 0:
                raise SystemExit(f"{name} seed {seed} failed")
    if args.summary or not args.step:
        write_summary()


if __name__ == "__main__":
    main()
