"""The README's leaderboard: every model family side by side on the ML-1M half (the demo's data), one
protocol, from the records under bench/results/ (bench/results_table.py writes it).

A record is on the leaderboard's protocol when it ran on the ML-1M half (users 1-2,999 of ML-1M) with a
leave-one-out split, full ranking and history items masked, and no cold-start share. Each family's row
is its group of records (one per seed): among the groups with at least 3 seeds (a claim rests on 3),
else among all, the one with the best mean validation NDCG@10.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_tables import format_seconds, load_records, machine_name

from recsys.tracking.records import summarize

# Record `model` (a two-stage record: `<stage 1>+<ranker>`) -> row label, in row order.
FAMILIES = {
    "pop": "popularity",
    "text_knn": "text kNN (mean MiniLM vector of the history, untrained)",
    "sasrec": "SASRec",
    "bert4rec": "BERT4Rec",
    "icsrec": "ICSRec",
    "recformer": "Recformer",
    "recformer_id": "Recformer text + ID (learned ID vectors for trained items)",
    "recformer_id_user": "Recformer text + ID, IDs on the user side too (an ID encoder over 200 items)",
    "llm_rec": "LLM-backed `llm_rec` (SmolLM2-135M)",
    "id_text_sasrec_smollm2": "SASRec + SmolLM2 item vectors (ID + text views, `id_text_sasrec`)",
    "id_text_sasrec_random": "SASRec + random frozen item vectors (the control of the row above)",
    "id_text_sasrec_minilm": "SASRec + MiniLM item vectors (ID + text views)",
    "id_text_sasrec_smollm2_only": "SmolLM2 item vectors without IDs (text view only)",
    "sasrec+dare": "two-stage: SASRec top-200 + DARE ranker",
    "sasrec+twin": "two-stage: SASRec top-200 + TWIN ranker",
    "sasrec+din": "two-stage: SASRec top-200 + DIN ranker",
}
DATASETS = ("ml-1m", "ml-1m-half")  # the names records give the ML-1M half
HALF_USERS = 2999  # the ML-1M half keeps users 1-2,999 (the full ML-1M has 6,040)
SEED_SUFFIX = re.compile(r"_seed\d+$")
TEST, VAL = "test/ndcg@10", "val/ndcg@10"
STAGE1 = "stage1_test/ndcg@10"  # a two-stage record's stage 1 alone, on the same lists


@dataclass(frozen=True)
class Entry:
    """One record on the leaderboard's protocol."""

    family: str
    group: str  # the record's path under bench/results/ without `.json` and `_seed<N>`
    metrics: dict[str, float]  # test/ndcg@10, test/hr@10 and, where recorded, val/ndcg@10
    fit_s: float | None
    fit_note: str  # what the fit time covers when it is not the model's training
    machine: str
    n_items: int | None
    note: str = ""  # said under the table


def on_protocol(record: Mapping[str, Any]) -> bool:
    """True when the record ran on the ML-1M half, leave-one-out, full ranking, history masked, no cold share."""
    p = record.get("protocol")
    if not isinstance(p, Mapping) or record.get("dataset") not in DATASETS:
        return False
    users = p.get("n_users", p.get("users"))
    loo = p.get("split") == "leave_one_out" and not p.get("cold_item_share") and not p.get("holdout_tail")
    return loo and p.get("full_ranking") is True and p.get("exclude_seen") is True and users == HALF_USERS


def entry(record: Mapping[str, Any]) -> Entry | None:
    """The record as a leaderboard entry, or None when it is off the protocol or of no known family."""
    if not on_protocol(record):
        return None
    metrics, family = record.get("metrics") or {}, record.get("model")
    fit_s, fit_note, note = record.get("fit_s"), "", ""
    protocol = record.get("protocol") or {}
    if protocol.get("kind") == "candidate_lists":  # a ranker on stage 1's lists (bench/two_stage.py)
        family = f"{protocol.get('stage1_model')}+{family}"
        if f"stage1_{TEST}" in metrics:  # kept beside the entry's metrics; the note gives the group's mean
            metrics = {**metrics, STAGE1: metrics[f"stage1_{TEST}"]}
        fit_note = "ranker only"
    if family == "id_text_sasrec":  # one row per item tower variant: its experiment's name
        family = str(record.get("name", "")).removesuffix("_ml-1m")
    params = (((record.get("config") or {}).get("model") or {}).get("params")) or {}
    if family == "recformer" and params.get("item_ids"):  # text + ID: its own row, with or without user-side IDs
        family = "recformer_id_user" if params.get("id_len") else "recformer_id"
    if family not in FAMILIES or TEST not in metrics or "test/hr@10" not in metrics:
        return None
    if ((record.get("config") or {}).get("train") or {}).get("num_threads") == 1:
        fit_note = ", ".join(n for n in (fit_note, "1 thread") if n)  # e.g. beside another run: not alone
    if fit_s is None and record.get("wall_s") is not None:
        fit_s, fit_note = record["wall_s"], "whole run"
    return Entry(
        family=str(family),
        group=SEED_SUFFIX.sub("", str(record["_file"]).removesuffix(".json")),
        metrics={k: float(v) for k, v in metrics.items() if k in (TEST, VAL, "test/hr@10", STAGE1)},
        fit_s=fit_s,
        fit_note=fit_note,
        machine=machine_name(record),
        n_items=(record.get("protocol") or {}).get("n_items"),
        note=note,
    )


