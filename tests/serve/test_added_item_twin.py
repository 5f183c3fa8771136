"""An item added by text scores as its catalog twin does (issue 45 item 7, issue 44 item 6), over real
HTTP with the admin token and through `pipelines.add_items`, on models trained for real: a Recformer
(stage 1 then stage 2, so the encoder moves after the table was encoded), text only and text + ID, and
SASRec over the item tower reading a causal LM's item vectors, text only and ID + text. The copy's
vector is the original's and it takes the original's rank for every history; with ID + text the copy
gets the original's text vector and no ID row (the original keeps the ID vector it learned)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from serve_support import N_ITEMS, ThreadServer, write_log

from recsys.config import from_dict
from recsys.data.config import DataConfig
from recsys.data.etl import run_etl
from recsys.nn.item_tower import ItemTower
from recsys.retrieval.export import export_run, fetch_bundle
from recsys.retrieval.index import IndexConfig
from recsys.retrieval.recommender import Recommender
from recsys.serve.app import create_app
from recsys.serve.auth import ADMIN_HEADER
from recsys.serve.settings import ServeSettings
from recsys.train.experiment import ExperimentConfig
from recsys.train.run import train_experiment

TOKEN = "a-long-admin-secret"
NAME = "texty-trained"
ORIGINAL, COPY, TITLE = "it03", "it03-copy", "Title of item 3"  # write_log's title of it03
HISTORIES = [["it00"], ["it10", "it11"], ["it20", "it21", "it22"], ["it35", "it36"], ["it07"]]


@dataclass(frozen=True)
class Registered:
    tracking_uri: str
    uri: str  # models:/<NAME>@champion


def _model(kind: str, root: Path, tiny_text_backbone: Path, tiny_llama_backbone: Path) -> dict[str, object]:
    if kind.startswith("recformer"):
        params = {
            "backbone": str(tiny_text_backbone),
            "max_len": 4,
            "fields": ["title"],
            "max_item_tokens": 8,
            "max_tokens": 40,
            "refresh_epochs": 1,  # epoch 0 re-encodes the table, epoch 1 trains on with it frozen
            "item_ids": kind != "recformer",
        }
        if kind.startswith("recformer_id_"):  # IDs on the user side too, free or compact ID rows beside the text
            # table, a bias and a popularity prior each (an added item: neither)
            params |= {"id_len": 4, "id_hidden": 8, "id_heads": 2, "id_rows": kind.split("_")[-1], "item_bias": True}
            params |= {"item_prior": True, "prior_weight": 0.5}
        return {"name": "recformer", "params": params}
    tower = {
        "text": str(tiny_llama_backbone),
        "fields": ["title"],
        "cache_dir": str(root / "cache"),
        "text_dim": 32,
        "id_embedding": kind == "id_text",
    }
    return {"name": "id_text_sasrec", "params": {"max_len": 4, "hidden": 16, "n_heads": 2, "item_tower": tower}}


TWIN_KINDS = ["recformer", "recformer_id", "recformer_id_free", "recformer_id_compact", "text_only", "id_text"]


@pytest.fixture(scope="module", params=TWIN_KINDS)
def trained_recformer(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_text_backbone: Path,
    tiny_llama_backbone: Path,
) -> Registered:
    """A tiny text model trained on the serving catalog's titles (Recformer: one stage-1 and one stage-2
    epoch; the item-tower SASRec: two epochs), exported to a temporary registry as version 1 with alias
    champion."""
    root = tmp_path_factory.mktemp(f"trained-{request.param}")
    log_path, items_path = write_log(root)
    items = {"path": str(items_path), "format": "csv", "id_column": "item", "text_columns": ["title"]}
    data_cfg = {
        "name": "tiny-text",
        "output_dir": str(root / "processed"),
        "source": {"format": "csv", "path": str(log_path), "id_type": "str", "items": items},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data_cfg))
    run_etl(from_dict(DataConfig, data_cfg))
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = from_dict(
        ExperimentConfig,
        {
            "name": "tiny_recformer",
            "data": str(root / "data.yaml"),
            "model": _model(request.param, root, tiny_text_backbone, tiny_llama_backbone),
            "train": {"max_epochs": 2, "lr": 0.005, "batch_size": 16, "progress_bar": False, "seed": 0},
            "eval": {"batch_size": 64},
            "tracking": {"tracking_uri": uri, "experiment": "twin-tests", "artifact_dir": str(root / "mlartifacts")},
        },
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        outcome = train_experiment(cfg, tracking_uri=uri)
    assert outcome is not None
    export_run(outcome.run_id, tracking_uri=uri, name=NAME, alias="champion", index_config=IndexConfig(kind="flat"))
    return Registered(tracking_uri=uri, uri=f"models:/{NAME}@champion")


def _rank_and_score(ranked: Sequence[tuple[str, float]], item: str, twin: str) -> tuple[int, float]:
    """`item`'s rank among the ranked items other than `twin` (0 = first), and its score."""
    others = [(raw, score) for raw, score in ranked if raw != twin]
    rank = [raw for raw, _ in others].index(item)
    return rank, others[rank][1]


