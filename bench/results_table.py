"""Generate the README's results (the ML-1M half leaderboard, then one table per other dataset) and the
ledger of every training run, from the records under bench/results/.

python bench/results_table.py            # rewrite the README's results and bench/results/EXPERIMENTS.md
python bench/results_table.py --check    # exit 1 when either file differs from what would be generated

Every record carries what the tables need, its resolved config included: nothing is read from git, so
the check runs on a shallow clone. The leaderboard is built by bench/leaderboard.py; the per-dataset
tables and the ledger read `bench/results/experiments/*.json` (one record per `pipelines.train` run)
through bench/run_tables.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling table modules

from leaderboard import leaderboard_entries, render_leaderboard  # noqa: E402
from run_tables import (  # noqa: E402
    PROTOCOL,
    TIMED_AFTER_RESUME,
    Run,
    build_runs,
    by_key,
    differs_note,
    end_note,
    epoch_seconds,
    format_mean_sd,
    format_seconds,
    load_records,
    machine_name,
    model_order,
    values,
)

from recsys.tracking.records import summarize  # noqa: E402

__all__ = ["format_mean_sd"]  # bench/llm_rec.py formats its summary with it

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python bench/results_table.py"
RESULTS_DIR = Path("bench/results")
RECORDS_DIR = RESULTS_DIR / "experiments"
README = Path("README.md")
LEDGER = RESULTS_DIR / "EXPERIMENTS.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
LEADERBOARD_DATASETS = ("ml-1m", "ml-1m-half")  # shown by the leaderboard, not in a table of their own
# Published figures, test metrics @10, full ranking, leave-one-out: the ICSRec paper (Qin et al.,
# "Intent Contrastive Learning with Cross Subsequences for Sequential Recommendation", WSDM 2024);
# Beauty from its released checkpoints. None is cited for the other models.
ANCHORS: dict[tuple[str, str], dict[str, float]] = {
    ("icsrec", "beauty"): {"test/hr@10": 0.0959, "test/ndcg@10": 0.0578},
    ("icsrec", "sports"): {"test/hr@10": 0.0565, "test/ndcg@10": 0.0335},
}
SUMMARY_METRICS = ("test/ndcg@10", "test/hr@10")
SUMMARY_HEAD = (
    "| model | config | attention | at defaults | n | test NDCG@10 | published | test HR@10 | published | epoch |"
)


def render_summary(runs: list[Run]) -> str:
    """Per dataset, one row per experiment file: its runs at today's defaults, else its best-validation group."""
    lines: list[str] = []
    notes: list[str] = []
    datasets = by_key(runs, lambda r: r.record.get("dataset") or "?")
    for dataset in sorted(d for d in datasets if d not in LEADERBOARD_DATASETS):
        protocol = datasets[dataset][0].record.get("protocol") or {}
        size = f" ({protocol['n_users']:,} users, {protocol['n_items']:,} items)" if "n_users" in protocol else ""
        lines += [f"### {dataset.capitalize()}{size}", "", PROTOCOL, ""]
        lines += [SUMMARY_HEAD, "|" + "---|" * (SUMMARY_HEAD.count("|") - 1)]
        experiments = by_key(datasets[dataset], lambda r: r.experiment)
        for experiment in sorted(experiments, key=lambda e: (model_order(experiments[e][0].record["model"]), e)):
            group, at_defaults = summary_group(experiments[experiment])
            first = group[0]
            anchor = ANCHORS.get((first.record["model"], dataset), {})
            if not at_defaults:
                notes.append(f"`{first.name}`: not at today's defaults: {differs_note(first)}")
            flag = "yes" if at_defaults else f"no [{len(notes)}]"
            cells = [first.record["model"], f"`{first.name}`", first.record.get("attention", ""), flag, str(len(group))]
            for metric in SUMMARY_METRICS:
                s = summarize(values(group, metric))
                cells.append(f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s["sd"] is not None else ""))
                cells.append(f"{anchor[metric]:.4f}" if metric in anchor else "—")
            times = [t for r in group if (t := epoch_seconds(r.record)) is not None]
            cells.append(format_seconds(summarize(times)["mean"] if times else None))
            lines += ["| " + " | ".join(cells) + " |"]
        lines.append("")
    lines += [f"- [{i}] {note}" for i, note in enumerate(notes, 1)]
    lines += [
        "- mean ± sample sd over the n seeds run; *at defaults*: the runs used today's config of that file, seed "
        "aside (otherwise the group of runs with the best mean validation NDCG@10 is shown)",
        "- published: the ICSRec paper's figures (Qin et al., WSDM 2024; Beauty: its released checkpoints)",
        "- epoch: fit time / epochs, on the machines listed in the ledger",
    ]
    return "\n".join(lines)


