"""The OpenAPI document is the contract: schemathesis runs every check against the real server
(`python -m pipelines.serve` on 127.0.0.1) and the server must never answer 5xx or anything the
document does not declare."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serve_support import REPO_ROOT_DIR, free_port

from pipelines.serve_demo import wait_ready

TOKEN = "contract-test-token"
MIN_REQUESTS = 2000
# limits small enough that generated bodies stay small (fast to generate), stated in the document
LIMITS = {"RECSYS_SERVE_MAX_HISTORY_ITEMS": "50", "RECSYS_SERVE_MAX_ID_CHARS": "16", "RECSYS_SERVE_MAX_K": "100"}
# schemathesis's own list of statuses that reject invalid data, plus 413: an invalid body can also be over
# max_body_bytes, and the document declares 413 Content Too Large on every route (seed 377590508 found one)
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]


def _requests_by_status(base_url: str) -> dict[str, float]:
    """Requests the server answered, by status, from its own Prometheus counters (the schema fetch aside)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for match in re.finditer(r"^recsys_http_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if labels["route"] != "/openapi.json":
            out[labels["status"]] = out.get(labels["status"], 0.0) + float(match[2])
    return out


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_departure_from_the_schema(
    local_bundle: Path, tmp_path: Path
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RECSYS_SERVE_ADMIN_TOKEN": TOKEN, **LIMITS}
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", str(local_bundle), "--port", str(port)]
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen([*cmd, "--log-level", "warning"], cwd=REPO_ROOT_DIR, env=env, stderr=log)
    try:
        wait_ready(base_url, server, timeout_s=180)
        seed = int(os.environ.get("RECSYS_SCHEMATHESIS_SEED") or random.SystemRandom().randrange(2**31))
        config = tmp_path / "schemathesis.toml"
        config.write_text(f"[checks.negative_data_rejection]\nexpected-statuses = {REJECTIONS!r}\n")
        run = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "all",
        ]
        run += ["--header", f"X-Admin-Token: {TOKEN}", "--max-examples", "1000", "--seed", str(seed)]
        run += ["--workers", "1", "--no-shrink", "--generation-database", "none", "--no-color"]
        done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        report = f"schemathesis seed {seed} (RECSYS_SCHEMATHESIS_SEED={seed} repeats it):\n{done.stdout[-6000:]}"
        assert done.returncode == 0, report
        assert "No issues found" in done.stdout, report
        by_status = _requests_by_status(base_url)
        assert sum(by_status.values()) >= MIN_REQUESTS, (by_status, report)
        assert not [s for s in by_status if s.startswith("5")], (by_status, report)
        assert {"200", "202", "401", "404", "405", "422"} <= set(by_status), by_status  # the paths were reached
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0  # a clean stop
