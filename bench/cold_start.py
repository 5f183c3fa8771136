"""Cold-start comparison on the ML-1M half: Recformer, ID-only SASRec, popularity and a text-only
nearest-neighbour baseline, on the same cold-start split and evaluator, several seeds.

A seeded 10% of the items never trains (removed from every training sequence); validation and test
rank the whole catalog for the users whose target is one of them, history masked. Seed s draws the
cold items (`split.cold_seed`) and seeds the training (`train.seed`). Each (model, seed) writes a
results record to bench/results/experiments/cold_start/; trained models are also MLflow runs.

python bench/cold_start.py --seeds 0 1 2 --models pop text_knn sasrec recformer
python bench/cold_start.py --split leave_one_out --models sasrec recformer   # the standard protocol
python bench/cold_start.py --models recformer --set model.params.pretrained=false  # the random-init ablation
python bench/cold_start.py --summary     # every record aggregated: bench/results/cold_start.{json,md}
python bench/cold_start.py --models recformer_id_user_prior --reuse-fits  # a variant that trains as another
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.item_features import ItemFeatures, load_item_features  # noqa: E402
from recsys.data.processed import load_processed  # noqa: E402
from recsys.data.schema import ITEMS  # noqa: E402
from recsys.data.split import SplitConfig, split_sequences  # noqa: E402
from recsys.eval.evaluate import evaluate  # noqa: E402
from recsys.eval.part_weight import choose_part_weights  # noqa: E402
from recsys.model_io import load_model  # noqa: E402
from recsys.models.base import SequentialRecommender  # noqa: E402
from recsys.models.recformer import Recformer, backbone_path  # noqa: E402
from recsys.objectives import build_objective  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, summarize, write_record  # noqa: E402
from recsys.train.experiment import ExperimentConfig, load_experiment  # noqa: E402
from recsys.train.fit import datamodule_for, ensure_processed, load_run_data  # noqa: E402
from recsys.train.run import train_experiment  # noqa: E402

EXPERIMENTS = {
    "sasrec": "sasrec_ml-1m_cold",
    "recformer": "recformer_ml-1m_cold",
    "recformer_converge": "recformer_converge_ml-1m_cold",  # issue 45: the converge recipe, text only
    "recformer_id": "recformer_id_ml-1m_cold",  # issue 45: text + ID on the item tower
    "recformer_id_user": "recformer_id_user_ml-1m_cold",  # issue 45: text + ID, IDs on the user side too
    "recformer_id_user_sasrec": "recformer_id_user_sasrec_ml-1m_cold",  # the same, ID warm-up as SASRec trains
    "recformer_id_user_bias": "recformer_id_user_bias_ml-1m_cold",  # + a learned item bias, the text weight chosen
    "recformer_id_user_free": "recformer_id_user_free_ml-1m_cold",  # + ID rows of free norm beside the text table
    "recformer_id_user_prior": "recformer_id_user_prior_ml-1m_cold",  # recformer_id_user_bias + a popularity prior
    "recformer_id_user_borrow": "recformer_id_user_borrow_ml-1m_cold",  # + borrowed ID rows for items without one
    "recformer_id_user_compact": "recformer_id_user_compact_ml-1m_cold",  # + SASRec-sized ID rows beside the text
    "recformer_long": "recformer_long_ml-1m_cold",  # issue 45: 50-item histories, linear attention
}
OUT = ROOT / "bench/results/experiments/cold_start"
# variants that train exactly as another (their extra parts only score: a prior that weighs 0 in training, borrowed
# ID rows, weights chosen on validation after the fit): with --reuse-fits the other's saved model of the same
# protocol and seed is given the parts and scored, instead of training it again. Their configs must differ in
# nothing else (`same_fit_config`)
PRIOR = ("item_prior", "prior_weight", "prior_weights")
SAME_FIT = {
    "recformer_id_user_prior": ("recformer_id_user_bias", PRIOR),
    "recformer_id_user_borrow": ("recformer_id_user_bias", (*PRIOR, "borrow_ids", "text_weights")),
}
# the shared 3-seed SASRec baseline (bench/baselines.py, leave-one-out): the summary's `sasrec` row on `loo`;
# this script's own leave-one-out SASRec record (the early-stopping recipe, 110 epochs) is `sasrec_converged`
BASELINES = ROOT / "bench/results/experiments/baselines"
RENAMED = {("loo", "sasrec"): "sasrec_converged"}
FIELDS = ("title", "year", "genres")


class Popularity(SequentialRecommender):
    """Every user gets the items ranked by their count in the training sequences."""

    def __init__(self, counts: torch.Tensor) -> None:
        super().__init__()
        self.max_len = 1
        scores = torch.log1p(counts.float())
        scores[0] = 0.0
        self.register_buffer("table", scores[:, None])  # [N + 1, 1]

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        del mask
        return torch.ones(len(items), 1, device=items.device)

    def item_embeddings(self) -> torch.Tensor:
        return self.table  # type: ignore[no-any-return]


class TextNeighbours(SequentialRecommender):
    """The mean sentence vector (all-MiniLM-L6-v2, mean-pooled) of the history's last `max_len` items,
    scored by cosine against every item's text vector: no training, no ids."""

    def __init__(self, item_vectors: torch.Tensor, max_len: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", item_vectors)  # [N + 1, D] unit rows, row 0 zeros

    def sequence_representation(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        del mask  # padding is 0 in `items`
        recent = items[:, -self.max_len :]
        vectors = self.table[recent] * (recent != 0)[..., None]  # [B, L, D]
        return F.normalize(vectors.sum(1), dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        return self.table  # type: ignore[no-any-return]


@torch.no_grad()
def sentence_vectors(features: ItemFeatures, batch: int = 256) -> torch.Tensor:
    """Unit MiniLM sentence vectors [N + 1, D] of every item's key-value text (row 0 = zeros)."""
    from transformers import AutoModel, AutoTokenizer

    path = backbone_path("all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    texts = [features.render(i, fields=FIELDS) for i in range(1, features.n_items + 1)]
    out = [torch.zeros(1, model.config.hidden_size)]
    for start in range(0, len(texts), batch):
        enc = tokenizer(texts[start : start + batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
        states = model(**enc).last_hidden_state  # [b, T, D]
        weights = enc["attention_mask"][..., None].float()
        out.append(F.normalize((states * weights).sum(1) / weights.sum(1), dim=-1))
    return torch.cat(out)


def split_config(kind: str, seed: int) -> SplitConfig:
    if kind == "cold":
        return SplitConfig(cold_item_share=0.1, cold_seed=seed)
    return SplitConfig()


def score_baseline(name: str, data_dir: Path, split: SplitConfig, seed: int, command: str) -> dict[str, float]:
    started, t0 = now_iso(), time.perf_counter()
    dm = SequenceDataModule(data_dir, max_len=50, batch_size=256, eval_batch_size=256, seed=seed, split=split)
    dm.setup()
    features = load_item_features(data_dir)
    if name == "pop":
        train = split_sequences(load_processed(data_dir).sequences, split, dm.n_items).train
        counts = torch.bincount(torch.tensor(train[ITEMS].explode().drop_nulls().to_list()), minlength=dm.n_items + 1)
        model: SequentialRecommender = Popularity(counts)
    else:
        model = TextNeighbours(sentence_vectors(features), max_len=8)
    metrics = {}
    protocol = {}
    for stage, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        result = evaluate(model, loader, split=stage, split_protocol=dm.protocol)
        metrics |= result.metrics
        protocol = result.protocol
    record = base_record(f"{name}_ml-1m_{split_tag(split)}", command, started, time.perf_counter() - t0) | {
        "dataset": "ml-1m",
        "model": name,
        "attention": None,
        "protocol": protocol,
        "seed": seed,
        "metrics": metrics,
    }
    write_record(OUT / f"{name}_{split_tag(split)}_seed{seed}.json", record)
    return metrics


def split_tag(split: SplitConfig) -> str:
    return "cold" if split.cold_item_share > 0 else "loo"


def experiment(name: str, split_kind: str, seed: int, extra: list[str], threads: int) -> ExperimentConfig:
    overrides = [f"train.seed={seed}", f"train.num_threads={threads}", "train.progress_bar=false", *extra]
    # the experiments are the cold-start configs: the standard protocol turns their cold share off
    if split_kind == "cold":
        overrides += ["split.cold_item_share=0.1", f"split.cold_seed={seed}"]
    else:
        overrides += ["split.cold_item_share=0.0"]
    return load_experiment(ROOT / f"configs/experiment/{EXPERIMENTS[name]}.yaml", overrides)


def record_path(name: str, split_kind: str, seed: int, extra: list[str]) -> Path:
    tag = "cold" if split_kind == "cold" else "loo"
    suffix = "" if not extra else "_" + "_".join(o.split("=")[0].split(".")[-1] + o.split("=")[1] for o in extra)
    return OUT / f"{name}{suffix}_{tag}_seed{seed}.json"


def bench_command(name: str, split_kind: str, seed: int, extra: list[str], threads: int, *flags: str) -> str:
    sets = [f"--set {o}" for o in extra]
    args = ["--models", name, "--split", split_kind, "--seeds", str(seed), "--threads", str(threads), *sets, *flags]
    return " ".join(["python bench/cold_start.py", *args])


def train_model(
    name: str, split_kind: str, seed: int, extra: list[str], tracking_uri: str, threads: int
) -> dict[str, float]:
    cfg = experiment(name, split_kind, seed, extra, threads)
    command = bench_command(name, split_kind, seed, extra, threads)
    outcome = train_experiment(cfg, tracking_uri=tracking_uri, command=command)
    assert outcome is not None
    write_record(record_path(name, split_kind, seed, extra), outcome.record)
    return outcome.metrics


def same_fit_config(cfg: ExperimentConfig, base: ExperimentConfig, parts: tuple[str, ...]) -> None:
    """Raise unless the two experiments differ only in their names and the model parameters `parts`."""

    def rest(c: ExperimentConfig) -> dict[str, Any]:
        out = dataclasses.asdict(c) | {"name": None}
        out["model"]["params"] = {k: v for k, v in out["model"]["params"].items() if k not in parts}
        return out

    mine, theirs = rest(cfg), rest(base)
    if mine != theirs:
        keys = sorted(k for k in mine if mine[k] != theirs[k])
        raise ValueError(f"{cfg.name} does not train as {base.name}: they differ in {keys} beyond {list(parts)}")


def add_scoring_parts(model: Recformer, params: dict[str, Any], counts: torch.Tensor) -> None:
    """Give `model` the scoring-only parts that the experiment's model `params` name and it lacks: the popularity
    prior (from the training `counts`), borrowed ID rows (`borrow_ids`) and the text weights to choose among."""
    if params.get("item_prior") and model.item_prior is None:
        model.add_item_prior(counts, tuple(params.get("prior_weights", ())))
    if params.get("borrow_ids", 0) != model.cfg.borrow_ids:
        model.add_id_borrowing(int(params["borrow_ids"]))
    if "text_weights" in params:
        model.cfg = dataclasses.replace(model.cfg, text_weights=tuple(params["text_weights"]))


def reuse_fit(
    name: str, split_kind: str, seed: int, extra: list[str], tracking_uri: str, threads: int
) -> dict[str, Any]:
    """Score `name` (a SAME_FIT variant) from its base variant's saved model of this protocol and seed: first the
    saved model as it is, which must give the base record's validation NDCG@k; then with the parts added
    (`add_scoring_parts`, the prior's counts from the training sequences of the same split), every part's weight
    chosen in order on every validation user, then full-ranking val and test by the project's evaluator. The
    record is the base's (its fit, its MLflow run) with these metrics and `fit_from`."""
    started, t0 = now_iso(), time.perf_counter()
    base_name, parts = SAME_FIT[name]
    cfg = experiment(name, split_kind, seed, extra, threads)
    same_fit_config(cfg, experiment(base_name, split_kind, seed, extra, threads), parts)
    base_path = record_path(base_name, split_kind, seed, extra)
    if not base_path.exists():
        raise FileNotFoundError(f"{name} reuses {base_name}'s fit, but {base_path} is missing: train that first")
    base = json.loads(base_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(download_run_artifacts(tracking_uri, base["mlflow_run_id"], "model", Path(tmp)))
    if not isinstance(model, Recformer):
        raise TypeError(f"{name} adds scoring parts to a Recformer, not a {type(model).__name__}")
    model.eval()
    dm = datamodule_for(cfg, load_run_data(cfg.data, labelled=False), model, build_objective(model.objective))
    assert isinstance(dm, SequenceDataModule)
    dm.setup()
    k, seen, chunk = cfg.eval.monitor_k, cfg.eval.exclude_seen, cfg.eval.item_chunk
    val = list(dm.val_dataloader(all_users=True))
    saved = evaluate(model, val, split="val", ks=(k,), exclude_seen=seen, item_chunk=chunk).metrics[f"val/ndcg@{k}"]
    if abs(saved - base["metrics"][f"val/ndcg@{k}"]) > 1e-6:
        raise RuntimeError(f"{base_name}'s saved model gives val NDCG@{k} {saved}, its record {base_path} another")
    add_scoring_parts(model, cfg.model.params, dm.training_item_counts())
    metrics: dict[str, Any] = {}
    for part, (weight, ndcg) in choose_part_weights(model, val, k=k, exclude_seen=seen, item_chunk=chunk).items():
        metrics |= {f"{part}_weight": weight} | {f"val/ndcg@{k}_{part}_weight_{w:g}": v for w, v in ndcg.items()}
    protocol: dict[str, Any] = {}
    for stage, loader in (("val", val), ("test", dm.test_dataloader())):
        result = evaluate(
            model, loader, split=stage, ks=cfg.eval.ks, exclude_seen=seen, item_chunk=chunk, split_protocol=dm.protocol
        )
        metrics |= result.metrics
        protocol = result.protocol
    config = copy.deepcopy(base["config"])
    config["name"] = cfg.name
    weights = {key: list(getattr(model.cfg, key)) for key in ("text_weights", "prior_weights")}
    config["model"]["params"] |= dataclasses.asdict(model.cfg) | weights
    command = bench_command(name, split_kind, seed, extra, threads, "--reuse-fits")
    fit_from = {"variant": base_name, "record": str(base_path.relative_to(ROOT))} | {
        key: base[key] for key in ("mlflow_run_id", "started_at", "wall_s")
    }
    # the base's fit (fit_s, epochs, stopping) with this command's name, wall time, metrics and config; the
    # MLflow run is the base's model without the parts: it moves to `fit_from`
    record = base | base_record(cfg.name, command, started, time.perf_counter() - t0)
    record |= {"protocol": protocol, "metrics": metrics, "config": config, "mlflow_run_id": None, "fit_from": fit_from}
    write_record(record_path(name, split_kind, seed, extra), record)
    return metrics


def write_summary(out_json: Path, out_md: Path) -> None:
    """Aggregate every record under OUT by (protocol, model variant): test NDCG@10 / HR@10 as mean,
    sd and median over seeds, into a JSON and a generated markdown table."""
    started, t0 = now_iso(), time.perf_counter()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(OUT.glob("*.json")):
        stem, seed = path.stem.rsplit("_seed", 1)
        variant, protocol = stem.rsplit("_", 1)
        variant = RENAMED.get((protocol, variant), variant)
        record = json.loads(path.read_text())
        groups.setdefault((protocol, variant), []).append({"seed": int(seed), "record": record, "file": path})
    for path in sorted(BASELINES.glob("sasrec_seed*.json")):
        seed = path.stem.rsplit("_seed", 1)[1]
        groups.setdefault(("loo", "sasrec"), []).append(
            {"seed": int(seed), "record": json.loads(path.read_text()), "file": path}
        )
    rows = []
    for (protocol, variant), runs in sorted(groups.items()):
        row: dict[str, Any] = {"protocol": protocol, "variant": variant, "seeds": sorted(r["seed"] for r in runs)}
        for metric in ("test/ndcg@10", "test/hr@10"):
            row[metric] = summarize([float(r["record"]["metrics"][metric]) for r in runs])
        fits = [r["record"].get("fit_s") for r in runs if r["record"].get("fit_s") is not None]
        epochs = [r["record"].get("epochs") for r in runs if r["record"].get("epochs") is not None]
        row["fit_s_median"] = summarize(fits)["median"] if fits else None
        row["epochs"] = epochs or None
        ordered = sorted(runs, key=lambda r: r["seed"])
        row["n_users"] = [r["record"]["protocol"]["n_users"] for r in ordered]
        row["records"] = [str(r["file"].relative_to(ROOT)) for r in ordered]
        rows.append(row)
    record = base_record(
        "cold_start_summary", "python bench/cold_start.py --summary", started, time.perf_counter() - t0
    )
    write_record(out_json, record | {"rows": rows})
    lines = [
        "<!-- generated by `python bench/cold_start.py --summary`; do not edit -->",
        "| protocol | model (overrides) | seeds | test users | test NDCG@10 mean ± sd (median) "
        "| test HR@10 mean ± sd (median) | fit s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for metric in ("test/ndcg@10", "test/hr@10"):
            m = row[metric]
            sd = f" ± {m['sd']:.4f}" if m["sd"] is not None else ""
            cells.append(f"{m['mean']:.4f}{sd} ({m['median']:.4f})")
        fit = f"{row['fit_s_median']:.0f}" if row["fit_s_median"] is not None else "-"
        seeds, users = ",".join(map(str, row["seeds"])), ",".join(map(str, row["n_users"]))
        lines.append(f"| {row['protocol']} | {row['variant']} | {seeds} | {users} | {' | '.join(cells)} | {fit} |")
    out_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["pop", "text_knn", "sasrec", "recformer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split", choices=["cold", "leave_one_out"], default="cold")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for the trained models")
    parser.add_argument("--summary", action="store_true", help="only aggregate the records into a table")
    parser.add_argument(
        "--reuse-fits", action="store_true", help=f"score {sorted(SAME_FIT)} from the saved fits they share"
    )
    args = parser.parse_args()
    if args.summary:
        write_summary(ROOT / "bench/results/cold_start.json", ROOT / "bench/results/cold_start.md")
        return
    torch.set_num_threads(args.threads)
    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    command = "python " + " ".join(sys.argv)
    for seed in args.seeds:
        for name in args.models:
            torch.manual_seed(seed)
            if args.reuse_fits and name in SAME_FIT:
                metrics = reuse_fit(name, args.split, seed, args.overrides, args.tracking_uri, args.threads)
            elif name in EXPERIMENTS:
                metrics = train_model(name, args.split, seed, args.overrides, args.tracking_uri, args.threads)
            else:
                metrics = score_baseline(name, data_dir, split_config(args.split, seed), seed, command)
            print(f"{name} seed {seed}: test NDCG@10 {metrics['test/ndcg@10']:.4f} HR@10 {metrics['test/hr@10']:.4f}")


if __name__ == "__main__":
    main()
