"""Serving bundle round trip, the FAISS query path against its exact twin, export to an MLflow registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from retrieval_support import MODEL_CFG, N_ITEMS, N_USERS

from recsys.config import to_dict
from recsys.data import schema as S
from recsys.model_io import MODEL_JSON, load_model
from recsys.models.sasrec import SASRecConfig
from recsys.retrieval.bundle import MODEL_DIR, load_bundle, read_bundle_meta, write_bundle
from recsys.retrieval.export import current_version, export_run, fetch_bundle
from recsys.retrieval.index import IndexConfig
from recsys.retrieval.recommender import Recommender
from recsys.tracking import registry as registry_module
from recsys.tracking.config import TrackingConfig
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import RunRecorder
from recsys.tracking.registry import RegistryError


def _item_emb(model_dir: Path) -> np.ndarray:
    return load_model(model_dir).item_embeddings().detach().numpy()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, processed_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    write_bundle(
        out,
        model_dir=model_dir,
        item_emb=_item_emb(model_dir),
        data_dir=processed_dir,
        index_config=IndexConfig(kind="flat"),
        name="tiny",
        source_run_id="abc",
    )
    return out


def test_bundle_round_trip(bundle_dir: Path, processed_dir: Path) -> None:
    meta = read_bundle_meta(bundle_dir)
    assert (meta.name, meta.model, meta.n_items, meta.dim, meta.max_len) == ("tiny", "sasrec", N_ITEMS, 16, 7)
    assert meta.index == IndexConfig(kind="flat") and meta.source_run_id == "abc"
    bundle = load_bundle(bundle_dir)
    assert bundle.item_raw_ids[0] == "" and bundle.item_raw_ids[5] == "sku-5"
    assert bundle.item_vocab["sku-61"] == 61 and len(bundle.item_vocab) == N_ITEMS
    assert bundle.item_text is not None and bundle.item_text[4] == "Product 4" and bundle.item_text[5] is None
    seqs = pl.read_parquet(processed_dir / S.SEQUENCES_FILE)
    assert len(bundle.user_vocab) == N_USERS
    for row in (0, 17, N_USERS - 1):
        hist = bundle.user_history(f"u{row}")
        assert hist is not None and hist.tolist() == seqs[S.ITEMS][row].to_list()
    assert bundle.user_history("nobody") is None


def test_the_bundle_carries_the_resolved_model_config(tmp_path: Path, model_dir: Path, processed_dir: Path) -> None:
    """A model directory written before configs were resolved (only the given params) is bundled with
    every field of its config, so the service rebuilds it the same way whatever the defaults become."""
    old = tmp_path / "old_model"
    shutil.copytree(model_dir, old)
    spec = json.loads((old / MODEL_JSON).read_text())
    (old / MODEL_JSON).write_text(json.dumps(spec | {"config": MODEL_CFG}))  # the pre-resolution format
    write_bundle(
        tmp_path / "b",
        model_dir=old,
        item_emb=_item_emb(old),
        data_dir=processed_dir,
        index_config=IndexConfig(kind="flat"),
        name="tiny",
        source_run_id=None,
    )
    bundled = json.loads((tmp_path / "b" / MODEL_DIR / MODEL_JSON).read_text())
    assert bundled["config"] == to_dict(SASRecConfig(**MODEL_CFG))
    assert bundled["config"] == spec["config"]  # what save_model writes today


def test_write_bundle_refuses_mismatched_embeddings(tmp_path: Path, model_dir: Path, processed_dir: Path) -> None:
    with pytest.raises(ValueError, match="n_items"):
        write_bundle(
            tmp_path / "b",
            model_dir=model_dir,
            item_emb=np.zeros((N_ITEMS, 16), np.float32),
            data_dir=processed_dir,
            index_config=IndexConfig(),
            name="x",
            source_run_id=None,
        )


def test_resolve_appends_request_history_and_reports_unknown(bundle_dir: Path) -> None:
    rec = Recommender(load_bundle(bundle_dir))
    stored = rec.bundle.user_history("u3")
    assert stored is not None
    res = rec.resolve("u3", ["sku-2", "nope", "sku-9", "nope", "zz"])
    assert res.user_known and res.unknown_items == ["nope", "zz"]
    assert res.items.tolist() == [*stored.tolist(), 2, 9]
    res = rec.resolve("stranger", ["sku-1"])
    assert not res.user_known and res.items.tolist() == [1]
    assert len(rec.resolve(None, ["x"]).items) == 0


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_faiss_path_equals_exact_twin(bundle_dir: Path, exclude_seen: bool) -> None:
    rec = Recommender(load_bundle(bundle_dir))
    rng = np.random.default_rng(5)
    histories = [rng.integers(1, N_ITEMS + 1, size=n) for n in (1, 3, 7, 12, 40)]  # 12, 40 > max_len
    for k in (1, 10, N_ITEMS + 5):
        fast = rec.recommend(histories, k, exclude_seen=exclude_seen)
        slow = rec.recommend_exact(histories, k, exclude_seen=exclude_seen)
        for hist, f, s in zip(histories, fast, slow, strict=True):
            assert len(f.items) == len(s.items)
            np.testing.assert_allclose(f.scores, s.scores, atol=1e-4)
            kth = s.scores[-1]
            assert set(s.items[s.scores > kth + 1e-4].tolist()) <= set(f.items.tolist())
            assert 0 not in f.items
            if exclude_seen:
                assert not set(f.items.tolist()) & set(hist.tolist())
                assert len(f.items) == min(k, N_ITEMS - len(set(hist.tolist())))


@pytest.mark.parametrize(
    "index_config",
    [IndexConfig(kind="ivf_flat", nlist=4, nprobe=4), IndexConfig(kind="hnsw", hnsw_m=8, ef_search=128)],
    ids=["ivf_flat", "hnsw"],
)
def test_approximate_indexes_serve_what_the_exact_twin_serves(
    tmp_path: Path, model_dir: Path, processed_dir: Path, index_config: IndexConfig
) -> None:
    """IVF visiting every cell and HNSW with a wide beam are exact on 61 items, so the served top-k must
    equal the exact twin's: long histories make the search over-fetch past the excluded items, and k
    beyond the catalog makes FAISS pad with -1, which must never reach a client."""
    write_bundle(
        tmp_path / "b",
        model_dir=model_dir,
        item_emb=_item_emb(model_dir),
        data_dir=processed_dir,
        index_config=index_config,
        name="approx",
        source_run_id=None,
    )
    rec = Recommender(load_bundle(tmp_path / "b"))
    rng = np.random.default_rng(11)
    histories = [rng.choice(np.arange(1, N_ITEMS + 1), size=n, replace=False) for n in (2, 20, 50)]
    for k in (5, N_ITEMS + 5):
        fast = rec.recommend(histories, k, exclude_seen=True)
        slow = rec.recommend_exact(histories, k, exclude_seen=True)
        for hist, f, s in zip(histories, fast, slow, strict=True):
            assert -1 not in f.items and 0 not in f.items and not set(f.items.tolist()) & set(hist.tolist())
            assert len(f.items) == len(s.items) == min(k, N_ITEMS - len(hist))
            np.testing.assert_allclose(f.scores, s.scores, atol=1e-4)


def test_export_refuses_embeddings_that_are_not_the_models(
    training_run: tuple[str, str], tmp_path: Path, model_dir: Path, processed_dir: Path
) -> None:
    uri, _ = training_run
    cfg = TrackingConfig(tracking_uri=uri, experiment="tests", artifact_dir=str(tmp_path / "artifacts"))
    logger = make_logger(cfg, uri, tags={"data_dir": str(processed_dir)})
    rec = RunRecorder(uri, str(logger.run_id))
    rec.log_dir(model_dir, "model")
    np.save(tmp_path / "item_embeddings.npy", _item_emb(model_dir) + 0.5)  # not what the model computes
    rec.log_file(tmp_path / "item_embeddings.npy", "embeddings")
    rec.finish()
    with pytest.raises(ValueError, match="does not match the model's item_embeddings"):
        export_run(str(logger.run_id), tracking_uri=uri, name="mismatch", alias=None, index_config=IndexConfig())


def test_encode_uses_the_last_max_len_items_left_padded(bundle_dir: Path) -> None:
    rec = Recommender(load_bundle(bundle_dir))
    long = np.arange(1, 21)
    tail = torch.tensor([list(range(14, 21))])
    expected = rec.bundle.model.sequence_representation(tail, tail != 0)
    torch.testing.assert_close(rec.encode([long]), expected.detach())
    short = torch.tensor([[0, 0, 0, 0, 5, 6, 7]])
    torch.testing.assert_close(
        rec.encode([np.array([5, 6, 7])]), rec.bundle.model.sequence_representation(short, short != 0).detach()
    )
    with pytest.raises(ValueError, match="history_len"):
        Recommender(rec.bundle, history_len=8)
    short_rec = Recommender(rec.bundle, history_len=3)  # keeps 3 items, still in a max_len window
    window = torch.tensor([[0, 0, 0, 0, 18, 19, 20]])
    expected = rec.bundle.model.sequence_representation(window, window != 0).detach()
    torch.testing.assert_close(short_rec.encode([long]), expected)


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory, model_dir: Path, processed_dir: Path) -> tuple[str, str]:
    """A run laid out like a training run: model/, embeddings/item_embeddings.npy, tag data_dir."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = TrackingConfig(tracking_uri=uri, experiment="tests", artifact_dir=str(root / "artifacts"))
    logger = make_logger(cfg, uri, tags={"data_dir": str(processed_dir)})
    rec = RunRecorder(uri, str(logger.run_id))
    rec.log_dir(model_dir, "model")
    np.save(root / "item_embeddings.npy", _item_emb(model_dir))
    rec.log_file(root / "item_embeddings.npy", "embeddings")
    rec.finish()
    return uri, str(logger.run_id)


