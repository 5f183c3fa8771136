"""New items by text over real HTTP: a Recformer bundle takes them without retraining, and they are
recommendable in the next request; bad text, duplicate ids and a missing token are 4xx with a message."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
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


def test_the_cli_registers_a_new_version_with_items_added_by_text(
    text_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.add_items import main
    from recsys.retrieval.export import fetch_bundle
    from recsys.tracking.registry import experiment_id_named, register_directory

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    source = register_directory(
        uri, text_bundle, "texty", experiment_id=experiment_id_named(uri, "recsys"), alias="champion"
    )
    new_items = tmp_path / "new.csv"
    new_items.write_text("id,title\nfresh-1,A quiet film about lighthouses\nfresh-2,Space pirates return\n")

    assert main(["--model", "models:/texty@champion", "--items", str(new_items), "--tracking-uri", uri]) == 0
    assert "models:/texty/2" in capsys.readouterr().out
    old = fetch_bundle(source.uri, uri).bundle
    grown = fetch_bundle("models:/texty/2", uri).bundle
    assert fetch_bundle("models:/texty@champion", uri).version == "1"  # no alias asked: the service is untouched
    assert grown.meta.n_items == old.meta.n_items + 2
    assert grown.item_vocab["fresh-1"] == old.meta.n_items + 1 and grown.item_vocab["fresh-2"] == old.meta.n_items + 2
    # old items keep their vectors; each new item's finite vector finds itself first in the index
    old_emb, new_emb = old.model.item_embeddings(), grown.model.item_embeddings()
    assert torch.allclose(new_emb[: old.meta.n_items + 1], old_emb, atol=1e-6)
    fresh = new_emb[-2:].numpy()
    assert np.isfinite(fresh).all()
    _, ids = grown.index.search(fresh, 1)
    assert ids[:, 0].tolist() == [old.meta.n_items + 1, old.meta.n_items + 2]
    assert grown.item_text is not None and "lighthouses" in str(grown.item_text[-2])
    assert grown.user_vocab == old.user_vocab and np.array_equal(grown.history_items, old.history_items)

    # bad files and bad items: exit 1 with a message naming the bad value, and no new version
    dup = tmp_path / "dup.csv"
    dup.write_text("id,title\nx1,a\nx1,b\n")
    taken = tmp_path / "taken.csv"
    taken.write_text("id,title\nit03,already here\n")
    plot = tmp_path / "plot.jsonl"
    plot.write_text('{"id": "x2", "plot": "a field the model does not read"}\n')
    no_id = tmp_path / "noid.csv"
    no_id.write_text("item,title\nx3,a\n")
    for path, expected in [(dup, "x1"), (taken, "it03"), (plot, "plot"), (no_id, "'id'"), (tmp_path / "a.xls", "xls")]:
        assert main(["--model", "models:/texty@champion", "--items", str(path), "--tracking-uri", uri]) == 1
        err = capsys.readouterr().err
        assert "\nerror:" in "\n" + err and expected in err.split("error:")[-1], err
    with pytest.raises(Exception, match="texty"):
        fetch_bundle("models:/texty/3", uri)
