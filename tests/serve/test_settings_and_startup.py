"""Settings from the environment, and an app whose model is not loaded yet (no lifespan run)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from recsys.serve.app import _poll, create_app
from recsys.serve.settings import ServeSettings


def test_settings_from_env_with_overrides() -> None:
    env = {
        "RECSYS_SERVE_MODEL_URI": "models:/m@champion",
        "RECSYS_SERVE_MAX_K": "50",
        "MLFLOW_TRACKING_URI": "sqlite:///x.db",
        "UNRELATED": "1",
    }
    s = ServeSettings.from_env(env, max_body_bytes=100, history_len=None)
    assert (s.model_uri, s.max_k, s.tracking_uri, s.max_body_bytes, s.history_len) == (
        "models:/m@champion",
        50,
        "sqlite:///x.db",
        100,
        None,
    )
    with pytest.raises(ValidationError, match="max_k"):
        ServeSettings.from_env({"RECSYS_SERVE_MODEL_URI": "x", "RECSYS_SERVE_MAX_K": "0"})
    with pytest.raises(ValidationError, match="model_uri"):
        ServeSettings.from_env({})


def test_not_ready_until_a_model_is_loaded() -> None:
    client = TestClient(create_app(ServeSettings(model_uri="models:/m@champion")))  # lifespan not started
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    resp = client.post("/recommend", json={"user_id": "u"})
    assert resp.status_code == 503 and resp.json() == {"detail": "no model loaded yet"}


def test_poll_asks_for_a_reload_every_interval() -> None:
    calls: list[bool] = []

    class FakeHolder:
        def start_reload(self, *, force: bool = False) -> bool:
            calls.append(force)
            return True

    async def main() -> None:
        task = asyncio.create_task(_poll(FakeHolder(), 0.01))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        task.cancel()

    asyncio.run(main())
    assert len(calls) >= 3 and not any(calls)  # follows the alias: reloads only when the version changed
