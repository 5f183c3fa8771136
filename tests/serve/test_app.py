"""End to end over real HTTP: a trained tiny SASRec exported to MLflow, served by uvicorn, queried with httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from serve_support import MODEL_NAME, ThreadServer, TrainedRun

from recsys.data import schema as S
from recsys.model_io import load_model
from recsys.models.base import SequentialRecommender
from recsys.retrieval.recommender import Recommender
from recsys.tracking.mlflow import download_run_artifacts


@pytest.fixture(scope="module")
def client(server: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="module")
def offline(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Offline:
    return Offline(trained_run, tmp_path_factory.mktemp("offline"))


class Offline:
    """Reference scoring straight from the training run and the processed dataset (no bundle, no FAISS)."""

    def __init__(self, run: TrainedRun, tmp: Path) -> None:
        self.model: SequentialRecommender = load_model(
            download_run_artifacts(run.tracking_uri, run.run_id, "model", tmp)
        )
        items = pl.read_parquet(run.data_dir / S.ITEMS_FILE)
        self.raw_of = dict(zip(items[S.ITEM_IDX].to_list(), items[S.RAW_ID].to_list(), strict=True))
        self.idx_of = {raw: idx for idx, raw in self.raw_of.items()}
        self.title_of = dict(zip(items[S.RAW_ID].to_list(), items[S.TEXT].to_list(), strict=True))
        users = pl.read_parquet(run.data_dir / S.USERS_FILE)
        seqs = pl.read_parquet(run.data_dir / S.SEQUENCES_FILE)
        joined = users.join(seqs, on=S.USER_IDX)
        self.history = dict(zip(joined[S.RAW_ID].to_list(), joined[S.ITEMS].to_list(), strict=True))

    def top_k(self, history: list[int], k: int, exclude_seen: bool) -> tuple[list[str], np.ndarray]:
        """`sequence_representation @ item_embeddings().T`, padding and (optionally) seen items masked."""
        L = self.model.max_len
        tail = history[-L:]
        items = torch.zeros((1, L), dtype=torch.long)
        items[0, L - len(tail) :] = torch.tensor(tail)
        with torch.no_grad():
            logits = self.model.sequence_representation(items, items != 0) @ self.model.item_embeddings().T
        logits[0, 0] = -torch.inf
        if exclude_seen:
            logits[0, torch.tensor(history)] = -torch.inf
        scores, idx = logits[0].topk(k)
        return [self.raw_of[i] for i in idx.tolist()], scores.numpy()


def assert_same_ranking(body: dict, ref_items: list[str], ref_scores: np.ndarray) -> None:
    """Scores equal rank by rank; items equal except where reference scores tie."""
    got_items = [it["item_id"] for it in body["items"]]
    got_scores = np.array([it["score"] for it in body["items"]])
    assert len(got_items) == len(ref_items)
    np.testing.assert_allclose(got_scores, ref_scores, atol=1e-4)
    kth = ref_scores[-1]
    strict = {item for item, s in zip(ref_items, ref_scores, strict=True) if s > kth + 1e-4}
    assert strict <= set(got_items)


def test_health_ready_info(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "model_version": "1"}
    for path in ("/healthz", "/readyz"):  # load balancers probe with HEAD
        head = client.head(path)
        assert head.status_code == 200 and head.content == b""
    info = client.get("/info").json()
    assert info["name"] == MODEL_NAME and info["model"] == "sasrec" and info["n_items"] == 40
    assert info["max_len"] == 8 and info["index"]["kind"] == "flat" and info["example_user_id"]


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_known_user_matches_offline_scoring(client: httpx.Client, offline: Offline, exclude_seen: bool) -> None:
    for user in ("user0", "user13", "user47"):
        resp = client.post("/recommend", json={"user_id": user, "k": 10, "exclude_seen": exclude_seen})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["user_known"] and body["unknown_items"] == [] and body["model_version"] == "1"
        ref_items, ref_scores = offline.top_k(offline.history[user], 10, exclude_seen)
        assert_same_ranking(body, ref_items, ref_scores)
        for item in body["items"]:
            assert item["text"] == offline.title_of[item["item_id"]]
        if exclude_seen:
            seen = {offline.raw_of[i] for i in offline.history[user]}
            assert not seen & {it["item_id"] for it in body["items"]}


def test_history_only_ignores_and_lists_unknown_items(client: httpx.Client, offline: Offline) -> None:
    history = ["it05", "nope", "it06", "it07", "zzz", "it08"]
    resp = client.post("/recommend", json={"history": history, "k": 5})
    body = resp.json()
    assert resp.status_code == 200 and body["unknown_items"] == ["nope", "zzz"] and not body["user_known"]
    ref_items, ref_scores = offline.top_k([offline.idx_of[r] for r in ("it05", "it06", "it07", "it08")], 5, True)
    assert_same_ranking(body, ref_items, ref_scores)
    # the planted ring: after it05..it08 comes it09
    assert body["items"][0]["item_id"] == "it09"


def test_known_user_with_history_appends_it_as_most_recent(client: httpx.Client, offline: Offline) -> None:
    body = client.post("/recommend", json={"user_id": "user3", "history": ["it30", "it31"], "k": 7}).json()
    assert body["user_known"]
    merged = offline.history["user3"] + [offline.idx_of["it30"], offline.idx_of["it31"]]
    assert_same_ranking(body, *offline.top_k(merged, 7, True))
    # an unknown user id with a history: the history alone
    body = client.post("/recommend", json={"user_id": "ghost", "history": ["it30", "it31"], "k": 7}).json()
    assert not body["user_known"]
    assert_same_ranking(body, *offline.top_k([offline.idx_of["it30"], offline.idx_of["it31"]], 7, True))


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"user_id": "user1", "k": 0}, 422, "greater than or equal to 1"),
        ({"user_id": "user1", "k": -3}, 422, "greater than or equal to 1"),
        ({"user_id": "user1", "k": 1001}, 422, "max_k=1000"),
        ({"user_id": "user1", "k": "10"}, 422, "valid integer"),
        ({"user_id": "user1", "k": 2.5}, 422, "valid integer"),
        ({"user_id": "user1", "k": True}, 422, "valid integer"),
        ({"user_id": "user1", "exclude_seen": "no"}, 422, "valid boolean"),
        ({"user_id": "ghost"}, 404, "user_id 'ghost' is unknown and no history items were given"),
        ({}, 422, "give a user_id or a non-empty history"),
        ({"history": []}, 422, "give a user_id or a non-empty history"),
        ({"user_id": None}, 422, "give a user_id or a non-empty history"),
        ({"history": ["nope", "nada"]}, 404, "none of the 2 history items is in the catalog"),
        ({"history": "it01"}, 422, "valid list"),
        ({"history": [1]}, 422, 'ids are strings, so send 42 as \\"42\\"'),
        ({"history": [1.0]}, 422, "ids are strings"),
        ({"user_id": 5}, 422, "ids are strings"),
        ({"history": ["it01"] * 9}, 422, "max_history_items=8"),
        ({"history": ["x" * 17]}, 422, "max_id_chars=16"),
        ({"user": "user1"}, 422, "Extra inputs"),
        ([1, 2], 422, "valid dictionary"),
    ],
)
def test_bad_requests_are_4xx_with_a_clear_message(
    client: httpx.Client, body: object, status: int, needle: str
) -> None:
    resp = client.post("/recommend", json=body)
    assert resp.status_code == status
    assert needle in resp.text
    assert "Traceback" not in resp.text
    assert isinstance(resp.json()["detail"], str)  # one error shape (ErrorResponse) for every status


def test_whole_numbers_count_as_integers(client: httpx.Client) -> None:
    """JSON Schema says 3.0 is an integer; the contract agrees (2.5 and "3" stay errors, above)."""
    resp = client.post("/recommend", json={"user_id": "user1", "k": 3.0})
    assert resp.status_code == 200 and len(resp.json()["items"]) == 3


def _declared(client: httpx.Client, path: str) -> set[str]:
    """The statuses the OpenAPI document declares for POST `path`."""
    return set(client.get("/openapi.json").json()["paths"][path]["post"]["responses"])


def test_a_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    assert "400" in _declared(client, "/recommend") and "400" in _declared(client, "/admin/items")
    resp = client.post(
        "/recommend", content=b'{"user_id": "user1", "k": ', headers={"content-type": "application/json"}
    )
    assert (
        resp.status_code == 400
        and resp.json()["detail"] == "the body is not valid JSON: Expecting value at character 26"
    )
    assert resp.json()["errors"] == [
        {"loc": ["body", 26], "msg": "Expecting value at character 26", "type": "json_invalid"}
    ]
    for not_utf8 in (b"\xff\xfe", b'{"user_id": "\xff"}'):
        resp = client.post("/recommend", content=not_utf8, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and isinstance(resp.json()["detail"], str)


def test_a_body_not_sent_as_json_is_415_and_says_so(client: httpx.Client) -> None:
    assert "415" in _declared(client, "/recommend") and "415" in _declared(client, "/admin/items")
    body = json.dumps({"user_id": "user1"}).encode()
    resp = client.post("/recommend", content=body, headers={"content-type": "text/plain"})
    assert resp.status_code == 415
    assert resp.json() == {
        "detail": "the body must be JSON sent as Content-Type: application/json (it came as text/plain)"
    }
    resp = client.post("/recommend", content=body)  # no Content-Type at all
    assert resp.status_code == 415 and "(it came as no Content-Type)" in resp.json()["detail"]
    resp = client.post("/admin/items", content=body, headers={"X-Admin-Token": "secret", "content-type": "text/csv"})
    assert resp.status_code == 415 and "text/csv" in resp.json()["detail"]


def test_ids_that_are_not_valid_text_are_422_naming_the_field(client: httpx.Client) -> None:
    """A lone UTF-16 surrogate is valid JSON (an escape) but no text: refused wherever an id is taken."""
    cases = [
        ("/recommend", {"history": ["\ud800", "it01"]}, "body.history.0"),
        ("/recommend", {"user_id": "user1", "history": ["it01", "a\udfffb"]}, "body.history.1"),
        ("/recommend", {"user_id": "\ud800"}, "body.user_id"),
        ("/admin/items", {"id": "new\ud800", "fields": {"title": "x"}}, "body.id"),
        ("/admin/items", {"id": "new", "fields": {"\udc00": "x"}}, "body.fields"),
        ("/admin/items", {"id": "new", "fields": {"title": "\udbff"}}, "body.fields.title"),
    ]
    for path, body, where in cases:
        raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as a \\uXXXX escape
        resp = client.post(path, content=raw, headers={"content-type": "application/json", "X-Admin-Token": "secret"})
        assert resp.status_code == 422, (body, resp.text)
        detail = resp.json()["detail"]
        assert where in detail and ("surrogate" in detail or "unicode string" in detail), detail
    # a surrogate pair is one character outside the BMP, and valid
    resp = client.post(
        "/recommend", content=b'{"history": ["\\ud83d\\ude00", "it01"]}', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 200 and resp.json()["unknown_items"] == ["\U0001f600"]


def test_a_huge_k_is_refused_without_echoing_it(client: httpx.Client) -> None:
    raw = b'{"user_id": "user1", "k": ' + b"9" * 4000 + b"}"
    resp = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json() == {"detail": "k is above the limit max_k=1000"}


def test_oversized_bodies_are_413(client: httpx.Client) -> None:
    big = {"history": [f"it{i % 40:02d}" for i in range(2000)], "k": 5}  # ~14 kB > the 4 kB limit
    resp = client.post("/recommend", json=big)
    assert resp.status_code == 413 and "4096 bytes" in resp.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced on what arrives
        yield b'{"history": ['
        for _ in range(600):
            yield b'"it01", '
        yield b'"it02"], "k": 5}'

    resp = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "4096 bytes" in resp.text
    assert client.post("/recommend", json={"user_id": "user1"}).status_code == 200  # still serving


def test_the_history_limit_fits_in_the_body_limit(client: httpx.Client) -> None:
    """max_history_items ids of max_id_chars characters (8 x 16 here), each character as a 12-byte
    escaped surrogate pair, still fit the 4 kB body: 404 (unknown ids), never 413."""
    body = {"user_id": "\U0001f600" * 16, "history": ["\U0001f600" * 16] * 8, "k": 1000, "exclude_seen": False}
    raw = json.dumps(body).encode()  # ensure_ascii: \ud83d\ude00 per character
    assert 1700 < len(raw) < 4096
    resp = client.post("/recommend", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 404, resp.text


def test_unhandled_errors_are_a_generic_500(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/model.py line 42")

    monkeypatch.setattr(Recommender, "recommend", boom)
    resp = client.post("/recommend", json={"user_id": "user1"})
    assert resp.status_code == 500 and resp.json() == {"detail": "internal server error"}
    assert "secret" not in resp.text and "Traceback" not in resp.text
    assert "secret internals" in caplog.text  # logged server-side
    metrics = client.get("/metrics").text
    assert 'recsys_http_unhandled_errors_total{route="/recommend"} 1.0' in metrics


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/recommend").status_code == 405
    wrong = client.delete("/admin/reload", headers={"X-Admin-Token": "secret"})
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"  # every method of the path
    assert client.put("/healthz").headers["allow"] == "GET, HEAD"


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    """Counts what this test itself sent (a 200, a 422 and an unmatched 404), so it passes in any order."""
    assert client.post("/recommend", json={"user_id": "user2"}).status_code == 200
    assert client.post("/recommend", json={"user_id": "user2", "k": 0}).status_code == 422
    assert client.get("/no-such-route").status_code == 404
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'recsys_http_requests_total{method="POST",route="/recommend",status="200"}' in text
    assert 'recsys_http_requests_total{method="POST",route="/recommend",status="422"}' in text
    assert 'recsys_http_request_duration_seconds_bucket{le="0.01",route="/recommend"}' in text
    assert f'recsys_model_info{{name="{MODEL_NAME}",version="1"}} 1.0' in text
    assert 'recsys_http_requests_total{method="GET",route="unmatched",status="404"}' in text  # no label per path


def test_admin_endpoints_need_the_token(client: httpx.Client) -> None:
    assert client.post("/admin/reload").status_code == 401
    assert client.get("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 401
    status = client.get("/admin/reload", headers={"X-Admin-Token": "secret"}).json()
    assert status["model_version"] == "1"


def test_concurrent_requests_match_offline_scoring(server: ThreadServer, offline: Offline) -> None:
    users = [f"user{u}" for u in range(0, 48, 2)]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as c:
            return await asyncio.gather(*(c.post("/recommend", json={"user_id": u, "k": 10}) for u in users))

    for user, resp in zip(users, asyncio.run(main()), strict=True):
        assert resp.status_code == 200
        assert_same_ranking(resp.json(), *offline.top_k(offline.history[user], 10, True))
