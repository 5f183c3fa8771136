"""The recall/latency sweep: exact search scores recall 1, an IVF index reaches it as nprobe grows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys.model_io import load_model
from recsys.retrieval.bundle import load_bundle, write_bundle
from recsys.retrieval.index import IndexConfig, build_index
from recsys.retrieval.tradeoff import bundle_queries, exact_top_items, search_sweep


def test_sweep_against_exact(tmp_path: Path, model_dir: Path, processed_dir: Path) -> None:
    item_emb = load_model(model_dir).item_embeddings().detach().numpy()
    write_bundle(
        tmp_path / "b",
        model_dir=model_dir,
        item_emb=item_emb,
        data_dir=processed_dir,
        index_config=IndexConfig(kind="flat"),
        name="tiny",
        source_run_id=None,
    )
    bundle = load_bundle(tmp_path / "b")
    queries = bundle_queries(bundle, 25, np.random.default_rng(0))
    assert queries.shape == (25, item_emb.shape[1])
    exact = exact_top_items(item_emb, queries, 10)

    live = search_sweep(bundle.index, queries, exact)
    assert live["kind"].to_list() == ["flat"] and live["recall@10"].to_list() == [1.0]

    ivf = build_index(item_emb, IndexConfig(kind="ivf_flat", nlist=8, nprobe=1))
    sweep = search_sweep(ivf, queries, exact, param="nprobe", values=[1, 2, 8])
    recall = sweep["recall@10"].to_list()
    assert sweep["value"].to_list() == [1, 2, 8]
    assert recall == sorted(recall) and recall[-1] == 1.0  # all cells visited: exact
    assert (sweep["single_ms_p99"] >= sweep["single_ms_p50"]).all()
    assert ivf.index.nprobe == 1  # the index keeps its own setting

    hnsw = build_index(item_emb, IndexConfig(kind="hnsw", hnsw_m=8, ef_search=16))
    sweep = search_sweep(hnsw, queries, exact, param="ef_search", values=[16, 64])
    assert sweep["param"].to_list() == ["ef_search"] * 2 and sweep["recall@10"].max() > 0.9