def leaderboard_entries(results_dir: Path) -> list[Entry]:
    """Every record under `results_dir` (any depth) that is on the leaderboard's protocol."""
    return [e for r in load_records(results_dir, "**/*.json") if (e := entry(r)) is not None]


def best_groups(entries: list[Entry]) -> dict[str, list[Entry]]:
    """Per family, its group with the best mean validation NDCG@10 among those with >= 3 seeds (else among
    all; ties and groups without it: by name)."""
    groups: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for e in entries:
        groups[(e.family, e.group)].append(e)

    def rank(key: tuple[str, str]) -> tuple[bool, float, str]:
        vals = [e.metrics[VAL] for e in groups[key] if VAL in e.metrics]
        return (len(groups[key]) < 3, -summarize(vals)["mean"] if vals else float("inf"), key[1])

    best: dict[str, list[Entry]] = {}
    for key in sorted(groups, key=rank):
        best.setdefault(key[0], groups[key])
    return best


def mean_sd(values: list[float]) -> str:
    """`mean ± sample sd`, or the value alone for one run."""
    s = summarize(values)
    return f"{s['mean']:.4f}" if s["sd"] is None else f"{s['mean']:.4f} ± {s['sd']:.4f}"


def render_leaderboard(entries: list[Entry]) -> str:
    """The ML-1M half table: one row per family in `FAMILIES` order, `no record yet` where it has none."""
    best = best_groups(entries)
    n_items = next((e.n_items for e in entries if e.n_items), None)
    items = f", {n_items:,} items" if n_items else ""
    lines = [
        f"### ML-1M half (the demo's data: {HALF_USERS:,} users{items}): every model family",
        "",
        "Protocol of every row: leave-one-out, full ranking over the catalog, history items masked.",
        "",
        "| model | records | n | test NDCG@10 | test HR@10 | fit / run |",
        "|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for family, label in FAMILIES.items():
        group = best.get(family)
        if group is None:
            lines.append(f"| {label} | no record yet | | | | |")
            continue
        fits = [e.fit_s for e in group if e.fit_s is not None]
        fit = format_seconds(summarize(fits)["mean"] if fits else None)
        note = f" ({group[0].fit_note})" if fits and group[0].fit_note else ""
        stage1 = [e.metrics[STAGE1] for e in group if STAGE1 in e.metrics]
        note_text = group[0].note or (
            f"stage 1 alone on the same lists: test NDCG@10 {mean_sd(stage1)}; see docs/two_stage.md" if stage1 else ""
        )
        if note_text:  # rows with the same note share its number
            if note_text not in notes:
                notes.append(note_text)
            label += f" [{notes.index(note_text) + 1}]"
        cells = [label, f"`{group[0].group}`", str(len(group))]
        cells += [mean_sd([e.metrics[m] for e in group]) for m in (TEST, "test/hr@10")]
        lines.append("| " + " | ".join([*cells, fit + note]) + " |")
    machines = sorted({e.machine for g in best.values() for e in g})
    lines += ["", *(f"- [{i}] {note}" for i, note in enumerate(notes, 1))]
    lines += [
        "- one row per family: its records (`<records>[_seed<N>].json` under `bench/results/`, one per seed) "
        "with the best mean validation NDCG@10 among those run on >= 3 seeds (else among all); "
        "mean ± sample sd over the n seeds run",
        f"- fit / run: mean training time of one run, on {'; '.join(machines) or '—'}; *whole run*: no fit time "
        "recorded; *ranker only*: the ranker's training over an already trained SASRec; *1 thread*: trained on one "
        "thread (the ML-1M baselines and item-tower runs ran two at a time), not a 2-core timing",
    ]
    return "\n".join(lines)
