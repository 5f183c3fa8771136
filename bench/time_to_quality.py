"""Time to quality: validation NDCG@10 against wall-clock seconds and epochs of one training run, and
the time it took to reach a target.

python bench/time_to_quality.py --config configs/experiment/sasrec_beauty.yaml --recipe shipped \\
    --target-metric val/ndcg@10 --target 0.053 [--seed 0] [--tracking-uri URI] [key=value ...]
python bench/time_to_quality.py --plot docs/time_to_quality.png      # only draw the recorded curves

The run goes through the normal run path (`recsys.train.run.train_experiment`), tracked in a
throwaway sqlite MLflow store under a temp dir unless --tracking-uri is given. The curve is read back
from MLflow: each validation check's val/ndcg@10 with the wall-clock time Lightning logged it
(`recsys.tracking.mlflow.validation_curve(with_time=True)`). Seconds count from the MLflow run's
start (as bench/train.py measured "today's" figures), which comes after the tracking store's set-up
and the model's assembly (`setup_s`) and before the Trainer and the DataModule's setup; `train_s`
is the record's `fit_s` less `setup_s`, the training time on the curve's clock. With
`eval.val_users` set the checks rank that sample of users (the row says so), while the final
val/test metrics rank every user.

`val/ndcg@10`: seconds_to_target / epochs_to_target are those of the first check at or above the
target. `test/ndcg@10`: the target is judged on the final test metric of the best checkpoint, and
seconds_to_target is the training time (`train_s`), epochs_to_target the epochs trained. Both are
null when the target was not reached. A row is upserted into --out (`rows` keyed by dataset, model, recipe and
seed; `summary` over seeds). Measure alone: the load average at start and end is in every row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402

TARGET_METRICS = ("val/ndcg@10", "test/ndcg@10")
CURVE_KEY = "val/ndcg@10"
ROW_KEY = ("dataset", "model", "recipe", "seed")
GROUP_KEY = ("dataset", "model", "recipe", "target_metric", "target")
DEFAULT_OUT = ROOT / "bench/results/time_to_quality.json"


def reached(curve: list[list[float]], target: float) -> tuple[float | None, int | None]:
    """Seconds and epochs of the first `[seconds, epoch, value]` point at or above `target` (None, None if none)."""
    for seconds, epoch, value in curve:
        if value >= target:
            return seconds, int(epoch)
    return None, None


def time_to_target(
    curve: list[list[float]], target_metric: str, target: float, final_test: float, train_s: float, epochs: int
) -> tuple[float | None, int | None]:
    """`(seconds_to_target, epochs_to_target)` of a run under the rules of the module docstring."""
    if target_metric == "val/ndcg@10":
        return reached(curve, target)
    if target_metric == "test/ndcg@10":
        return (train_s, epochs) if final_test >= target else (None, None)
    raise ValueError(f"target_metric must be one of {list(TARGET_METRICS)}, got {target_metric!r}")


def run_row(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Train the experiment once and return its time-to-quality row."""
    import pytorch_lightning as pl
    import torch

    from recsys.tracking.mlflow import read_run, validation_curve
    from recsys.train.experiment import load_experiment
    from recsys.train.run import train_experiment

    with tempfile.TemporaryDirectory(prefix="ttq-") as tmp:
        overrides = list(args.overrides)
        if args.seed is not None:
            overrides.append(f"train.seed={args.seed}")
        if args.tracking_uri is None:  # the throwaway store keeps its artifacts beside it, not in the repo
            overrides += [f"tracking.artifact_dir={tmp}/artifacts", "tracking.experiment=time_to_quality"]
        cfg = load_experiment(args.config, overrides)
        if 10 not in cfg.eval.ks:
            raise ValueError(f"the curve is val/ndcg@10: eval.ks must include 10, got {list(cfg.eval.ks)}")
        uri = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        pl.seed_everything(cfg.train.seed, workers=True, verbose=False)  # as pipelines.train seeds a run
        load_start = os.getloadavg()
        t0 = time.time()
        outcome = train_experiment(cfg, tracking_uri=uri, command=command)
        load_end = os.getloadavg()
        if outcome is None:
            raise RuntimeError("train_experiment returned no outcome: run this benchmark in one process, not DDP")
        checks = validation_curve(uri, outcome.run_id, CURVE_KEY, with_time=True)
        run_start = read_run(uri, outcome.run_id)["start_ms"] / 1000
    curve = [
        [round(ts / 1000 - run_start, 2), int(epoch), float(value)]
        for ts, epoch, value in zip(checks["timestamp_ms"], checks["epochs_trained"], checks["value"], strict=True)
    ]
    record, test = outcome.record, float(outcome.metrics["test/ndcg@10"])
    if args.record is not None:  # the run's own results record too (e.g. a seed of bench/baselines.py)
        write_record(args.record, record)
    fit_s, epochs, setup_s = float(record["fit_s"]), int(record["epochs"]), round(run_start - t0, 2)
    train_s = round(fit_s - setup_s, 2)
    seconds, epochs_to = time_to_target(curve, args.target_metric, args.target, test, train_s, epochs)
    return {
        "dataset": record["dataset"],
        "model": record["model"],
        "recipe": args.recipe,
        "target_metric": args.target_metric,
        "target": args.target,
        "seconds_to_target": seconds,
        "epochs_to_target": epochs_to,
        "test/ndcg@10": test,
        "val/ndcg@10": float(outcome.metrics["val/ndcg@10"]),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in load_end]},
        "seed": cfg.train.seed,
        "fit_s": fit_s,  # the run record's: from the call of train_experiment to the end of the fit
        "setup_s": setup_s,  # of which before the MLflow run started (the curve's origin)
        "train_s": train_s,  # fit_s - setup_s
        "epochs": epochs,
        "stopped_by": record.get("stopped_by"),
        "val_users": cfg.eval.val_users,  # None: the curve's checks ranked every validation user
        "started_at": record["started_at"],
        "git_commit": record["git_commit"],
        "machine": record["machine"],
        "command": command,
        "curve": curve,
        "config": record["config"],
    }


