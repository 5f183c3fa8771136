"""The ranking stage after retrieval: a DARE ranker re-orders the retrieval top-N, over real HTTP,
and the retrieval order comes back, flagged, when the ranker fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from serve_support import ThreadServer

from recsys.data import schema as S
from recsys.model_io import load_model, save_model
from recsys.models.ranker import Ranker
from recsys.registry import build_ranker
from recsys.retrieval.bundle import load_bundle
from recsys.retrieval.ranking import RankingStage
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings

TOP_N = 6
PARAMS: dict[str, Any] = {"d_att": 4, "d_rep": 8, "top_k": 3, "max_len": 8, "mlp": [16]}


def _ranker_dir(root: Path, n_items: int, seed: int = 0) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_ranker("dare", PARAMS, n_items)
    save_model(model, "dare", PARAMS, n_items, root)
    return root


def _n_items(local_bundle: Path) -> int:
    return int(json.loads((local_bundle.parent / "processed" / S.META_FILE).read_text())["n_items"])


def _recommend(settings: ServeSettings, k: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    with ThreadServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        user = http.get("/info").json()["example_user_id"]
        body = http.post("/recommend", json={"user_id": user, "k": k}).json()
        longer = http.post("/recommend", json={"user_id": user, "k": 2}).json()
    return user, body, longer


@pytest.fixture(scope="module")
def retrieval_only(local_bundle: Path) -> dict[str, Any]:
    _, body, _ = _recommend(ServeSettings(model_uri=str(local_bundle)), TOP_N)
    return body


def test_off_by_default(retrieval_only: dict[str, Any]) -> None:
    assert "ranked_by" not in retrieval_only and "ranker_fallback" not in retrieval_only
    assert len(retrieval_only["items"]) == TOP_N


def test_ranker_reorders_the_retrieval_items(
    local_bundle: Path, retrieval_only: dict[str, Any], tmp_path: Path
) -> None:
    ranker = _ranker_dir(tmp_path / "ranker", _n_items(local_bundle))
    settings = ServeSettings(model_uri=str(local_bundle), ranker_uri=str(ranker), ranker_top_n=TOP_N)
    user, body, top2 = _recommend(settings, TOP_N)
    assert body["ranked_by"] == "dare" and body["ranker_fallback"] is False
    got = [it["item_id"] for it in body["items"]]
    want = [it["item_id"] for it in retrieval_only["items"]]
    assert sorted(got) == sorted(want)  # the same items, only re-ordered
    # the scores are the ranker's, computed here offline against the user's stored history
    bundle = load_bundle(local_bundle)
    history = bundle.user_history(user)
    assert history is not None
    model = load_model(ranker, kind="ranker")
    offline = RankingStage("dare", model, TOP_N, model.max_len).scores(
        history, np.array([bundle.item_vocab[i] for i in got], dtype=np.int64)
    )
    np.testing.assert_allclose([it["score"] for it in body["items"]], offline, rtol=1e-5, atol=1e-6)
    assert list(offline) == sorted(offline, reverse=True)
    assert [it["item_id"] for it in top2["items"]] == got[:2]  # k < N: the ranker's best of the same top-N


def test_ranker_failure_falls_back_to_retrieval_order(
    local_bundle: Path, retrieval_only: dict[str, Any], tmp_path: Path
) -> None:
    # a ranker whose weights went bad: its non-finite scores make the stage serve the retrieval order
    ranker = _ranker_dir(tmp_path / "ranker", _n_items(local_bundle))
    state = torch.load(ranker / "state_dict.pt")
    state["mlp.0.weight"].fill_(float("nan"))
    torch.save(state, ranker / "state_dict.pt")
    settings = ServeSettings(model_uri=str(local_bundle), ranker_uri=str(ranker), ranker_top_n=TOP_N)
    _, body, _ = _recommend(settings, TOP_N)
    assert body["ranker_fallback"] is True
    assert body["items"] == retrieval_only["items"]


def test_a_ranker_of_another_catalog_is_refused_at_load(local_bundle: Path, tmp_path: Path) -> None:
    from recsys.serve.metrics import ServeMetrics
    from recsys.serve.state import ModelHolder

    ranker = _ranker_dir(tmp_path / "ranker", 2)
    settings = ServeSettings(model_uri=str(local_bundle), ranker_uri=str(ranker), ranker_top_n=TOP_N)
    with pytest.raises(ValueError, match=f"catalog of 2 items but .* serves {_n_items(local_bundle)}"):
        ModelHolder(settings, ServeMetrics()).load()


def test_rerank_is_a_stable_permutation_and_load_round_trips(tmp_path: Path) -> None:
    model = load_model(_ranker_dir(tmp_path / "r", 20, seed=3), kind="ranker")
    stage = RankingStage("dare", model, top_n=5, history_len=8)
    history = np.array([3, 5, 7, 9], dtype=np.int64)
    items = np.array([11, 2, 11, 4, 19], dtype=np.int64)  # item 11 twice: equal scores keep retrieval order
    ranked = stage.rerank(history, items, np.zeros(5, dtype=np.float32))
    assert not ranked.fallback and sorted(ranked.items.tolist()) == sorted(items.tolist())
    reference = stage.scores(history, items)
    assert ranked.items.tolist() == items[np.argsort(-reference, kind="stable")].tolist()
    # a candidate the ranker's catalog does not hold (an item added after it trained): the retrieval order
    beyond = stage.rerank(history, np.array([4, 21, 3], dtype=np.int64), np.arange(3, dtype=np.float32))
    assert beyond.fallback and beyond.items.tolist() == [4, 21, 3]
    empty = stage.rerank(np.array([], dtype=np.int64), items, np.zeros(5, dtype=np.float32))  # no history: scored
    assert not empty.fallback and sorted(empty.items.tolist()) == sorted(items.tolist())
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    flagged = stage.rerank(history, items, np.arange(5, dtype=np.float32))
    assert flagged.fallback and flagged.items.tolist() == items.tolist()


class _EchoStage1(Ranker):
    """A ranker whose logits are the negated stage-1 scores it is given (it records them)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_len = 8
        self.seen: list[torch.Tensor] = []

    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        del items, ratings
        assert stage1_scores.shape == candidates.shape and stage1_scores.dtype == torch.float32
        self.seen.append(stage1_scores)
        return -stage1_scores


