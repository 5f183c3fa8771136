"""Every load failure is one clear line: at start the serve command exits 2 naming the bundle file and
what is wrong; at reload the old version keeps serving and the status and log give the reason."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_support import REPO_ROOT_DIR, free_port

from recsys.retrieval.bundle import BUNDLE_FILE
from recsys.serve.app import create_app
from recsys.serve.settings import ServeSettings


def _serve(model_uri: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", model_uri, "--port", str(free_port())]
    return subprocess.run(cmd, cwd=REPO_ROOT_DIR, capture_output=True, text=True, timeout=180)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.slow
def test_a_corrupted_or_truncated_file_stops_the_start_with_one_line(local_bundle: Path, tmp_path: Path) -> None:
    corrupted = tmp_path / "corrupted"
    shutil.copytree(local_bundle, corrupted)
    data = (corrupted / "items.parquet").read_bytes()
    (corrupted / "items.parquet").write_bytes(data[:100] + bytes(range(256)) * 2 + data[612:])  # random-ish, same size
    line = _one_line(_serve(str(corrupted)))
    assert line.startswith(f"error: cannot load {corrupted}: bundle file items.parquet: checksum mismatch"), line

    # an older bundle without checksums: the parser's failure, attributed to its file
    truncated = tmp_path / "truncated"
    shutil.copytree(local_bundle, truncated)
    meta = json.loads((truncated / BUNDLE_FILE).read_text())
    meta.pop("files")
    meta["format"] = 1
    (truncated / BUNDLE_FILE).write_text(json.dumps(meta))
    state = truncated / "model" / "state_dict.pt"
    state.write_bytes(state.read_bytes()[:1000])
    line = _one_line(_serve(str(truncated)))
    assert "bundle file model/state_dict.pt: cannot be read" in line, line


def test_a_corrupted_reload_keeps_the_old_version_serving(
    local_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(local_bundle, bundle)
    token = {"X-Admin-Token": "reload-test-token"}
    app = create_app(ServeSettings(model_uri=str(bundle), admin_token="reload-test-token"))  # type: ignore[arg-type]
    with TestClient(app) as client, caplog.at_level(logging.WARNING):
        before = client.post("/recommend", json={"user_id": "user1", "k": 5}).json()
        state = bundle / "model" / "state_dict.pt"
        state.write_bytes(state.read_bytes()[:-10])
        status = client.post("/admin/reload", params={"force": True, "wait": True}, headers=token).json()
        assert status["state"] == "failed" and status["model_version"] == "local"
        assert status["error"].startswith("bundle file model/state_dict.pt: has ") and "truncated" in status["error"]
        assert client.post("/recommend", json={"user_id": "user1", "k": 5}).json() == before  # the old model serves
        assert "reload of" in caplog.text and "model/state_dict.pt" in caplog.text  # the log has it too
        # the same failure again is a WARNING, not a new ERROR
        client.post("/admin/reload", params={"force": True, "wait": True}, headers=token)
        errors = [r for r in caplog.records if r.name == "recsys.serve.state" and r.levelno == logging.ERROR]
        assert len(errors) == 1 and "still failing (2 in a row)" in caplog.text
        shutil.rmtree(bundle)
        shutil.copytree(local_bundle, bundle)  # repaired: the next reload succeeds
        status = client.post("/admin/reload", params={"force": True, "wait": True}, headers=token).json()
        assert status["state"] == "succeeded" and status["error"] is None
