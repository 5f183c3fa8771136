"""Training on several processes (Lightning DDP, gloo on CPU): one MLflow run, logged from rank 0, with the
metrics of a one-process run of the same global batch; a two-process run resumes with one process.

Both tests launch `pipelines.train` with `train.devices=2` (Lightning starts rank 1 by re-running the
command); torchrun and SLURM launch the same way across machines (docs/scale.md, "Training on several machines").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from recsys.tracking.mlflow import (
    TrackingError,
    check_tracking_uri,
    download_run_artifacts,
    metric_history,
    read_run,
    runs_table,
)
from recsys.train.experiment import load_experiment
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[2]
WriteExperiment = Callable[..., Path]

# dropout off: the two runs then differ only in how the global batch's mean loss is formed (DDP averages
# the two ranks' means; ranks hold different numbers of target positions) and in float summation order
NO_DROPOUT = {
    "name": "sasrec",
    "params": {"max_len": 8, "hidden": 16, "n_heads": 2, "dropout": 0.0, "attn_dropout": 0.0},
}
# ranking metrics of a 50-user test split move in steps of ~1/50 per user; two runs whose weights differ
# in the last digits may swap the order of two near-equal items for a user or two
TOLERANCE = 0.03
COMPARED = ("val/ndcg@10", "test/ndcg@10", "test/hr@10", "test/mrr@20")


def _train_cli(*args: str, new_session: bool = False) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "pipelines.train", *args, "train.num_threads=1"]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=new_session
    )


def _copy(path: Path, name: str) -> Path:
    return Path(shutil.copy(path, path.with_name(name)))


@pytest.mark.slow
def test_two_processes_log_one_run_with_the_one_process_metrics(
    tmp_path: Path, planted_experiment: WriteExperiment
) -> None:
    common = {"model": NO_DROPOUT, "max_epochs": 3, "accelerator": "cpu", "length_pool": 0}
    one = _copy(planted_experiment(batch_size=32, **common), "one.yaml")
    two = _copy(planted_experiment(batch_size=16, devices=2, strategy="ddp", **common), "two.yaml")  # 2 x 16
    uri_two = f"sqlite:///{tmp_path}/two.db"
    check_tracking_uri(uri_two)
    proc = _train_cli("--config", str(two), f"tracking.tracking_uri={uri_two}")
    # the one-process run, in this process meanwhile
    uri_one = f"sqlite:///{tmp_path}/one.db"
    outcome = train_experiment(load_experiment(one), tracking_uri=uri_one, command="test")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert outcome is not None

    runs = runs_table(uri_two, "test")
    assert len(runs) == 1, runs  # rank 1 created no run of its own
    run = read_run(uri_two, runs["run_id"].iloc[0])
    assert run["status"] == "FINISHED" and f"mlflow run: {run['run_id']}" in stdout
    # as many logged values, at the same steps, as the one-process run: rank 0 logs, rank 1 does not
    for key in ("val/ndcg@10", "train/loss"):
        steps = metric_history(uri_two, run["run_id"], key)["step"].tolist()
        assert steps == metric_history(uri_one, outcome.run_id, key)["step"].tolist(), key
    diffs = {key: run["metrics"][key] - outcome.metrics[key] for key in COMPARED}
    logging.getLogger(__name__).info("two processes minus one process: %s", diffs)
    for key in COMPARED:
        assert abs(diffs[key]) <= TOLERANCE, (key, run["metrics"][key], outcome.metrics[key])


@pytest.mark.slow
def test_a_two_process_run_resumes_with_one_process(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    check_tracking_uri(uri)  # the store's tables exist before two processes use it
    exp = planted_experiment(
        model=NO_DROPOUT,
        max_epochs=10_000,
        patience=10_000,
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        batch_size=16,
    )
    proc = _train_cli("--config", str(exp), f"tracking.tracking_uri={uri}", new_session=True)
    last = None
    try:  # kill both ranks once an epoch is checkpointed
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and last is None:
            time.sleep(0.2)
            try:
                runs = runs_table(uri, "test")
            except TrackingError:  # the experiment is not created yet
                continue
            tags = read_run(uri, runs["run_id"].iloc[0])["tags"] if len(runs) else {}
            if "checkpoint_dir" in tags and (Path(tags["checkpoint_dir"]) / "last.ckpt").is_file():
                last = Path(tags["checkpoint_dir"]) / "last.ckpt"
        assert last is not None, proc.stderr.read()[-3000:] if proc.poll() is not None else "no last.ckpt in 240 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the rank it started
        proc.communicate()
    assert len(runs) == 1
    run_id = runs["run_id"].iloc[0]
    saved_epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]

    # one process, the same global batch, two more epochs
    cfg = load_experiment(
        exp, ["train.devices=1", "train.strategy=auto", "train.batch_size=32", f"train.max_epochs={saved_epoch + 2}"]
    )
    outcome = train_experiment(cfg, tracking_uri=uri, command="test", resume_run=run_id)
    assert outcome is not None and outcome.run_id == run_id
    assert len(runs_table(uri, "test")) == 1
    run = read_run(uri, run_id)
    assert run["status"] == "FINISHED" and "test/ndcg@10" in run["metrics"]
    result = json.loads(download_run_artifacts(uri, run_id, "result.json", tmp_path / "dl").read_text())
    assert result["resumed_after_epoch"] == saved_epoch
    assert result["epochs"] == saved_epoch + 2