def summary_group(runs: list[Run]) -> tuple[list[Run], bool]:
    """The runs at today's defaults, else the seed group with the best mean val/ndcg@10."""
    at_defaults = [r for r in runs if r.at_defaults]
    if at_defaults:
        return at_defaults, True

    def score(group: list[Run]) -> float:
        vals = values(group, "val/ndcg@10")
        return summarize(vals)["mean"] if vals else float("-inf")

    groups = by_key(runs, lambda r: r.group)
    return max(groups.values(), key=lambda g: (score(g), g[0].record["_file"])), False


def render_ledger(runs: list[Run]) -> str:
    """Every record, grouped by model then dataset."""
    lines = [
        "# Experiment ledger",
        "",
        f"Generated by `{COMMAND}` from `bench/results/experiments/*.json`; do not edit by hand.",
        "Every row is one training run, also an MLflow run (its id is in the JSON).",
        "",
        PROTOCOL,
        "",
        "- **overrides**: the `k=v` of the run's command, relative to its config file as it was at the run's "
        "commit (progress bar, threads, time limit and tracking left out).",
        "- **vs today's defaults**: where the run's config (the resolved config in its record) differs from "
        "today's config of that file, as the `k=v` to add to rerun it now (seed aside); `at defaults` when "
        "it does not.",
        "- **end**: why the fit ended (early stopping, time limit, max epochs, stopped by hand and scored with "
        "`--finalize-run`; `not recorded` for records older than that field).",
        "",
    ]
    head = (
        "| record | config | dataset | attention | loss | overrides | test HR@10 | test NDCG@10 | val NDCG@10 "
        "| epochs (best) | end | wall | machine | commit | vs today's defaults |"
    )
    models = by_key(runs, lambda r: r.record["model"])
    for model in sorted(models, key=model_order):
        lines += [f"## {model}", ""]
        datasets = by_key(models[model], lambda r: r.record.get("dataset") or "?")
        for dataset in sorted(datasets):
            lines += [f"### {model} on {dataset}", "", head, "|" + "---|" * (head.count("|") - 1)]
            lines += [ledger_row(r) for r in sorted(datasets[dataset], key=lambda r: (r.experiment, r.record["_file"]))]
            lines.append("")
    return "\n".join(lines)


def ledger_row(run: Run) -> str:
    r = run.record

    def metric(name: str) -> str:
        value = run.metric(name)
        return f"{value:.4f}" if value is not None else "—"

    wall = "—"
    if r.get("wall_s"):
        partial = " (after the resume only)" if r["_file"] in TIMED_AFTER_RESUME else ""
        wall = f"{r['wall_s'] / 60:.1f} min{partial}"
    cells = [
        f"[{r['_file']}](experiments/{r['_file']})",
        f"`{run.name}`",
        r.get("dataset") or "",
        r.get("attention", ""),
        r.get("loss", ""),
        "`" + " ".join(run.overrides) + "`" if run.overrides else "—",
        metric("test/hr@10"),
        metric("test/ndcg@10"),
        metric("val/ndcg@10"),
        f"{r.get('epochs')} ({r.get('best_epoch')})",
        end_note(r),
        wall,
        machine_name(r),
        (r.get("git_commit") or "")[:7],
        differs_note(run).replace("|", "\\|"),
    ]
    return "| " + " | ".join(cells) + " |"


def render_readme(text: str, results: str) -> str:
    """`text` with the part between the results markers replaced by `results`."""
    if START not in text or END not in text:
        raise ValueError(f"the README lacks the markers {START} / {END}")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{results}\n{END}{after}"


def generate(root: Path, results_dir: Path, readme: Path, ledger: Path) -> dict[Path, str]:
    """The new text of the README and of the ledger, keyed by their paths.

    Args:
        root: the repository root (today's experiment configs are read from it).
        results_dir: holds the records: the leaderboard reads all of them, the tables `experiments/*.json`.
        readme: the file with the results markers.
        ledger: the ledger's path.
    """
    runs = build_runs(load_records(results_dir / "experiments"), root)
    results = render_leaderboard(leaderboard_entries(results_dir)) + "\n\n" + render_summary(runs)
    return {readme: render_readme(readme.read_text(), results), ledger: render_ledger(runs)}


def stale_files(outputs: Mapping[Path, str]) -> list[Path]:
    """The paths whose current text differs from the generated one."""
    return [path for path, text in outputs.items() if not path.is_file() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated file is out of date")
    args = parser.parse_args(argv)
    try:
        outputs = generate(ROOT, ROOT / RESULTS_DIR, ROOT / README, ROOT / LEDGER)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_files(outputs)
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            print(f"stale: {names}; run `{COMMAND}` and commit the result", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    print(f"results -> {README}, {LEDGER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
