"""What SmolLM2's item knowledge adds to an ID model (issue 44): SASRec's ML-1M half recipe over the item
tower (ID view + frozen text view) against SASRec and the controls, 3 seeds, every run to its schedule's end
with the best validation checkpoint kept (configs/train/fast.yaml).

python bench/llm_views.py --variants sasrec id+smollm2 id+random --seeds 0 1 2           # leave-one-out
python bench/llm_views.py --protocol cold --variants id+smollm2 smollm2_only --seeds 0 1 2
python bench/llm_views.py --speed      # parameters and users/s of one trained model per variant, alone
python bench/llm_views.py --probe      # each two-view model's test NDCG@10 with one view zeroed
python bench/llm_views.py --neighbours # the vectors alone, untrained: text neighbours per pooling / reduction
python bench/llm_views.py --cold-probe # cold items with borrowed ID rows switched on / off at test time
python bench/llm_views.py --summary    # bench/results/llm_rec.json (+ the table in docs/item_tower.md)

Each run is `python -m pipelines.train --config <variant's experiment> train.seed=S` (cold: plus
`split.cold_item_share=0.1 split.cold_seed=S`, the cold-item protocol of bench/cold_start.py, and
`train.negatives=trained`: a held-out item is no negative of the training loss), its
record and per-user results under bench/results/experiments/llm_views/<variant>_<protocol>_seed<S>.*.
Subsets: `all` (the record's test metrics), `long_tail` (leave-one-out users whose test target is in
the less popular half of the catalog by training count, from the per-user ranks) and `cold` (the
cold-item protocol's test users: every target is an item no training sequence holds). Row `llm_rec` is
today's LLM-backed model (SmolLM2 blocks over MiniLM + ID items, bench/llm_rec.py's `lora_l2_rw`
records; no per-user results, so `all` only); SASRec's cold row and MiniLM text neighbours come from
bench/cold_start.py's records.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from copy import deepcopy
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cold_start import TextNeighbours  # noqa: E402
from llm_rec import count_parameters, trained_model, users_per_second  # noqa: E402
from results_table import format_mean_sd  # noqa: E402

from pipelines import train  # noqa: E402
from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.data.split import SplitConfig  # noqa: E402
from recsys.eval.evaluate import evaluate  # noqa: E402
from recsys.eval.per_user import RANK, beside_record  # noqa: E402
from recsys.models.id_text_sasrec import IDTextSASRec  # noqa: E402
from recsys.nn.item_vectors import cached_item_vectors, item_sentence, random_like_table, reduce_table  # noqa: E402
from recsys.nn.pretrained import MINILM, SMOLLM2  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402

OUT = ROOT / "bench/results/experiments/llm_views"
SUMMARY = ROOT / "bench/results/llm_rec.json"
DOC = ROOT / "docs/item_tower.md"  # its tables between these markers are generated from the summary
DOC_START, DOC_END = "<!-- llm_views:start -->", "<!-- llm_views:end -->"
COLD_START = ROOT / "bench/results/experiments/cold_start"
BASELINES = ROOT / "bench/results/experiments/baselines"
LLM_REC = ROOT / "bench/results/experiments/llm_rec"
EXPERIMENTS = {
    "sasrec": "sasrec_ml-1m",
    "id+smollm2": "id_text_sasrec_smollm2_ml-1m",
    "id+smollm2_dual": "id_text_sasrec_smollm2_dual_ml-1m",
    "id+smollm2_linear": "id_text_sasrec_smollm2_linear_ml-1m",
    "id+smollm2_iddrop": "id_text_sasrec_smollm2_iddrop_ml-1m",
    "id+smollm2_iddrop8": "id_text_sasrec_smollm2_iddrop8_ml-1m",
    "id+smollm2_borrow": "id_text_sasrec_smollm2_borrow_ml-1m",
    "id+minilm": "id_text_sasrec_minilm_ml-1m",
    "id+random": "id_text_sasrec_random_ml-1m",
    "smollm2_only": "id_text_sasrec_smollm2_only_ml-1m",
}
METRICS = ("test/ndcg@10", "test/hr@10")
K = 10


def record_path(variant: str, protocol: str, seed: int) -> Path:
    if variant == "sasrec" and protocol == "loo":  # the shared baseline records (bench/baselines.py)
        return BASELINES / f"sasrec_seed{seed}.json"
    return OUT / f"{variant}_{protocol}_seed{seed}.json"


def record_paths(variant: str, protocol: str) -> list[Path]:
    """Every recorded seed of a variant under a protocol, by seed."""
    pattern = record_path(variant, protocol, 0).name.replace("seed0", "seed*")
    return sorted(record_path(variant, protocol, 0).parent.glob(pattern))


def run(variant: str, protocol: str, seed: int, extra: list[str]) -> int:
    """Train one seed of a variant through `pipelines.train`; record and per-user results under OUT."""
    overrides = [f"train.seed={seed}", "train.progress_bar=false", *extra]
    if protocol == "cold":  # held-out items do not exist while the model trains: they are no negatives
        overrides += ["split.cold_item_share=0.1", f"split.cold_seed={seed}", "train.negatives=trained"]
    config = f"configs/experiment/{EXPERIMENTS[variant]}.yaml"
    return train.main(["--config", config, "--results-json", str(record_path(variant, protocol, seed)), *overrides])


def ranks_metrics(ranks: list[int]) -> dict[str, float]:
    """NDCG@10 and HR@10 of 1-based full-catalog ranks (one relevant item per user)."""
    ndcg = [1.0 / math.log2(r + 1) if r <= K else 0.0 for r in ranks]
    return {"test/ndcg@10": sum(ndcg) / len(ranks), "test/hr@10": sum(r <= K for r in ranks) / len(ranks)}


def long_tail_items(directory: Path) -> set[int]:
    """The less popular half of the catalog by training count (ties broken by item id: exact halves)."""
    items = pl.read_parquet(directory / "items.parquet").sort(["train_count", "item_idx"], descending=[True, False])
    return set(items["item_idx"][items.height // 2 :].to_list())


def seed_subsets(path: Path, protocol: str) -> dict[str, dict[str, float]]:
    """subset -> test metrics of one run: `all` and `long_tail` (leave-one-out) or `cold`."""
    record = json.loads(path.read_text())
    if protocol == "cold":
        return {"cold": {m: record["metrics"][m] for m in METRICS}}
    tables = beside_record(path)
    if not tables.is_dir():  # a record written without its per-user results: no subsets
        return {"all": {m: record["metrics"][m] for m in METRICS}}
    test = pl.read_parquet(tables / "test.parquet")
    every = ranks_metrics(test[RANK].to_list())
    if not math.isclose(every["test/ndcg@10"], record["metrics"]["test/ndcg@10"], rel_tol=1e-5):
        raise ValueError(f"{path}: per-user NDCG@10 {every['test/ndcg@10']} != the record's")
    tail = test.filter(pl.col("target").is_in(list(long_tail_items(tables))))
    return {"all": every, "long_tail": ranks_metrics(tail[RANK].to_list()) | {"users": tail.height}}


def summary_row(
    variant: str, subset: str, seeds: list[int], metrics: list[dict[str, float]], records: list[str], **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "subset": subset, "seeds": seeds}
    row |= {m: summarize([x[m] for x in metrics]) for m in METRICS}
    return row | extra | {"records": records}


def own_rows() -> list[dict[str, Any]]:
    """Rows of this bench's runs: one per (variant, subset) over the seeds recorded."""
    rows = []
    for variant in EXPERIMENTS:
        for protocol in ("loo", "cold"):
            paths = record_paths(variant, protocol)
            if not paths:
                continue
            records = [json.loads(p.read_text()) for p in paths]
            by_subset: dict[str, list[dict[str, float]]] = {}
            seeds: dict[str, list[int]] = {}
            for path, record in zip(paths, records, strict=True):
                for subset, values in seed_subsets(path, protocol).items():
                    by_subset.setdefault(subset, []).append(values)
                    seeds.setdefault(subset, []).append(record["config"]["train"]["seed"])
            cost = {
                "fit_s": summarize([r["fit_s"] for r in records]),
                "epoch_s": summarize([r["fit_s"] / max(r["epochs"], 1) for r in records]),
            }
            names = [str(p.relative_to(ROOT)) for p in paths]
            for subset, per_seed in by_subset.items():
                extra = {"users": per_seed[0]["users"]} if "users" in per_seed[0] else {}
                rows.append(summary_row(variant, subset, seeds[subset], per_seed, names, **cost, **extra))
    return rows