def test_export_registers_a_version_and_fetch_loads_it(training_run: tuple[str, str], tmp_path: Path) -> None:
    uri, run_id = training_run
    ref = export_run(run_id, tracking_uri=uri, name="tiny", alias="champion", index_config=IndexConfig(kind="flat"))
    assert ref.uri == f"models:/tiny/{ref.version}"
    assert current_version("models:/tiny@champion", uri) == ref.version
    fetched = fetch_bundle("models:/tiny@champion", uri, cache_dir=tmp_path / "cache")
    assert fetched.version == ref.version and fetched.bundle.meta.source_run_id == run_id
    assert not (tmp_path / "cache").exists()  # a local artifact store is read in place: nothing downloaded
    ref2 = export_run(
        run_id, tracking_uri=uri, name="tiny", alias="champion", index_config=IndexConfig(kind="ivf_flat", nlist=4)
    )
    assert int(ref2.version) == int(ref.version) + 1
    assert fetch_bundle(f"models:/tiny/{ref.version}", uri).bundle.meta.index.kind == "flat"
    assert fetch_bundle("models:/tiny@champion", uri).bundle.meta.index.kind == "ivf_flat"


def test_a_remote_store_is_downloaded_and_the_copy_removed(
    training_run: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path for an MLflow server's artifacts (not `file://`): download under cache_dir, load, delete."""
    uri, run_id = training_run
    ref = export_run(run_id, tracking_uri=uri, name="tiny-remote", alias="a", index_config=IndexConfig(kind="flat"))
    monkeypatch.setattr(registry_module, "local_version_dir", lambda ref: None)
    fetched = fetch_bundle("models:/tiny-remote@a", uri, cache_dir=tmp_path / "cache")
    assert fetched.version == ref.version and fetched.bundle.meta.source_run_id == run_id
    assert list((tmp_path / "cache").iterdir()) == []  # downloaded files are removed after loading


def test_registry_errors_are_clear(training_run: tuple[str, str]) -> None:
    uri, run_id = training_run
    with pytest.raises(RegistryError, match="models:/nope@champion"):
        fetch_bundle("models:/nope@champion", uri)
    with pytest.raises(RegistryError, match="must look like"):
        current_version("models:/a/b/c", uri)
    with pytest.raises(RegistryError, match="neither"):
        fetch_bundle("/does/not/exist", uri)
    with pytest.raises(RegistryError, match="not found"):
        export_run("0" * 32, tracking_uri=uri, name="x", alias=None, index_config=IndexConfig())
