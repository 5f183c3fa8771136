"""bench/retrieval_scale.py's table read back: the default index settings chosen from it, and the docs' table.

The choice: the first (kind, value), in order of kind preference and increasing value, that reaches
--target-recall at every size, has a single-query p99 below --p99-ms at the smallest size and an index
at the largest size that fits --memory-budget-gb.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KIND_PREFERENCE = ("ivf_flat", "ivf_pq", "hnsw")  # ties in the choice go to the simpler index


# ----------------------------------------------------------------------------- the choice
def choose(results: dict[str, Any], k: int, args: argparse.Namespace) -> dict[str, Any]:
    """The first (kind, refine, value) meeting every constraint at every size, by kind preference then value."""
    sizes = sorted(int(s) for s in results["sizes"])
    key = f"recall@{k}"
    rejected = []
    for kind in KIND_PREFERENCE:
        per_size = [results["sizes"][str(n)]["kinds"].get(kind) for n in sizes]
        if not sizes or any(m is None or not m.get("built") for m in per_size):
            rejected.append(f"{kind}: not built at every size")
            continue
        memory_gb = per_size[-1]["index_bytes"] / 1e9
        if memory_gb > args.memory_budget_gb:
            rejected.append(f"{kind}: {memory_gb:.2f} GB at {sizes[-1]} items > {args.memory_budget_gb} GB")
            continue
        settings = sorted(
            {(r["refine_factor"] or 0, r["value"]) for r in per_size[0]["sweep"]}, key=lambda s: (s[1], s[0])
        )
        for refine, value in settings:
            rows = [
                next(r for r in m["sweep"] if ((r["refine_factor"] or 0), r["value"]) == (refine, value))
                for m in per_size
            ]
            if all(r[key] >= args.target_recall for r in rows) and rows[0]["single_ms_p99"] < args.p99_ms:
                chosen: dict[str, Any] = {"kind": kind, rows[0]["param"]: value}
                if kind == "ivf_pq":
                    chosen["refine_factor"] = refine
                return {
                    "chosen": chosen,
                    "rows": {str(n): r for n, r in zip(sizes, rows, strict=True)},
                    f"index_gb_at_{sizes[-1]}": round(memory_gb, 3),
                    "rejected": rejected,
                }
        rejected.append(
            f"{kind}: no swept value reaches {key} >= {args.target_recall} at every size with p99 < {args.p99_ms} ms"
        )
    return {"chosen": None, "rejected": rejected}


# ----------------------------------------------------------------------------- the markdown table
def render_table(record: dict[str, Any]) -> str:
    """The docs' table from a record: per size and kind, build, memory and the sweep (markdown)."""
    res = record["results"]
    k = res["k"]
    lines = [
        f"recall@{k} against exact search over {res['sizes'] and next(iter(res['sizes'].values()))['queries']} "
        f"queries; single-query latency with 1 FAISS thread, batched with {res['threads']['batched']} "
        f"(`{record['command']}`, {record['started_at'][:10]}" + (", **partial**" if res["partial"] else "") + ")",
        "",
        f"| items | index | build s | memory GB | param | recall@{k} | single p50 ms | single p99 ms | "
        f"batched ms/query | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, entry in res["sizes"].items():
        for kind, m in entry["kinds"].items():
            load = f"{m['load_before'][0]:.0f}-{m.get('load_after', m['load_after_build'])[0]:.0f}"
            if not m.get("built"):
                added = f"{m['items_added']:,} added in {m['build_s']:.0f} s"
                build = f"not built: {added}, all >= {m['projected_build_s']:,} s"
                memory = f"~{m['projected_index_bytes'] / 1e9:.1f} (est.)"
                lines.append(f"| {int(n):,} | {kind} | {build} | {memory} | | | | | | {load} |")
                continue
            for r in m["sweep"]:
                param = f"{r['param']} {r['value']}" + (f", refine {r['refine_factor']}" if r["refine_factor"] else "")
                batched = r[f"batch_ms_per_query_{res['threads']['batched']}_threads"]
                lines.append(
                    f"| {int(n):,} | {kind} | {m['build_s']:.0f} | {m['index_bytes'] / 1e9:.2f} | {param} | "
                    f"{r[f'recall@{k}']:.3f} | {r['single_ms_p50']:.2f} | {r['single_ms_p99']:.1f} | "
                    f"{batched:.2f} | {load} |"
                )
    return "\n".join(_validation_table(res) + lines + _memory_note(res)) + "\n"


def _validation_table(res: dict[str, Any]) -> list[str]:
    """The generator check: neighbour distances and IVF-Flat recall at equal shares scanned, per catalog."""
    if "validation" not in res:
        return []
    v = res["validation"]
    shares = v["scan_shares"]
    head = " | ".join(f"recall at 1/{round(1 / float(s))}" for s in shares)
    lines = [
        f"| catalog | items | NN distance / median norm (p10, p50, p90) | own group in top-{res['k']} | {head} |",
        "|---|---|---|---|" + "---|" * len(shares),
    ]
    for name, row in v.items():
        if not isinstance(row, dict):
            continue
        recall = next(row[key] for key in row if key.startswith("ivf_recall"))
        nn = row["nn_ratio"]
        own = row.get(f"own_group_share_of_top{res['k']}")
        cells = " | ".join(f"{recall[s]:.3f}" for s in shares)
        lines.append(
            f"| {name} | {row['n_items']:,} | {nn['p10']:.2f}, {nn['p50']:.2f}, {nn['p90']:.2f} | "
            f"{'' if own is None else f'{own:.2f}'} | {cells} |"
        )
    return [*lines, ""]


def _memory_note(res: dict[str, Any]) -> list[str]:
    """The service's memory at the largest size with the chosen index: index + the model's item table + baseline."""
    chosen = res.get("choice", {}).get("chosen")
    if not chosen or len(res["sizes"]) < 2:  # a one-size record's own choice is not the defaults' choice
        return []
    n = max(int(s) for s in res["sizes"])
    index_gb = res["sizes"][str(n)]["kinds"][chosen["kind"]]["index_bytes"] / 1e9
    table_gb = (n + 1) * res["real_table"]["dim"] * 4 / 1e9  # the model's item embedding table, float32
    startup = json.loads((REPO / "bench/results/serve_startup.json").read_text())["results"]["startup"]
    base_gb = startup["rss_mb_median"] / 1e3
    total = index_gb + table_gb + base_gb
    return [
        "",
        f"Chosen: `{chosen}`. Service memory at {n:,} items with it: index {index_gb:.2f} GB + the model's item "
        f"table {table_gb:.2f} GB + the service's own {base_gb:.2f} GB (`serve_startup.json`, ML-1M model) "
        f"= {total:.1f} GB of a 24 GB machine.",
    ]
