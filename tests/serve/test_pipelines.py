"""The export / serve / demo command lines: clear one-line failures, a working demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serve_support import REPO_ROOT_DIR, TrainedRun, free_port

from pipelines.serve_demo import run_demo_query
from recsys.tracking.mlflow import download_run_artifacts


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO_ROOT_DIR, capture_output=True, text=True, timeout=timeout
    )


def test_export_cli_registers_and_prints_the_uri(trained_run: TrainedRun) -> None:
    uri = trained_run.tracking_uri
    cmd = ["pipelines.export", "--run-id", trained_run.run_id, "--tracking-uri", uri, "--name", "tiny-cli"]
    done = _run(*cmd, "--index", "ivf_flat", "--nlist", "4")
    assert done.returncode == 0, done.stderr
    assert "registered models:/tiny-cli/1 (alias champion: models:/tiny-cli@champion)" in done.stdout
    bad = _run("pipelines.export", "--run-id", "f" * 32, "--tracking-uri", uri)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: run 'ffff")


def test_evaluate_cli_scores_the_run_whole_and_without_the_newest_item(trained_run: TrainedRun) -> None:
    cmd = ["pipelines.evaluate", "--run-id", trained_run.run_id, "--tracking-uri", trained_run.tracking_uri]
    whole, ablated = _run(*cmd, "--split", "val"), _run(*cmd, "--split", "val", "--drop-newest")
    assert whole.returncode == 0 and ablated.returncode == 0, whole.stderr + ablated.stderr
    whole_out, ablated_out = json.loads(whole.stdout), json.loads(ablated.stdout)
    assert (
        whole_out["protocol"]["history"] == "whole" and ablated_out["protocol"]["history"] == "without its newest item"
    )
    assert whole_out["protocol"]["n_users"] == ablated_out["protocol"]["n_users"] > 0
    # the whole history rescored from the logged model equals what training recorded for its best checkpoint
    trained = json.loads(
        download_run_artifacts(trained_run.tracking_uri, trained_run.run_id, "result.json").read_text()
    )
    assert whole_out["metrics"]["val/ndcg@10"] == pytest.approx(trained["metrics"]["val/ndcg@10"], abs=1e-6)
    assert ablated_out["metrics"]["val/ndcg@10"] != whole_out["metrics"]["val/ndcg@10"]  # the ablation changed it
    bad = _run(*cmd[:2], "f" * 32, "--tracking-uri", trained_run.tracking_uri)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error:")


@pytest.mark.parametrize("case", ["unknown_alias", "unreachable_registry", "not_a_uri", "sqlite_typo"])
def test_serve_fails_fast_with_one_line(case: str, trained_run: TrainedRun, registered: str) -> None:
    uri, model_uri = trained_run.tracking_uri, registered
    typo = trained_run.root / "mlfow.db"
    if case == "unknown_alias":
        model_uri = "models:/tiny@nope"
    elif case == "unreachable_registry":
        uri = f"http://127.0.0.1:{free_port()}"
    elif case == "sqlite_typo":
        uri = f"sqlite:///{typo}"
    else:
        model_uri = "tiny@champion"
    done = _run("pipelines.serve", "--model-uri", model_uri, "--tracking-uri", uri, "--port", str(free_port()))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot load"), done.stderr
    assert not typo.exists()  # a mistyped SQLite path is an error, never a new empty database


def test_demo_query_prints_top10_with_titles(
    trained_run: TrainedRun, registered: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_demo_query(registered, trained_run.tracking_uri, "user5")
    out = capsys.readouterr().out
    assert out.startswith("top-10 for user user5 from tiny version")
    rows = out.strip().splitlines()[1:]
    assert len(rows) == 10 and all("Title of item" in r for r in rows)
