"""bench/gpu_check.py: its commands are valid runs, a step past its limit is recorded as timed out, and
without a CUDA device every GPU-bound step is skipped with its reason."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from recsys.train.experiment import load_experiment

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "bench/gpu_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_training_commands_are_valid_gpu_runs(
    gpu_check: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)  # the configs name their `_base` files relative to the repo root
    cmds = gpu_check.commands("configs/data/ml-1m.yaml", tmp_path, tmp_path / "ttq.json")
    for name, precision in (("sasrec_epoch_fp32", "32-true"), ("sasrec_epoch_bf16", "bf16-mixed")):
        cmd = cmds[name]
        cfg = load_experiment(REPO_ROOT / cmd[cmd.index("--config") + 1], cmd[cmd.index("--config") + 2 :])
        assert (cfg.train.accelerator, cfg.train.precision, cfg.train.max_epochs) == ("gpu", precision, 1)
        assert cfg.tracking.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    ttq = cmds["time_to_quality"]
    overrides = [a for a in ttq if "=" in a and not a.startswith("-")]
    cfg = load_experiment(REPO_ROOT / ttq[ttq.index("--config") + 1], overrides)
    assert (cfg.train.accelerator, cfg.train.max_minutes) == ("gpu", gpu_check.TTQ_MINUTES)


def test_a_step_past_its_limit_is_recorded_as_timed_out(gpu_check: Any) -> None:
    step = gpu_check.run_step([sys.executable, "-c", "import time; time.sleep(30)"], 1)
    assert step["status"] == "failed" and step["reason"] == "timed out after 1 s" and step["wall_s"] < 15
    assert gpu_check.run_step([sys.executable, "-c", "print('{\"a\": 1}')"], 30)["status"] == "ok"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_cuda_every_gpu_step_is_skipped_with_its_reason(gpu_check: Any, tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    record = json.loads(out.read_text())
    steps = record["steps"]
    assert steps["preflight"]["status"] == "ok" and steps["preflight"]["result"]["device"] is None
    assert set(steps) == {"preflight", *gpu_check.LIMITS_S}
    for name in gpu_check.LIMITS_S:
        assert steps[name]["status"] == "skipped" and steps[name]["reason"].startswith("no CUDA device"), name
    assert record["wall_s"] < 60
