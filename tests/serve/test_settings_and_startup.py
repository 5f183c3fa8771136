"""Settings from the environment, and an app whose model is not loaded yet (no lifespan run)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from recsys.serve.app import _poll, create_app
from recsys.serve.schemas import ReloadStatus
from recsys.serve.settings import ServeSettings, body_bytes_needed


def test_settings_from_env_with_overrides() -> None:
    env = {
        "RECSYS_SERVE_MODEL_URI": "models:/m@champion",
        "RECSYS_SERVE_MAX_K": "50",
        "MLFLOW_TRACKING_URI": "sqlite:///x.db",
        "UNRELATED": "1",
    }
    s = ServeSettings.from_env(env, max_history_items=3, max_id_chars=10, max_body_bytes=1000, history_len=None)
    assert (s.model_uri, s.max_k, s.tracking_uri, s.max_body_bytes, s.history_len) == (
        "models:/m@champion",
        50,
        "sqlite:///x.db",
        1000,
        None,
    )
    with pytest.raises(ValidationError, match="max_k"):
        ServeSettings.from_env({"RECSYS_SERVE_MODEL_URI": "x", "RECSYS_SERVE_MAX_K": "0"})
    with pytest.raises(ValidationError, match="model_uri"):
        ServeSettings.from_env({})


def test_limits_fit_together() -> None:
    """The body limit holds a request at every other limit; by default it is derived from them."""
    s = ServeSettings(model_uri="x")
    assert s.body_limit == body_bytes_needed(s.max_history_items, s.max_id_chars)
    with pytest.raises(ValidationError, match="max_body_bytes=65536 cannot hold a request"):
        ServeSettings(model_uri="x", max_body_bytes=65536)  # 1000 ids of 64 characters need more
    ServeSettings(model_uri="x", max_body_bytes=65536, max_history_items=500, max_id_chars=8)


def test_admin_token_is_off_or_a_real_secret() -> None:
    assert ServeSettings(model_uri="x").admin_token is None
    assert ServeSettings.from_env({"RECSYS_SERVE_ADMIN_TOKEN": ""}, model_uri="x").admin_token is None  # = unset
    with pytest.raises(ValidationError, match="empty"):
        ServeSettings(model_uri="x", admin_token="")  # type: ignore[arg-type]
    for bad, needle in [("   ", "empty"), (" tok", "whitespace"), ("tök", "ASCII")]:
        with pytest.raises(ValidationError, match=needle):
            ServeSettings.from_env({"RECSYS_SERVE_ADMIN_TOKEN": bad}, model_uri="x")
    s = ServeSettings.from_env({"RECSYS_SERVE_ADMIN_TOKEN": "s3cret"}, model_uri="x")
    assert "s3cret" not in repr(s) and s.admin_token is not None
    assert s.admin_token.get_secret_value() == "s3cret"


def test_not_ready_until_a_model_is_loaded() -> None:
    client = TestClient(create_app(ServeSettings(model_uri="models:/m@champion")))  # lifespan not started
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    resp = client.post("/recommend", json={"user_id": "u"})
    assert resp.status_code == 503 and resp.json() == {"detail": "no model loaded yet"}


class FakeHolder:
    """Counts reload requests; each reload ends in the given states, in turn."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[float, bool]] = []

    def start_reload(self, *, force: bool = False) -> bool:
        self.calls.append((time.monotonic(), force))
        return True

    def wait(self, timeout_s: float | None = None) -> None:
        pass

    def status(self) -> ReloadStatus:
        state = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        return ReloadStatus(state=state, model_version="1")  # type: ignore[arg-type]


def _poll_for(holder: FakeHolder, seconds: float, interval_s: float, max_interval_s: float) -> None:
    async def main() -> None:
        task = asyncio.create_task(_poll(holder, interval_s, max_interval_s))  # type: ignore[arg-type]
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(main())


def test_poll_asks_for_a_reload_every_interval() -> None:
    holder = FakeHolder(["unchanged"])
    _poll_for(holder, 0.2, 0.01, 1.0)
    assert len(holder.calls) >= 3 and not any(force for _, force in holder.calls)  # follows the alias


def test_poll_backs_off_while_reloads_fail_and_recovers() -> None:
    """Failed reloads double the wait (0.02, 0.04, 0.08, capped at 0.08); a success restores the interval."""
    holder = FakeHolder(["failed"] * 4 + ["succeeded"] * 100)
    _poll_for(holder, 0.6, 0.02, 0.08)
    gaps = [b - a for (a, _), (b, _) in zip(holder.calls, holder.calls[1:], strict=False)]
    assert gaps[0] >= 0.035 and gaps[1] >= 0.07 and gaps[2] >= 0.07  # 2x, 4x (capped), capped
    assert gaps[2] < 0.3  # the cap holds (generous for a loaded machine)
    assert min(gaps[4:]) < 0.06  # back to the interval after the success
