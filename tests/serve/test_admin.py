"""The admin surface is locked by default: off without a token, the token checked in constant time,
and what a client reads about a failed reload holds no paths or URIs."""

from __future__ import annotations

import hashlib
import hmac
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import TrainedRun

from recsys.retrieval.bundle import ITEMS_FILE
from recsys.retrieval.export import current_version
from recsys.serve import auth
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings
from recsys.serve.state import public_reason
from recsys.tracking.registry import RegistryError, resolve_model_uri

TOKEN = "a-long-admin-secret"


def _client(bundle: Path, **settings: object) -> TestClient:
    return TestClient(create_app(ServeSettings(model_uri=str(bundle), **settings)))  # type: ignore[arg-type]


def test_admin_routes_are_off_without_a_token(local_bundle: Path) -> None:
    with _client(local_bundle) as client:
        for method in ("GET", "POST"):
            resp = client.request(method, "/admin/reload", params={"force": True, "wait": True})
            assert resp.status_code == 404
        assert not any(path.startswith("/admin") for path in client.get("/openapi.json").json()["paths"])
        assert client.get("/readyz").status_code == 200  # the rest serves as usual


def test_admin_routes_need_the_exact_token(local_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    with _client(local_bundle, admin_token=TOKEN) as client:
        for headers in ({}, {"X-Admin-Token": ""}, {"X-Admin-Token": "wrong"}, {"X-Admin-Token": TOKEN + "x"}):
            resp = client.post("/admin/reload", params={"force": True}, headers=headers)
            assert resp.status_code == 401 and resp.json() == {
                "detail": "admin endpoints need a valid X-Admin-Token header"
            }
        # a page in a browser can post text/plain without a preflight, but cannot add the header
        resp = client.post("/admin/reload?force=true&wait=true", content=b"x", headers={"content-type": "text/plain"})
        assert resp.status_code == 401
        assert client.get("/admin/reload", headers={"X-Admin-Token": TOKEN}).status_code == 200
    assert compared and all(b == TOKEN.encode() for _, b in compared)  # every check went through compare_digest
    security = _client(local_bundle, admin_token=TOKEN).get("/openapi.json").json()["paths"]["/admin/reload"]
    assert security["post"]["security"] == [{"AdminToken": []}]


def test_the_dependency_locks_any_route(local_bundle: Path) -> None:
    """A route elsewhere joins the admin surface with `dependencies=[AdminAuth]`."""
    for token, expected in ((None, 404), (TOKEN, 401)):
        app = create_app(ServeSettings(model_uri=str(local_bundle), admin_token=token))  # type: ignore[arg-type]

        @app.post("/admin/probe", dependencies=[auth.AdminAuth])
        async def probe() -> dict[str, str]:
            return {"locked": "no"}

        with TestClient(app) as client:
            assert client.post("/admin/probe").status_code == expected
            if token:
                resp = client.post("/admin/probe", headers={"X-Admin-Token": token})
                assert resp.status_code == 200 and resp.json() == {"locked": "no"}


def test_a_failed_reload_tells_clients_no_paths(local_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(local_bundle, bundle)
    with _client(bundle, admin_token=TOKEN) as client:
        (bundle / ITEMS_FILE).write_bytes(b"not a parquet file")
        resp = client.post("/admin/reload", params={"force": True, "wait": True}, headers={"X-Admin-Token": TOKEN})
        status = resp.json()
        assert status["state"] == "failed" and status["model_version"] == "local"
        assert status["error"].startswith("bundle file items.parquet: has 18 bytes")
        assert str(tmp_path) not in resp.text and "/" not in status["error"].replace("model/", "")


def test_registry_errors_keep_their_uris_for_the_log_only(tmp_path: Path) -> None:
    typo = f"sqlite:///{tmp_path}/mlfow.db"
    with pytest.raises(RegistryError) as caught:
        resolve_model_uri(typo, "models:/m@champion")
    assert str(tmp_path) in str(caught.value)  # the operator's message names the path
    assert public_reason(caught.value) == "the tracking database does not exist"
    assert not (tmp_path / "mlfow.db").exists()  # and no empty database was created
    assert "models:/" not in public_reason(RegistryError("models:/x@y at http://h:5000", public="p"))
    assert public_reason(ValueError("/secret/path")) == (
        "ValueError while loading the model version (details in the server log)"
    )


def test_serving_never_writes_to_the_tracking_database(trained_run: TrainedRun, registered: str) -> None:
    """Start-up, a forced reload and version checks read the SQLite store, opened read-only."""
    db = Path(trained_run.tracking_uri.removeprefix("sqlite:///"))
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns)
    settings = ServeSettings(model_uri=registered, tracking_uri=trained_run.tracking_uri, admin_token=TOKEN)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as client:
        resp = client.post("/admin/reload", params={"force": True, "wait": True}, headers={"X-Admin-Token": TOKEN})
        assert resp.json()["state"] == "succeeded"
        assert client.post("/recommend", json={"user_id": "user1"}).status_code == 200
    assert current_version(registered, trained_run.tracking_uri) == "1"
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
