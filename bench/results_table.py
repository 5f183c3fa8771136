"""Regenerate the README's results table from the experiment records in bench/results/experiments/.

python bench/results_table.py            # rewrite the table between the README markers
python bench/results_table.py --check    # exit 1 when the README table is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "bench/results/experiments"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
STOPS = {"time_limit": ", stopped at the time limit", "max_epochs": ", max epochs reached"}
COLUMNS = ("test/hr@10", "test/ndcg@10", "test/hr@20", "test/ndcg@20", "val/ndcg@10")


def render_table(records: list[dict]) -> str:
    head = "| experiment | model | attention | loss | dataset | " + " | ".join(COLUMNS)
    head += " | epochs (best) | wall | machine | command |"
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = [head, sep]
    for r in sorted(records, key=lambda r: (r.get("dataset") or "", r["name"])):
        m = r["metrics"]
        cells = [r["name"], r["model"], r["attention"], r.get("loss", ""), r.get("dataset") or ""]
        cells += [f"{m[c]:.4f}" if c in m else "" for c in COLUMNS]
        notes = ", stopped by hand" if r.get("interrupted") else ""  # scored with --finalize-run
        notes += STOPS.get(r.get("stopped_by", ""), "")  # early stopping, the usual end, is not noted
        if "resumed_after_epoch" in r:  # continued with --resume-run after its process was stopped
            notes += f", resumed after epoch {r['resumed_after_epoch']}"
        cells.append(f"{r.get('epochs')} ({r.get('best_epoch')}){notes}")
        cells.append(f"{r['wall_s'] / 60:.1f} min")
        machine = r["machine"]
        cells.append(f"{machine.get('gpu') or machine['cpu']}, {machine['cores']} cores")
        cells.append(f"`{r['command']}`")
        rows.append("| " + " | ".join(cells) + " |")
    protocol = "Protocol: leave-one-out, full ranking over the catalog, history items masked, ties by item index."
    return protocol + "\n\n" + "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))]
    text = README.read_text()
    if START not in text or END not in text:
        print(f"README.md lacks the markers {START} / {END}", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    new = f"{before}{START}\n{render_table(records)}\n{END}{after}"
    if args.check:
        return 0 if new == text else 1
    README.write_text(new)
    print(f"{len(records)} records -> {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