def upsert(rows: list[dict[str, Any]], row: dict[str, Any]) -> list[dict[str, Any]]:
    """`rows` with `row` replacing the one of the same dataset, model, recipe and seed (or appended)."""
    key = tuple(row[k] for k in ROW_KEY)
    return [r for r in rows if tuple(r[k] for k in ROW_KEY) != key] + [row]


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dataset, model, recipe and target over its seeds: `reached` (k of n seeds) and
    mean/sd/median of the time to target (over the seeds that reached it), test NDCG@10 and fit time."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in GROUP_KEY), []).append(row)
    out = []
    for key, members in groups.items():
        hit = [r for r in members if r["seconds_to_target"] is not None]
        out.append(
            {
                **dict(zip(GROUP_KEY, key, strict=True)),
                "seeds": sorted(r["seed"] for r in members),
                "reached": f"{len(hit)}/{len(members)}",
                "seconds_to_target": summarize([r["seconds_to_target"] for r in hit]) if hit else None,
                "epochs_to_target": summarize([r["epochs_to_target"] for r in hit]) if hit else None,
                "test/ndcg@10": summarize([r["test/ndcg@10"] for r in members]),
                "fit_s": summarize([r["fit_s"] for r in members]),
            }
        )
    return out


def write_results(out: Path, row: dict[str, Any], command: str, started_at: str, wall_s: float) -> dict[str, Any]:
    """Upsert `row` into the results file at `out`, recompute its summary, write it; returns the record."""
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    rows = upsert(rows, row)
    record = base_record("time_to_quality", command, started_at, wall_s) | {
        "rows": rows,
        "summary": summary_rows(rows),
    }
    write_record(out, record)
    return record


def plot_curves(rows: list[dict[str, Any]], path: Path) -> Path:
    """Draw every row's val NDCG@10 against seconds, one panel per dataset, val targets dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    if not datasets:
        raise ValueError("no rows to plot")
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == dataset]
        for row in mine:
            seconds = [p[0] for p in row["curve"]]
            values = [p[2] for p in row["curve"]]
            ax.plot(seconds, values, marker=".", label=f"{row['model']} {row['recipe']} (seed {row['seed']})")
        for target in sorted({r["target"] for r in mine if r["target_metric"] == CURVE_KEY}):
            ax.axhline(target, linestyle="--", color="grey", linewidth=0.8)
        ax.set(title=dataset, xlabel="seconds since the MLflow run started", ylabel="val NDCG@10")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="configs/experiment/<exp>.yaml (omit with --plot to only draw)")
    p.add_argument("--recipe", help="label of the recipe (e.g. shipped, fast)")
    p.add_argument("--target-metric", choices=TARGET_METRICS, default="val/ndcg@10")
    p.add_argument("--target", type=float, help="the NDCG@10 to reach")
    p.add_argument("--seed", type=int, help="train.seed (default: the config's)")
    p.add_argument("--tracking-uri", help="MLflow store of the run (default: a throwaway sqlite store)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--record", type=Path, help="also write the run's results record (as pipelines.train does)")
    p.add_argument("--plot", type=Path, help="draw the curves of every row of --out to this PNG")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr_schedule=onecycle")
    args = p.parse_args(argv)
    if args.config is None and args.plot is None:
        p.error("give --config (run one experiment) or --plot (draw the recorded curves), or both")
    if args.config is not None and (args.recipe is None or args.target is None):
        p.error("--config needs --recipe and --target")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = shlex.join(["python", "bench/time_to_quality.py", *(sys.argv[1:] if argv is None else argv)])
    if args.config is not None:
        started_at, t0 = now_iso(), time.perf_counter()
        row = run_row(args, command)
        write_results(args.out, row, command, started_at, time.perf_counter() - t0)
        brief = {k: row[k] for k in ("dataset", "model", "recipe", "seconds_to_target", "epochs_to_target", "train_s")}
        print(json.dumps(brief | {"test/ndcg@10": round(row["test/ndcg@10"], 4)}))
    if args.plot is not None:
        print(f"figure: {plot_curves(json.loads(args.out.read_text())['rows'], args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