def external_rows() -> list[dict[str, Any]]:
    """Rows from other benches' records: llm_rec (all), SASRec and MiniLM text neighbours (cold)."""
    sources = [
        ("llm_rec", "all", sorted(LLM_REC.glob("lora_l2_rw_seed*.json"))),
        ("sasrec", "cold", sorted(COLD_START.glob("sasrec_cold_seed*.json"))),
        ("text_knn_minilm", "cold", sorted(COLD_START.glob("text_knn_cold_seed*.json"))),
    ]
    rows = []
    for variant, subset, paths in sources:
        records = [json.loads(p.read_text()) for p in paths]
        if records:
            seeds = [int(p.stem.rsplit("seed", 1)[1]) for p in paths]
            names = [str(p.relative_to(ROOT)) for p in paths]
            rows.append(summary_row(variant, subset, seeds, [r["metrics"] for r in records], names))
    return rows


def mean_of(rows: list[dict[str, Any]], variant: str, subset: str) -> float | None:
    for row in rows:
        if row["variant"] == variant and row["subset"] == subset:
            return float(row["test/ndcg@10"]["mean"])
    return None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against the rows' mean test NDCG@10 (None where a row is missing)."""
    checks = [
        ("id+smollm2 >= sasrec (all)", "id+smollm2", "all", "sasrec", "all", 1.0),
        ("id+smollm2 >= 1.10 x sasrec (long_tail)", "id+smollm2", "long_tail", "sasrec", "long_tail", 1.10),
        ("id+smollm2 >= 1.03 x id+random (all)", "id+smollm2", "all", "id+random", "all", 1.03),
        # cold: the ID + SmolLM2 model trained with half of its items text only per step (id_dropout 0.5);
        # the leave-one-out recipe without it ranks no cold item (docs/item_tower.md)
        ("id+smollm2_iddrop > text neighbours (cold)", "id+smollm2_iddrop", "cold", "text_knn_minilm", "cold", 1.0),
    ]
    out = []
    for name, variant, subset, ref, ref_subset, factor in checks:
        value, base = mean_of(rows, variant, subset), mean_of(rows, ref, ref_subset)
        ratio = None if value is None or base is None else value / base
        out.append(
            {
                "target": name,
                "value": value,
                "reference": base,
                "ratio": ratio,
                "met": None if ratio is None else ratio >= factor,
            }
        )
    return out


