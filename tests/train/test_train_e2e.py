"""End-to-end training runs on the planted dataset, tracked in a temporary MLflow store."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from recsys.config import to_dict
from recsys.models.sasrec import SASRecConfig
from recsys.registry import build_model
from recsys.tracking.mlflow import TrackingError, download_run_artifacts, metric_history, read_run
from recsys.train.callbacks import MODEL_SPEC_KEY
from recsys.train.experiment import EvalConfig, TrainConfig, load_experiment
from recsys.train.module import NonFiniteLossError, RecModule
from recsys.train.run import train_experiment

REPO = Path(__file__).resolve().parents[2]
WriteExperiment = Callable[..., Path]  # the `planted_experiment` fixture


def _run_cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.train", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_training_run_is_tracked_and_read_back(
    tmp_path: Path, planted_experiment: WriteExperiment, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(planted_experiment())
    outcome = train_experiment(cfg, tracking_uri=uri, command="test")
    assert outcome is not None
    run = read_run(uri, outcome.run_id)
    assert run["status"] == "FINISHED"
    for key in ("val/ndcg@10", "test/ndcg@10", "test/hr@20", "test/coverage@10", "train/loss"):
        assert key in run["metrics"], key
    # not the returned metrics against the same call's logged ones: the logged model, scored again by
    # the evaluate command (its own loader and ranking, no Lightning), gives the returned figures
    from pipelines import evaluate

    assert evaluate.main(["--run-id", outcome.run_id, "--tracking-uri", uri, "--split", "test"]) == 0
    rescored = json.loads(capsys.readouterr().out)["metrics"]
    for key in ("test/ndcg@10", "test/hr@10", "test/mrr@20"):
        assert rescored[key] == pytest.approx(outcome.metrics[key], abs=1e-6), key
    assert run["params"]["model.name"] == "sasrec"
    assert run["params"]["train.lr"] == "0.005"
    # the resolved config: model defaults the experiment left out, and the data config it names
    assert run["params"]["model.params.n_layers"] == "2" and run["params"]["model.params.attn_dropout"] == "0.5"
    assert run["params"]["data_config.name"] == "planted"
    logged = yaml.safe_load(download_run_artifacts(uri, outcome.run_id, "config.yaml", tmp_path / "dl").read_text())
    assert logged == outcome.record["config"]
    assert logged["model"]["params"] == to_dict(SASRecConfig(**cfg.model.params))
    assert logged["data_config"]["output_dir"] == str(Path(cfg.data).parent / "processed")
    assert Path(run["tags"]["data_dir"]).is_dir()
    model_dir = download_run_artifacts(uri, outcome.run_id, "model", tmp_path / "dl")
    assert json.loads((model_dir / "model.json").read_text())["config"] == logged["model"]["params"]
    emb = download_run_artifacts(uri, outcome.run_id, "embeddings/item_embeddings.npy", tmp_path / "dl")
    assert emb.is_file()
    assert outcome.record["protocol"]["full_ranking"] is True
    assert outcome.record["protocol"]["exclude_seen"] is True


def test_missing_processed_data_names_the_etl_command_and_prepare_runs_it(
    tmp_path: Path, planted_dataset: Path, planted_experiment: WriteExperiment
) -> None:
    data = yaml.safe_load((planted_dataset / "data.yaml").read_text())
    data["output_dir"] = str(tmp_path / "not_yet")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(data))
    exp = planted_experiment(max_epochs=1)
    cfg = yaml.safe_load(exp.read_text())
    exp.write_text(yaml.safe_dump(cfg | {"data": str(tmp_path / "data.yaml")}))
    uri = f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(FileNotFoundError, match="not_yet") as err:  # training never runs the ETL by itself
        train_experiment(load_experiment(exp), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert f"python -m pipelines.prepare_data --config {tmp_path / 'data.yaml'}" in str(err.value)
    proc = _run_cli("--config", str(exp), uri)
    assert proc.returncode == 1 and "pipelines.prepare_data" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run_cli("--config", str(exp), uri, "--prepare")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "not_yet" / "meta.json").is_file() and "mlflow run:" in proc.stdout


@pytest.mark.parametrize(
    ("train", "reason"),
    [
        ({"max_epochs": 2}, "max_epochs"),
        ({"max_epochs": 50, "max_minutes": 1e-5}, "time_limit"),
        # an lr too small to move NDCG: no new best after the first check, patience 1 stops the next
        ({"max_epochs": 50, "lr": 1e-12, "patience": 1, "lr_decay": 1.0}, "early_stopping"),
    ],
)
def test_the_record_says_why_the_fit_stopped(
    tmp_path: Path, planted_experiment: WriteExperiment, train: dict[str, float], reason: str
) -> None:
    cfg = load_experiment(planted_experiment(**train))
    outcome = train_experiment(cfg, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", command="test")
    assert outcome is not None
    assert outcome.record["stopped_by"] == reason
    assert outcome.record["epochs"] < 50


def test_epoch_log_reports_validation_only_on_epochs_that_ran_it(
    tmp_path: Path, planted_experiment: WriteExperiment, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_experiment(planted_experiment(max_epochs=3, val_every=2))
    with caplog.at_level(logging.INFO, logger="recsys.train.callbacks"):
        train_experiment(cfg, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", command="test")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3, lines
    assert lines[0].endswith("val/ndcg@10 not checked"), lines[0]
    assert re.search(r"val/ndcg@10 \d\.\d{4}$", lines[1]), lines[1]
    assert lines[2].endswith("val/ndcg@10 not checked"), lines[2]  # not epoch 1's value again


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp = planted_experiment(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1)
    proc = _run_cli("--config", str(exp), f"tracking.tracking_uri={uri}", "train.num_threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlflow run:" in proc.stdout
    run_id = proc.stdout.split("mlflow run: ")[1].split()[0]
    run = read_run(uri, run_id)
    assert run["status"] == "FINISHED"
    assert "test/ndcg@10" in run["metrics"]


def test_unreachable_tracking_uri_fails_before_training(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    exp = planted_experiment()
    proc = _run_cli("--config", str(exp), "tracking.tracking_uri=http://127.0.0.1:9", timeout=120)
    assert proc.returncode == 1
    assert "cannot be reached" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Epoch" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=nope", "unknown model 'nope'"),
        ("train.lrr=0.1", "unknown config key 'train.lrr'"),
        ("train.loss=hinge", "loss='hinge'"),
        ("train.batch_size=0", "batch_size must be >= 1"),
    ],
)
def test_config_errors_are_one_line(
    tmp_path: Path, planted_experiment: WriteExperiment, override: str, message: str
) -> None:
    exp = planted_experiment()
    proc = _run_cli("--config", str(exp), override, f"tracking.tracking_uri=sqlite:///{tmp_path}/m.db", timeout=120)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_too_short_dataset_is_refused(tmp_path: Path) -> None:
    import polars as pl

    from recsys.data.datamodule import SequenceDataModule
    from recsys.data.processed import write_processed

    seqs = pl.DataFrame({"user_idx": [0], "items": [[1, 2]], "timestamps": [[1, 2]]})
    items = pl.DataFrame({"item_idx": [1, 2], "raw_id": ["a", "b"], "text": [None, None]})
    users = pl.DataFrame({"user_idx": [0], "raw_id": ["u"]})
    inter = pl.DataFrame({"user_idx": [0, 0], "item_idx": [1, 2], "timestamp": [1, 2]})
    meta = {"n_users": 1, "n_items": 2, "n_interactions": 2, "schema_version": 1}
    write_processed(tmp_path, interactions=inter, sequences=seqs, items=items, users=users, meta=meta)
    dm = SequenceDataModule(tmp_path, max_len=5, batch_size=4, eval_batch_size=4, seed=0)
    with pytest.raises(ValueError, match="too short for leave_one_out"):
        dm.setup()


def test_non_finite_loss_names_the_step() -> None:
    model = build_model("sasrec", {"hidden": 8, "n_heads": 2, "max_len": 4}, 10)
    with torch.no_grad():
        model.item_embeddings()[1:].fill_(float("nan"))
    module = RecModule(model, TrainConfig(), EvalConfig())
    window = torch.tensor([[0, 1, 2, 3, 4]])
    with pytest.raises(NonFiniteLossError, match="step 0"):
        module._common_step(__import__("recsys.data.datasets", fromlist=["TrainBatch"]).TrainBatch(window), "train")


def test_finalize_a_stopped_run_from_its_checkpoint(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(planted_experiment(max_epochs=1))
    outcome = train_experiment(cfg, tracking_uri=uri)
    assert outcome is not None
    model = build_model("sasrec", cfg.model.params, 40)
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 0}, ckpt)
    final = train_experiment(cfg, finalize_run=outcome.run_id, checkpoint=ckpt, tracking_uri=uri)
    assert final is not None
    assert final.record["interrupted"].startswith("fit stopped after epoch")
    assert final.record["best_epoch"] == 0
    logged = metric_history(uri, outcome.run_id, "test/ndcg@10")["value"].tolist()
    assert final.metrics["test/ndcg@10"] in logged


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    from recsys.tracking.mlflow import check_tracking_uri, runs_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    check_tracking_uri(uri)  # creates the store's tables before two processes use it
    # val every 2 epochs: last.ckpt is written at an epoch's validation, so the resume re-enters it
    exp = planted_experiment(max_epochs=10_000, val_every=2, patience=10_000)
    args = ["--config", str(exp), f"tracking.tracking_uri={uri}", "train.num_threads=1"]
    cmd = [sys.executable, "-m", "pipelines.train", *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the run records its checkpoint directory before training; kill it once an epoch is saved
        deadline = time.monotonic() + 240
        last = None
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                runs = runs_table(uri, "test")
            except TrackingError:  # the experiment is not created yet
                continue
            tags = read_run(uri, runs["run_id"].iloc[0])["tags"] if len(runs) else {}
            if "checkpoint_dir" in tags:
                last = Path(tags["checkpoint_dir"]) / "last.ckpt"
                if last.is_file():
                    break
        assert last is not None and last.is_file(), "no last.ckpt was written"
    finally:
        proc.kill()
        proc.wait()
    run_id = runs["run_id"].iloc[0]
    assert read_run(uri, run_id)["status"] == "RUNNING"  # killed: nothing marked it
    saved = torch.load(last, map_location="cpu", weights_only=False)
    saved_epoch, spent_s = saved["epoch"], sum(saved["callbacks"]["Timer"]["time_elapsed"].values())
    assert saved[MODEL_SPEC_KEY]["config"]["n_layers"] == 2  # the resolved config the resume rebuilds from

    resumed = _run_cli(*args, f"train.max_epochs={saved_epoch + 2}", "--resume-run", run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"mlflow run: {run_id}" in resumed.stdout
    assert "train/loss nan" not in resumed.stderr  # the saved epoch, re-entered with no batches, says so
    run = read_run(uri, run_id)
    assert run["status"] == "FINISHED"
    assert "test/ndcg@10" in run["metrics"]
    result = json.loads((download_run_artifacts(uri, run_id, "result.json", tmp_path / "dl")).read_text())
    assert result["resumed_after_epoch"] == saved_epoch
    assert result["epochs"] == saved_epoch + 2
    assert spent_s > 0 and result["fit_s"] >= spent_s  # the killed process's fit time counts too
    steps = set(metric_history(uri, run_id, "train/loss")["step"])  # one per epoch (its last global step)
    # one run holds both processes' epochs: the killed one logged every epoch before the saved one (the saved
    # epoch's own loss is logged after its checkpoint, so the kill may beat it) and the resumed one its new epoch
    assert len(steps) >= saved_epoch + 1
    assert max(steps) > min(steps)
    assert not last.parent.exists()  # a finished run removes its checkpoints

    again = _run_cli(*args, "--resume-run", run_id)
    assert again.returncode == 1
    assert "already finished" in again.stderr
    assert "Traceback" not in again.stderr


def test_resume_and_finalize_name_what_is_missing(tmp_path: Path, planted_experiment: WriteExperiment) -> None:
    from recsys.tracking.config import TrackingConfig
    from recsys.tracking.logger import make_logger
    from recsys.train.resume import run_checkpoint

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_experiment(planted_experiment())
    with pytest.raises(ValueError, match="only read when resuming"):
        train_experiment(cfg, tracking_uri=uri, checkpoint=tmp_path / "last.ckpt")
    untagged = make_logger(TrackingConfig(experiment="test"), uri).run_id
    assert untagged is not None
    with pytest.raises(ValueError, match="pass --checkpoint PATH"):
        run_checkpoint(uri, untagged, "last.ckpt")
    tagged = make_logger(TrackingConfig(experiment="test"), uri, {"checkpoint_dir": str(tmp_path / "gone")}).run_id
    assert tagged is not None
    with pytest.raises(FileNotFoundError, match="has no best.ckpt"):
        run_checkpoint(uri, tagged, "best.ckpt")
    with pytest.raises(TrackingError, match="not found"):
        train_experiment(cfg, tracking_uri=uri, resume_run="0" * 32)


def test_a_failed_fit_marks_its_run_failed(
    tmp_path: Path, planted_experiment: WriteExperiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recsys.tracking.mlflow import runs_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def broken_step(self: RecModule, batch: object, batch_idx: int) -> torch.Tensor:
        raise RuntimeError("a fault in the third batch")

    monkeypatch.setattr(RecModule, "training_step", broken_step)
    with pytest.raises(RuntimeError, match="a fault in the third batch"):
        train_experiment(load_experiment(planted_experiment()), tracking_uri=uri)
    runs = runs_table(uri, "test")
    assert len(runs) == 1 and runs["status"].iloc[0] == "FAILED"  # not left RUNNING as if still training