def test_the_retrieval_scores_reach_the_ranker_as_stage1_scores() -> None:
    ranker = _EchoStage1()
    stage = RankingStage("echo", ranker, top_n=4, history_len=8)
    items, retrieval = np.array([7, 3, 9, 5]), np.array([4.0, 3.0, 2.0, 1.0], dtype=np.float32)
    ranked = stage.rerank(np.array([1, 2]), items, retrieval)
    assert ranker.seen[-1].tolist() == [retrieval.tolist()]
    assert ranked.items.tolist() == [5, 9, 3, 7]  # this ranker reverses them; nothing else changes the order
    assert stage.scores(np.array([1, 2]), items).tolist() == [0.0] * 4  # no retrieval scores: all zeros


def test_an_old_format_ranker_directory_says_how_to_reexport_it(tmp_path: Path) -> None:
    from recsys.retrieval.ranking import fetch_ranker

    old = tmp_path / "old"
    old.mkdir()
    (old / "ranker.json").write_text(json.dumps({"name": "dare", "params": PARAMS, "n_items": 5}))
    torch.save({}, old / "ranker.pt")
    with pytest.raises(ValueError, match="old format") as err:
        fetch_ranker(str(old), f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert "\n" not in str(err.value) and "python -m pipelines.train_ranker" in str(err.value)


def test_a_trained_ranker_is_tracked_registered_and_served_by_alias(
    local_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pipelines.train_ranker on labelled samples of the bundle's own processed data: one MLflow run with
    the metrics and the ranker, a registered version with an alias, and the service re-ranks with it."""
    import yaml
    from mlflow.tracking import MlflowClient

    from pipelines.train_ranker import main
    from recsys.retrieval.ranking import fetch_ranker
    from recsys.tracking.registry import RegistryError, resolve_model_uri

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    labelled = tmp_path / "labelled.yaml"
    labelled.write_text(
        yaml.safe_dump(
            {
                "processed": str(local_bundle.parent / "processed"),
                "output_dir": str(tmp_path / "labelled"),
                "recipe": "paper",
                "min_events": 4,
                "n_train": 2,
                "stride": 1,
                "n_negatives": 1,
            }
        )
    )
    experiment = tmp_path / "tiny_dare.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "tiny_dare",
                "data": str(labelled),
                "model": {"name": "dare", "params": {"d_att": 4, "d_rep": 8, "top_k": 3, "max_len": 8, "mlp": [16]}},
                "train": {"max_epochs": 2, "batch_size": 32, "grad_clip": None, "progress_bar": False},
                "tracking": {"experiment": "rankers", "artifact_dir": str(tmp_path / "artifacts")},
            }
        )
    )
    common = ["--config", str(experiment), "--name", "tiny-dare", "--tracking-uri", uri]
    assert main(common) == 0

    ref = resolve_model_uri(uri, "models:/tiny-dare@champion")
    client = MlflowClient(tracking_uri=uri)
    trained = client.get_run(client.get_run(str(ref.run_id)).data.tags["source_run_id"])
    assert trained.info.status == "FINISHED"
    assert {"test/auc", "test/gauc", "test/logloss", "val/auc"} <= set(trained.data.metrics)
    assert len(client.get_metric_history(trained.info.run_id, "val/auc")) == 3  # each epoch, then the best one
    assert {a.path for a in client.list_artifacts(trained.info.run_id, "model")} >= {
        "model/model.json",
        "model/state_dict.pt",
    }
    name, model = fetch_ranker("models:/tiny-dare@champion", uri)
    assert name == "dare" and model.max_len == 8

    settings = ServeSettings(
        model_uri=str(local_bundle), tracking_uri=uri, ranker_uri="models:/tiny-dare@champion", ranker_top_n=TOP_N
    )
    _, body, _ = _recommend(settings, TOP_N)
    assert body["ranked_by"] == "dare" and body["ranker_fallback"] is False and len(body["items"]) == TOP_N

    # bad input: an unknown parameter and a missing alias name the bad value; no new version is made
    capsys.readouterr()
    assert main([*common, "model.params.d_attention=4"]) == 1
    assert "d_attention" in capsys.readouterr().err
    with pytest.raises(RegistryError, match="nope"):
        fetch_ranker("models:/tiny-dare@nope", uri)
    with pytest.raises(RegistryError, match="ranker directory"):
        fetch_ranker(str(tmp_path), uri)
    assert resolve_model_uri(uri, "models:/tiny-dare@champion").version == "1"
