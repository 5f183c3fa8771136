"""Generative LLM baseline next to the LLM-backed recommender, on the same SmolLM2-135M and test users.

The generative way (the LLM4Rec baselines Lite-LLM4Rec compares to): the history's last `--history`
titles go into a prompt (a numbered list, the next number open) to SmolLM2-135M-Instruct (all 30
layers, the converted GGUF), the next title is generated with beam search (`--beams` beams, each a
candidate), and every candidate is matched to the catalog: an exact (case-folded) title match, else the nearest title by
all-MiniLM-L6-v2 cosine. Seen items are skipped, as the evaluator masks the history; HR@10 and
NDCG@10 over the first 10 distinct matches. Ours: the trained LLM-backed model of a bench/llm_rec.py
record (one forward pass over the history, the catalog scored, history masked, top-10), on the same
users, batch 1. Latency per user is wall time per user at batch 1 on this machine, `--threads` threads
(the generative side: generation and decoding; the catalog matching afterwards is not counted).

python bench/llm_generative.py --users 100 --record bench/results/experiments/llm_rec/lora_l2_seed0.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys.data.datamodule import SequenceDataModule  # noqa: E402
from recsys.data.item_features import load_item_features  # noqa: E402
from recsys.model_io import load_model  # noqa: E402
from recsys.nn.pretrained import MINILM, SMOLLM2, TextEncoder, cached_text_vectors, model_path  # noqa: E402
from recsys.tracking.config import DEFAULT_TRACKING_URI  # noqa: E402
from recsys.tracking.mlflow import download_run_artifacts  # noqa: E402
from recsys.tracking.records import base_record, now_iso, write_record  # noqa: E402
from recsys.train.fit import ensure_processed  # noqa: E402

OUT = ROOT / "bench/results/experiments/llm_rec/generative.json"
CACHE = ROOT / "data/cache"


def title_of(features: Any, item: int) -> str:
    year = features.text["year"][item]
    return f"{features.text['title'][item]}" + (f" ({year})" if year else "")


def prompt_for(tokenizer: Any, titles: list[str]) -> torch.Tensor:
    """A completion prompt: the history as a numbered list, the next number open (the model writes a title)."""
    listing = "".join(f"{i + 1}. {t}\n" for i, t in enumerate(titles))
    text = f"Movies a user watched, in the order they watched them:\n{listing}{len(titles) + 1}."
    ids: torch.Tensor = tokenizer(text, return_tensors="pt")["input_ids"]
    return ids


def metrics_at_10(ranked: list[int], target: int) -> tuple[float, float]:
    """(HR@10, NDCG@10) of one user's ranked item list."""
    top = ranked[:10]
    if target not in top:
        return 0.0, 0.0
    return 1.0, 1.0 / math.log2(top.index(target) + 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--history", type=int, default=10, help="titles in the prompt (most recent)")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--record", required=True, help="a bench/llm_rec.py record: our trained model")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ours-only", action="store_true", help="measure only ours (same users), no generation")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, t0 = now_iso(), time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data_dir = ensure_processed(str(ROOT / "configs/data/ml-1m.yaml"))
    features = load_item_features(data_dir)
    record = json.loads(Path(args.record).read_text())
    ours = load_model(
        download_run_artifacts(args.tracking_uri, record["mlflow_run_id"], "model", ROOT / "bench/results/tmp/gen")
    )
    dm = SequenceDataModule(data_dir, max_len=ours.max_len, batch_size=1, eval_batch_size=1, seed=0)
    dm.setup()
    tests = [(b.items[0], b.seen[0], int(b.targets[0])) for b in dm.test_dataloader()]
    pick = np.random.default_rng(args.seed).choice(len(tests), size=min(args.users, len(tests)), replace=False)

    titles = [title_of(features, i) for i in range(1, features.n_items + 1)]
    by_title = {t.casefold(): i + 1 for i, t in enumerate(titles)}
    title_vectors, _ = cached_text_vectors(titles, MINILM, CACHE)  # [N, E] unit, rows = items 1..N
    minilm = TextEncoder(model_path(MINILM, CACHE))  # matches generated titles to the catalog
    path = model_path(SMOLLM2, CACHE)
    tokenizer, llm = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    if args.ours_only:
        del llm

    gen_hr, gen_ndcg, gen_s, ours_hr, ours_ndcg, ours_s, examples = [], [], [], [], [], [], []

    def write(done: int) -> dict[str, Any]:
        """The record so far (written after every user, so a stopped run keeps what it measured)."""

        def summary(hr: list[float], ndcg: list[float], secs: list[float]) -> dict[str, float]:
            if not secs:  # --ours-only: no generative side
                return {}
            return {
                "hr@10": round(float(np.mean(hr)), 4),
                "ndcg@10": round(float(np.mean(ndcg)), 4),
                "latency_ms_mean": round(1000 * float(np.mean(secs)), 1),
                "latency_ms_p50": round(1000 * float(np.percentile(secs, 50)), 1),
                "latency_ms_p99": round(1000 * float(np.percentile(secs, 99)), 1),
            }

        gen, mine = summary(gen_hr, gen_ndcg, gen_s), summary(ours_hr, ours_ndcg, ours_s)
        result = base_record(
            "llm_generative_ml-1m", "python " + " ".join(sys.argv), started, time.perf_counter() - t0
        ) | {
            "dataset": "ml-1m",
            "protocol": {
                "split": "leave_one_out (test)",
                "users": done,
                "users_planned": len(pick),
                "user_sample_seed": args.seed,
                "exclude_seen": True,
            },
            "generative": {
                "backbone": "SmolLM2-135M-Instruct, 30 layers",
                "beams": args.beams,
                "history_titles": args.history,
                "max_new_tokens": args.max_new_tokens,
                "matching": "exact title, else nearest MiniLM title",
            }
            | gen,
            "ours": {"record": args.record, "batch": 1} | mine,
            "speedup_mean_latency": round(gen["latency_ms_mean"] / mine["latency_ms_mean"], 1) if gen else None,
            "load_average": os.getloadavg(),
            "threads": args.threads,
            "examples": examples,
        }
        write_record(args.out, result)
        return result

    with torch.no_grad():
        table = ours.item_embeddings()
        for n, row in enumerate(pick):
            items, seen, target = tests[int(row)]
            seen_set = set(seen[seen != 0].tolist())
            if not args.ours_only:  # the generative side
                history = [int(i) for i in seen[seen != 0].tolist()][-args.history :]
                ids = prompt_for(tokenizer, [titles[i - 1] for i in history])
                t = time.perf_counter()
                out = llm.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    num_beams=args.beams,
                    num_return_sequences=args.beams,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.eos_token_id,
                )
                texts = [
                    tokenizer.decode(o[ids.shape[1] :], skip_special_tokens=True).strip().split("\n")[0] for o in out
                ]
                gen_s.append(time.perf_counter() - t)
                exact = [by_title.get(x.strip(" .\"'").casefold()) for x in texts]
                near = (minilm(texts) @ title_vectors.T).argmax(1) + 1  # [beams] item ids
                ranked = []
                for e, m in zip(exact, near.tolist(), strict=True):
                    item = e or m
                    if item not in seen_set and item not in ranked:
                        ranked.append(item)
                hr, ndcg = metrics_at_10(ranked, target)
                gen_hr.append(hr)
                gen_ndcg.append(ndcg)
            t = time.perf_counter()
            user = ours.sequence_representation(items[None], (items != 0)[None])  # [1, D]
            scores = (user @ table.T)[0]
            scores[0] = -torch.inf
            scores[seen[seen != 0]] = -torch.inf
            top = scores.topk(10).indices.tolist()
            ours_s.append(time.perf_counter() - t)
            hr, ndcg = metrics_at_10(top, target)
            ours_hr.append(hr)
            ours_ndcg.append(ndcg)
            if n < 5 and not args.ours_only:
                examples.append(
                    {
                        "target": titles[target - 1],
                        "generated": texts[:3],
                        "matched": [titles[i - 1] for i in ranked[:3]],
                    }
                )
            result = write(n + 1)
            print(
                f"{n + 1}/{len(pick)} gen {gen_s[-1] if gen_s else 0:.2f} s ours {ours_s[-1] * 1000:.1f} ms", flush=True
            )

    print(json.dumps({"generative": result["generative"], "ours": result["ours"]}))


if __name__ == "__main__":
    main()
