"""New items by text over real HTTP: a Recformer bundle takes them without retraining, and they are
recommendable in the next request; bad text, duplicate ids and a missing token are 4xx with a message."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import torch
from serve_support import MODEL_NAME, ThreadServer, write_log

from recsys.config import from_dict
from recsys.data.config import DataConfig
from recsys.data.etl import run_etl
from recsys.data.item_features import load_item_features
from recsys.model_io import resolved_config, save_model
from recsys.registry import build_model
from recsys.retrieval.bundle import write_bundle
from recsys.retrieval.index import IndexConfig
from recsys.serve.app import create_app
from recsys.serve.auth import ADMIN_HEADER
from recsys.serve.settings import ServeSettings

TOKEN = "a-long-admin-secret"
NEW = {"id": "brand-new", "fields": {"title": "A film nobody has rated yet"}}


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_text_backbone: Path) -> Path:
    """A bundle of an untrained tiny Recformer over the serving tests' catalog (titles only)."""
    root = tmp_path_factory.mktemp("text-bundle")
    log_path, items_path = write_log(root)
    items = {"path": str(items_path), "format": "csv", "id_column": "item", "text_columns": ["title"]}
    source = {"format": "csv", "path": str(log_path), "id_type": "str", "items": items}
    run_etl(from_dict(DataConfig, {"name": "tiny-text", "output_dir": str(root / "processed"), "source": source}))
    features = load_item_features(root / "processed")
    params = {"backbone": str(tiny_text_backbone), "max_len": 4, "fields": ["title"], "max_item_tokens": 8}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("recformer", params, features.n_items, item_features=features).eval()
    save_model(model, "recformer", resolved_config(model), features.n_items, root / "model")
    with torch.no_grad():
        emb = model.item_embeddings().numpy()
    bundle = root / "bundle"
    write_bundle(
        bundle,
        model_dir=root / "model",
        item_emb=emb,
        data_dir=root / "processed",
        index_config=IndexConfig(kind="flat"),
        name=MODEL_NAME,
        source_run_id=None,
    )
    return bundle


def test_a_new_item_is_added_by_text_and_recommended_next(text_bundle: Path) -> None:
    app = create_app(ServeSettings(model_uri=str(text_bundle), admin_token=TOKEN))  # type: ignore[arg-type]
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        before = http.get("/info").json()
        resp = http.post("/admin/items", json=NEW, headers={ADMIN_HEADER: TOKEN})
        assert resp.status_code == 200, resp.text
        assert resp.json()["added"] == "brand-new" and resp.json()["n_items"] == before["n_items"] + 1
        # the new item as the history's only item is known now (not skipped as unknown), and every
        # catalog item, the new one included, can be recommended
        recs = http.post("/recommend", json={"history": ["brand-new"], "k": 100, "exclude_seen": False}).json()
        assert recs.get("unknown_items", []) == []
        assert "brand-new" in [r["item_id"] for r in recs["items"]]

        again = http.post("/admin/items", json=NEW, headers={ADMIN_HEADER: TOKEN})
        assert again.status_code == 409 and "brand-new" in again.json()["detail"]
        existing = {"id": "it03", "fields": {"title": "x"}}
        assert http.post("/admin/items", json=existing, headers={ADMIN_HEADER: TOKEN}).status_code == 409
        bad_field = {"id": "n2", "fields": {"plot": "text the model does not read"}}
        resp = http.post("/admin/items", json=bad_field, headers={ADMIN_HEADER: TOKEN})
        assert resp.status_code == 422 and "plot" in resp.json()["detail"]
        empty = {"id": "n3", "fields": {}}
        assert http.post("/admin/items", json=empty, headers={ADMIN_HEADER: TOKEN}).status_code == 422
        assert http.post("/admin/items", json=NEW).status_code == 401  # no token


def test_an_id_only_model_refuses_new_items(local_bundle: Path) -> None:
    app = create_app(ServeSettings(model_uri=str(local_bundle), admin_token=TOKEN))  # type: ignore[arg-type]
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        resp = http.post("/admin/items", json=NEW, headers={ADMIN_HEADER: TOKEN})
        assert resp.status_code == 409 and "no item text" in resp.json()["detail"]
