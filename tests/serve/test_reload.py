"""Hot reload over real HTTP: a new version swaps in under load with no failed request; a broken one
is refused and the old version keeps serving."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_support import ThreadServer, TrainedRun

from recsys.retrieval.export import export_run
from recsys.retrieval.index import IndexConfig
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings
from recsys.tracking.registry import register_directory, run_experiment_and_tags, set_alias

NAME = "tiny-reload"
ADMIN = {"X-Admin-Token": "t0ken"}


@pytest.fixture(scope="module")
def server(trained_run: TrainedRun) -> Iterator[ThreadServer]:
    export_run(
        trained_run.run_id,
        tracking_uri=trained_run.tracking_uri,
        name=NAME,
        alias="champion",
        index_config=IndexConfig(kind="flat"),
    )
    settings = ServeSettings(
        model_uri=f"models:/{NAME}@champion", tracking_uri=trained_run.tracking_uri, admin_token="t0ken"
    )
    with ThreadServer(create_app(settings)) as srv:
        yield srv


class Load:
    """Workers posting /recommend in a closed loop, recording every status and model version."""

    def __init__(self, url: str, workers: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[int, str | None]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(workers)]

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            i = 0
            while not self.stop.is_set():
                resp = client.post("/recommend", json={"user_id": f"user{(worker * 11 + i) % 48}", "k": 10})
                version = resp.json().get("model_version") if resp.status_code == 200 else None
                with self.lock:
                    self.results.append((resp.status_code, version))
                i += 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _wait_reload(client: httpx.Client, timeout_s: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get("/admin/reload", headers=ADMIN).json()
        if status["state"] != "running":
            return status
        time.sleep(0.1)
    raise TimeoutError("reload did not finish")


def test_reload_during_requests_keeps_serving(server: ThreadServer, trained_run: TrainedRun, tmp_path: Path) -> None:
    uri = trained_run.tracking_uri
    with httpx.Client(base_url=server.url, timeout=30.0) as client, Load(server.url) as load:
        time.sleep(1.0)
        v2 = export_run(
            trained_run.run_id,
            tracking_uri=uri,
            name=NAME,
            alias="champion",
            index_config=IndexConfig(kind="ivf_flat", nlist=4),
        )
        resp = client.post("/admin/reload", headers=ADMIN)
        assert resp.status_code == 202 and resp.json()["state"] == "running"
        status = _wait_reload(client)
        assert status["state"] == "succeeded" and status["model_version"] == v2.version == "2", status
        time.sleep(1.0)

        # a broken version: the alias points at it, the reload fails, version 2 keeps serving
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "bundle.json").write_text(json.dumps({"name": "oops"}))
        experiment_id, _ = run_experiment_and_tags(uri, trained_run.run_id)
        v3 = register_directory(uri, broken, NAME, experiment_id=experiment_id, alias="champion")
        resp = client.post("/admin/reload", params={"wait": True}, headers=ADMIN)
        assert resp.status_code == 200
        failed = resp.json()
        assert failed["state"] == "failed" and failed["target_version"] == v3.version == "3"
        assert failed["model_version"] == "2" and "bundle.json" in failed["error"]
        assert client.get("/readyz").json()["model_version"] == "2"
        time.sleep(0.5)

        set_alias(uri, NAME, "champion", "2")
        unchanged = client.post("/admin/reload", params={"wait": True}, headers=ADMIN).json()
        assert unchanged["state"] == "unchanged" and unchanged["model_version"] == "2"
    statuses = [s for s, _ in load.results]
    versions = [v for _, v in load.results]
    assert len(statuses) > 20
    assert set(statuses) == {200}, f"failed requests during reload: {[s for s in statuses if s != 200]}"
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}
    metrics = httpx.get(f"{server.url}/metrics").text
    for outcome in ("succeeded", "failed", "unchanged"):
        assert f'recsys_model_reloads_total{{outcome="{outcome}"}} 1.0' in metrics
    assert f'recsys_model_info{{name="{NAME}",version="2"}} 1.0' in metrics
