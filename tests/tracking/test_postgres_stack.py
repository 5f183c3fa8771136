"""The batch pipeline through a real MLflow server backed by PostgreSQL, both on 127.0.0.1.

train -> evaluate -> export -> register with alias -> serve over HTTP and query; then a second run
exported and promoted while the service polls the alias, which picks it up. The server's REST API
(what its UI reads) lists the runs and the registered model with its alias, and PostgreSQL holds
them. Each step is the pipeline CLI's own `main` (in-process, except the service: its own process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipelines import evaluate as evaluate_cli
from pipelines import export as export_cli
from pipelines import promote as promote_cli
from pipelines import train as train_cli
from recsys.eval.per_user import read_run_table
from recsys.tracking.local_stack import Stack, StackError, free_port, local_stack, postgres_bindir

REPO = Path(__file__).resolve().parents[2]
MODEL = "stack-tiny"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """PostgreSQL + `mlflow server --backend-store-uri postgresql+psycopg://...` on free loopback ports."""
    try:
        postgres_bindir()
    except StackError as err:  # `make test` installs it (make stack-deps); only a machine that cannot gets here
        pytest.skip(f"PostgreSQL is not installed and could not be: {err}")
    # PostgreSQL runs as the `postgres` user under root: its directory must be reachable, unlike pytest's 0700 tmp
    base = Path(tempfile.mkdtemp(prefix="recsys-stack-test-"))
    base.chmod(0o755)
    try:
        with local_stack(base) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)  # root may remove the postgres user's files


def _wait_version(client: httpx.Client, version: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        try:
            resp = client.get("/readyz")
            seen = resp.json().get("model_version") if resp.status_code == 200 else resp.status_code
            if seen == version:
                return
        except httpx.TransportError as err:
            seen = type(err).__name__
        time.sleep(0.5)
    raise TimeoutError(f"the service did not serve version {version} within {timeout_s:.0f} s (last: {seen})")


@pytest.mark.slow
def test_pipeline_through_mlflow_server_on_postgres(
    stack: Stack, planted_experiment: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = stack.tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    exp = planted_experiment(max_epochs=2, num_threads=1)

    # train -> evaluate -> export (version 1, alias champion)
    assert train_cli.main(["--config", str(exp), "--results-json", str(tmp_path / "r1.json")]) == 0
    run1 = json.loads((tmp_path / "r1.json").read_text())["mlflow_run_id"]
    assert evaluate_cli.main(["--run-id", run1, "--tracking-uri", uri, "--log"]) == 0
    assert read_run_table(uri, run1, "eval_test").height > 0  # artifacts go through the server's proxy
    assert export_cli.main(["--run-id", run1, "--name", MODEL, "--alias", "champion", "--tracking-uri", uri]) == 0

    # the service follows the alias, polling every second
    port = free_port()
    env = {**os.environ, "RECSYS_SERVE_POLL_INTERVAL_S": "1"}
    cmd = [sys.executable, "-m", "pipelines.serve", "--model-uri", f"models:/{MODEL}@champion", "--port", str(port)]
    with (tmp_path / "serve.log").open("wb") as log:
        service = subprocess.Popen([*cmd, "--tracking-uri", uri], cwd=REPO, env=env, stdout=log, stderr=log)
    try:
        # while the service starts: a second run, registered without the alias (version 2)
        overrides = ["train.seed=1", "train.max_epochs=1"]
        assert train_cli.main(["--config", str(exp), "--results-json", str(tmp_path / "r2.json"), *overrides]) == 0
        run2 = json.loads((tmp_path / "r2.json").read_text())["mlflow_run_id"]
        assert export_cli.main(["--run-id", run2, "--name", MODEL, "--alias", "", "--tracking-uri", uri]) == 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            _wait_version(client, "1")
            resp = client.post("/recommend", json={"user_id": "u3", "k": 5})
            assert resp.status_code == 200, resp.text
            assert resp.json()["model_version"] == "1" and len(resp.json()["items"]) == 5

            # promoted: the service picks version 2 up at a poll
            assert client.get("/readyz").json()["model_version"] == "1"
            assert promote_cli.main(["--name", MODEL, "--version", "2", "--tracking-uri", uri]) == 0
            _wait_version(client, "2")
            resp = client.post("/recommend", json={"user_id": "u3", "k": 5})
            assert resp.status_code == 200 and resp.json()["model_version"] == "2"
    except BaseException as err:
        service.terminate()
        service.wait(30)
        err.add_note("the service's log:\n" + (tmp_path / "serve.log").read_text()[-3000:])
        raise
    service.terminate()
    assert service.wait(30) == 0  # a clean exit on SIGTERM
    assert promote_cli.main(["--name", MODEL, "--version", "9", "--tracking-uri", uri]) == 1

    # what the MLflow UI shows, through the server's REST API
    with httpx.Client(base_url=f"{uri}/api/2.0/mlflow", timeout=30.0) as api:
        experiment = api.get("/experiments/get-by-name", params={"experiment_name": "test"}).json()["experiment"]
        runs = api.post("/runs/search", json={"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
        listed = {r["info"]["run_id"]: r for r in runs.json()["runs"]}
        assert {run1, run2} <= set(listed)
        assert all(listed[r]["info"]["status"] == "FINISHED" for r in (run1, run2))
        model = api.get("/registered-models/get", params={"name": MODEL}).json()["registered_model"]
        assert model["aliases"] == [{"alias": "champion", "version": "2"}]
        versions = api.get("/model-versions/search", params={"filter": f"name='{MODEL}'"}).json()["model_versions"]
        assert sorted(v["version"] for v in versions) == ["1", "2"]
        v2_tags = next(v["tags"] for v in versions if v["version"] == "2")
        assert {"key": "source_run_id", "value": run2} in v2_tags

    # and they live in PostgreSQL
    import psycopg

    with psycopg.connect(stack.backend_uri.replace("postgresql+psycopg://", "postgresql://")) as conn:
        stored = {row[0] for row in conn.execute("SELECT run_uuid FROM runs")}
        alias = conn.execute("SELECT version FROM registered_model_aliases WHERE name = %s", (MODEL,)).fetchall()
    assert {run1, run2} <= stored and alias == [(2,)]