def _assert_twins_rank_alike(ranked: Sequence[tuple[str, float]], history: list[str]) -> None:
    original = _rank_and_score(ranked, ORIGINAL, COPY)
    copy = _rank_and_score(ranked, COPY, ORIGINAL)
    assert copy[0] == original[0], f"history {history}: the copy ranks {copy[0]}, its catalog twin {original[0]}"
    assert copy[1] == pytest.approx(original[1], abs=1e-3), history


def _id_tower(model: torch.nn.Module) -> ItemTower | None:
    """The item tower when catalog items carry a learned ID vector beside their text (an added item has none)."""
    tower = getattr(model, "tower", None)
    return tower if isinstance(tower, ItemTower) and tower.id_emb is not None else None


def _has_ids(model: torch.nn.Module) -> bool:
    return _id_tower(model) is not None


def _assert_same_vector(model: torch.nn.Module, original: int, copy: int) -> None:
    with torch.no_grad():
        table = model.item_embeddings()
        tower = _id_tower(model)
        if tower is not None:  # compare the text vectors; the copy's whole vector is its text vector
            text = tower.text_view(torch.tensor(copy))
            width = len(text)  # beyond it (a free ID half, a bias, a prior column): zeros for an item without ID row
            assert float(F.cosine_similarity(table[copy, :width], text, dim=0)) >= 0.999
            assert float(table[copy, width:].abs().sum()) == 0.0
            assert not bool(tower.has_id[copy]) and bool(tower.has_id[original])
            table = tower.text_view(torch.arange(len(table)))
    cosine = float(F.cosine_similarity(table[original], table[copy], dim=0))
    assert cosine >= 0.999, f"the copy's vector has cosine {cosine:.4f} with its catalog twin's"


def test_an_item_added_over_http_scores_as_its_catalog_twin(trained_recformer: Registered) -> None:
    settings = ServeSettings(
        model_uri=trained_recformer.uri,  # type: ignore[arg-type]
        tracking_uri=trained_recformer.tracking_uri,
        admin_token=TOKEN,
    )
    app = create_app(settings)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        added = http.post("/admin/items", json={"id": COPY, "fields": {"title": TITLE}}, headers={ADMIN_HEADER: TOKEN})
        assert added.status_code == 200, added.text
        bundle = app.state.holder.current.recommender.bundle  # the live model the service now serves
        for history in HISTORIES:
            body = {"history": history, "k": N_ITEMS + 1, "exclude_seen": False}
            resp = http.post("/recommend", json=body)
            assert resp.status_code == 200, resp.text
            ranked = [(r["item_id"], r["score"]) for r in resp.json()["items"]]
            assert COPY in [raw for raw, _ in ranked]
            if not _has_ids(bundle.model):
                _assert_twins_rank_alike(ranked, history)
        _assert_same_vector(bundle.model, bundle.item_vocab[ORIGINAL], bundle.item_vocab[COPY])


def test_an_item_added_by_the_pipeline_scores_as_its_catalog_twin(
    trained_recformer: Registered, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.add_items import main

    new_items = tmp_path / "copy.csv"
    new_items.write_text(f"id,title\n{COPY},{TITLE}\n")
    uri = trained_recformer.tracking_uri
    code = main(["--model", trained_recformer.uri, "--items", str(new_items), "--tracking-uri", uri])
    assert code == 0, capsys.readouterr().err
    grown = fetch_bundle(f"models:/{NAME}/2", uri).bundle
    vocab = grown.item_vocab
    _assert_same_vector(grown.model, vocab[ORIGINAL], vocab[COPY])
    if _has_ids(grown.model):
        return
    recommender = Recommender(grown)
    histories = [np.array([vocab[raw] for raw in h], dtype=np.int64) for h in HISTORIES]
    for history, recs in zip(HISTORIES, recommender.recommend(histories, N_ITEMS + 1, exclude_seen=False), strict=True):
        ranked = [(str(grown.item_raw_ids[i]), float(s)) for i, s in zip(recs.items, recs.scores, strict=True)]
        _assert_twins_rank_alike(ranked, history)