def speed(tracking_uri: str) -> dict[str, Any]:
    """Parameters and inference users/s of each variant's seed-0 leave-one-out model (measure alone)."""
    out = {}
    for variant in EXPERIMENTS:
        path = record_path(variant, "loo", 0)
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        with tempfile.TemporaryDirectory() as tmp:
            model = trained_model(record, tracking_uri, Path(tmp))
        params, trainable = count_parameters(model)
        out[variant] = {
            "parameters": params,
            "trainable_parameters": trainable,
            "users_per_s": round(users_per_second(model, model.max_len), 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }
    return out


def zeroed(model: IDTextSASRec, view: str) -> IDTextSASRec:
    """A copy of `model` with its `text` or `id` view zeroed for every item (`none`: as trained)."""
    copy = deepcopy(model)
    with torch.no_grad():
        if view == "text":
            copy.tower.text_table.zero_()
        elif view == "id" and copy.tower.id_emb is not None:
            copy.tower.id_emb.weight.zero_()
    return copy


def probe(tracking_uri: str) -> dict[str, Any]:
    """What each view contributes: test NDCG@10 (leave-one-out, every user) of every two-view model
    with the text view or the ID view zeroed at test time, per seed."""
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    out: dict[str, Any] = {}
    for variant in ("id+smollm2", "id+smollm2_dual", "id+minilm", "id+random"):
        per_view: dict[str, list[float]] = {"none": [], "text": [], "id": []}
        for path in record_paths(variant, "loo"):
            record = json.loads(path.read_text())
            with tempfile.TemporaryDirectory() as tmp:
                model = trained_model(record, tracking_uri, Path(tmp))
            assert isinstance(model, IDTextSASRec)
            dm = SequenceDataModule(data_dir, max_len=model.max_len, batch_size=256, eval_batch_size=256, seed=0)
            dm.setup()
            for view, values in per_view.items():
                result = evaluate(zeroed(model, view), dm.test_dataloader(), split="test")
                values.append(result.metrics["test/ndcg@10"])
            if not math.isclose(per_view["none"][-1], record["metrics"]["test/ndcg@10"], rel_tol=1e-4):
                raise ValueError(f"{path}: re-evaluated {per_view['none'][-1]} != the record's")
        if per_view["none"]:
            out[variant] = {
                f"{view} zeroed" if view != "none" else "as trained": summarize(values)
                for view, values in per_view.items()
            }
    return out


def borrowing(model: IDTextSASRec, k: int) -> IDTextSASRec:
    """A copy of `model` whose items without an ID row borrow the mean ID row of their `k` nearest text
    neighbours (k = 0: such an item is its text part only), whatever it was trained with."""
    copy = deepcopy(model)
    tower = copy.tower
    tower.cfg = replace(tower.cfg, borrow_ids=k)
    tower.id_neighbours = torch.zeros(len(tower.has_id), k, dtype=torch.long)
    tower.find_id_neighbours(torch.arange(1, len(tower.has_id)))
    return copy


COLD_PROBES = {"id+smollm2_iddrop": {"borrowing 10 at test": 10}, "id+smollm2_borrow": {"no borrowing at test": 0}}


def cold_probe(tracking_uri: str) -> dict[str, Any]:
    """What borrowing ID rows does for cold items: test NDCG@10 on the cold-item protocol of the cold
    models as trained and with borrowing switched on (a model trained without it) or off, per seed."""
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    out: dict[str, Any] = {}
    for variant, switches in COLD_PROBES.items():
        values: dict[str, list[float]] = {"as trained": [], **{name: [] for name in switches}}
        for path in record_paths(variant, "cold"):
            record = json.loads(path.read_text())
            with tempfile.TemporaryDirectory() as tmp:
                model = trained_model(record, tracking_uri, Path(tmp))
            assert isinstance(model, IDTextSASRec)
            seed = record["config"]["split"]["cold_seed"]
            split = SplitConfig(cold_item_share=0.1, cold_seed=seed)
            dm = SequenceDataModule(
                data_dir, max_len=model.max_len, batch_size=256, eval_batch_size=256, seed=0, split=split
            )
            dm.setup()
            for name, k in [("as trained", None), *switches.items()]:
                probed = model if k is None else borrowing(model, k)
                result = evaluate(probed, dm.test_dataloader(), split="test", split_protocol=dm.protocol)
                values[name].append(result.metrics["test/ndcg@10"])
            if not math.isclose(
                values["as trained"][-1], record["metrics"]["test/ndcg@10"], rel_tol=1e-4, abs_tol=1e-9
            ):
                raise ValueError(f"{path}: re-evaluated {values['as trained'][-1]} != the record's")
        if values["as trained"]:
            out[variant] = {name: summarize(v) for name, v in values.items()}
    return out


# the item vectors compared untrained: (encoder, pooling); "random" = SmolLM2 mean's widths and norms
VECTOR_KINDS = {
    "smollm2 mean": (SMOLLM2, "mean"),
    "smollm2 last token": (SMOLLM2, "last"),
    "minilm mean": (MINILM, "mean"),
    "random (smollm2 mean's norms)": (SMOLLM2, "mean"),
}


def neighbours() -> dict[str, Any]:
    """What the item vectors know before any training: test NDCG@10 of text neighbours (the mean of the
    history's last 8 item vectors, cosine against every item; bench/cold_start.py's `text_knn`) for each
    pooling and reduction, leave-one-out and the cold-item protocol (cold seeds 0-2)."""
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    features = load_item_features(data_dir)
    texts = [item_sentence(features, i) for i in range(1, features.n_items + 1)]
    splits = {"loo": [SplitConfig()], "cold": [SplitConfig(cold_item_share=0.1, cold_seed=s) for s in (0, 1, 2)]}
    loaders = {}
    for protocol, configs in splits.items():
        for split in configs:
            dm = SequenceDataModule(data_dir, max_len=50, batch_size=256, eval_batch_size=256, seed=0, split=split)
            dm.setup()
            loaders[(protocol, split.cold_seed)] = (dm.test_dataloader(), dm.protocol)
    out: dict[str, Any] = {}
    for kind, (encoder, pooling) in VECTOR_KINDS.items():
        vectors, _ = cached_item_vectors(texts, encoder, "data/cache", pooling=pooling)
        table = torch.cat([torch.zeros(1, vectors.shape[1]), vectors])
        if kind.startswith("random"):
            table = random_like_table(table, torch.Generator().manual_seed(0))
        for reduction in ("raw", "pca 64 whitened"):
            reduced = table if reduction == "raw" else reduce_table(table, 64, whiten=True)
            model = TextNeighbours(F.normalize(reduced, dim=-1), max_len=8)
            row: dict[str, Any] = {}
            for protocol in splits:
                values = [
                    evaluate(model, loader, split="test", split_protocol=split_protocol).metrics["test/ndcg@10"]
                    for (p, _), (loader, split_protocol) in loaders.items()
                    if p == protocol
                ]
                row[protocol] = summarize(values)
            out[f"{kind}, {reduction}"] = row
    return out


def write_summary(
    speeds: dict[str, Any] | None,
    probes: dict[str, Any] | None = None,
    near: dict[str, Any] | None = None,
    cold_probes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rows = own_rows() + external_rows()
    previous = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    record = base_record("llm_rec", " ".join(["python", *sys.argv]), now_iso(), 0.0) | {
        "dataset": "ml-1m-half",
        "protocol": "leave-one-out (all, long_tail) and the cold-item protocol (cold); full ranking, history masked",
        "long_tail": "users whose test target is in the less popular half of the catalog by training count",
        "rows": rows,
        "targets": targets(rows),
        "speed": speeds if speeds is not None else previous.get("speed", {}),
        "probe": probes if probes is not None else previous.get("probe", {}),
        "neighbours": near if near is not None else previous.get("neighbours", {}),
        "cold_probe": cold_probes if cold_probes is not None else previous.get("cold_probe", {}),
    }
    write_record(SUMMARY, record)
    text = DOC.read_text()
    if DOC_START in text and DOC_END in text:
        head, rest = text.split(DOC_START, 1)
        DOC.write_text(head + DOC_START + "\n" + markdown(record) + DOC_END + rest.split(DOC_END, 1)[1])
    return record


def markdown(summary: dict[str, Any]) -> str:
    """The summary's rows, targets and probe as the tables of docs/item_tower.md."""
    lines = [
        "| variant | subset | seeds | test NDCG@10 | test HR@10 | median NDCG@10 | fit s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        ndcg, hr = row["test/ndcg@10"], row["test/hr@10"]
        fit = f"{row['fit_s']['mean']:.0f}" if "fit_s" in row else ""
        seeds = ", ".join(str(s) for s in row["seeds"])
        means = f"{format_mean_sd(ndcg['values'])} | {format_mean_sd(hr['values'])}"
        lines.append(f"| {row['variant']} | {row['subset']} | {seeds} | {means} | {ndcg['median']:.4f} | {fit} |")
    lines += ["", "| target | value | reference | ratio | met |", "|---|---|---|---|---|"]
    for t in summary["targets"]:
        cells = [f"{t[k]:.4f}" if isinstance(t[k], float) else "n/a" for k in ("value", "reference", "ratio")]
        lines.append(f"| {t['target']} | {' | '.join(cells)} | {t['met'] if t['met'] is not None else 'n/a'} |")
    if summary.get("neighbours"):
        lines += [
            "",
            "| item vectors, untrained (text neighbours) | loo test NDCG@10 | cold test NDCG@10 |",
            "|---|---|---|",
        ]
        for kind, row in summary["neighbours"].items():
            lines.append(
                f"| {kind} | {format_mean_sd(row['loo']['values'])} | {format_mean_sd(row['cold']['values'])} |"
            )
    if summary.get("probe"):
        lines += ["", "| two-view model | as trained | text view zeroed | ID view zeroed |", "|---|---|---|---|"]
        for variant, views in summary["probe"].items():
            cells = [format_mean_sd(views[k]["values"]) for k in ("as trained", "text zeroed", "id zeroed")]
            lines.append(f"| {variant} | {' | '.join(cells)} |")
    if summary.get("cold_probe"):
        lines += ["", "| cold-item protocol, at test time | test NDCG@10 |", "|---|---|"]
        for variant, switches in summary["cold_probe"].items():
            for name, value in switches.items():
                lines.append(f"| {variant}, {name} | {format_mean_sd(value['values'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["sasrec", "id+smollm2", "id+random"], choices=list(EXPERIMENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--protocol", choices=["loo", "cold"], default="loo")
    p.add_argument("--summary", action="store_true", help="only write the summary from the records")
    p.add_argument("--speed", action="store_true", help="measure parameters and users/s, then the summary")
    p.add_argument("--probe", action="store_true", help="zero each view at test time, then the summary")
    p.add_argument("--neighbours", action="store_true", help="the vectors alone as text neighbours, then the summary")
    p.add_argument("--cold-probe", action="store_true", help="borrowed ID rows on / off at test, then the summary")
    p.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. train.num_threads=1)")
    args = p.parse_args()
    os.chdir(ROOT)
    if args.speed:
        torch.set_num_threads(2)
        write_summary(speed(args.tracking_uri))
        return
    if args.neighbours:
        write_summary(None, None, neighbours())
        return
    if args.probe:
        write_summary(None, probe(args.tracking_uri))
        return
    if args.cold_probe:
        write_summary(None, cold_probes=cold_probe(args.tracking_uri))
        return
    if not args.summary:
        for seed in args.seeds:  # seed-major: an interrupted queue leaves whole seeds
            for variant in args.variants:
                if run(variant, args.protocol, seed, args.overrides) != 0:
                    raise SystemExit(f"{variant} {args.protocol} seed {seed} failed")
    write_summary(None)


if __name__ == "__main__":
    main()
