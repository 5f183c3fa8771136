"""Training faults: a run killed with SIGKILL at five random points of its fit and resumed each time
with --resume-run ends, as one MLflow run, with the metrics of the same run never interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from recsys.tracking.mlflow import check_tracking_uri, read_run, runs_table

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 40  # an epoch of the planted data takes ~0.1 s: a loaded machine's log reader lags several
SLACK = 29  # epochs left after the last kill point (1..10), so a lagging log reader never kills a finished run
KILLS = 5


class Training:
    """`python -m pipelines.train` in a subprocess, its log lines read as they come."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "pipelines.train", *args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout_s: float = 300.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)
        self.reader.join(10)

    def finish(self) -> int:
        code = self.proc.wait(300)
        self.reader.join(10)
        return code


@pytest.mark.slow
def test_killed_five_times_and_resumed_it_ends_as_if_never_stopped(
    tmp_path: Path, planted_experiment: Callable[..., Path]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    check_tracking_uri(uri)  # the store's tables exist before processes race to create them
    exp = planted_experiment(max_epochs=EPOCHS, val_every=1, patience=EPOCHS, seed=3)
    args = ["--config", str(exp), f"tracking.tracking_uri={uri}", "train.num_threads=1"]

    reference = Training([*args, "--results-json", str(tmp_path / "reference.json")])
    assert reference.finish() == 0, "".join(reference.lines)[-3000:]

    rng = np.random.default_rng()
    kill_after = sorted(rng.choice(np.arange(1, EPOCHS - SLACK), size=KILLS, replace=False).tolist())
    run = Training(args)
    run_id = run.wait_for(r"checkpoints of run (\w+)")[1]
    for epoch in kill_after:  # a random point: some time into the epoch after `epoch` finished
        later = "|".join(str(e) for e in range(epoch, EPOCHS))  # a resume may start past `epoch`
        run.wait_for(rf"epoch ({later}): \d")
        time.sleep(float(rng.uniform(0.0, 0.3)))
        run.kill()
        assert read_run(uri, run_id)["status"] == "RUNNING"  # killed: nothing marked it
        run = Training([*args, "--resume-run", run_id, "--results-json", str(tmp_path / "resumed.json")])
    assert run.finish() == 0, "".join(run.lines)[-3000:]

    expected = json.loads((tmp_path / "reference.json").read_text())["metrics"]
    got = json.loads((tmp_path / "resumed.json").read_text())["metrics"]
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), (key, kill_after)
    runs = runs_table(uri, "test")
    assert len(runs) == 2 and set(runs["status"]) == {"FINISHED"}  # the reference and the one resumed run
    assert read_run(uri, run_id)["metrics"]["test/ndcg@10"] == pytest.approx(expected["test/ndcg@10"], abs=1e-6)
