"""bench/time_to_quality.py: one tiny tracked run gives a complete row; targets, upserts, summaries, plot."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ttq() -> Any:
    spec = importlib.util.spec_from_file_location("time_to_quality", REPO_ROOT / "bench/time_to_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["time_to_quality"] = module
    spec.loader.exec_module(module)
    return module


def test_a_run_writes_a_row_and_an_unreachable_target_stays_null(
    ttq: Any, tmp_path: Path, planted_experiment: Callable[..., Path]
) -> None:
    config = planted_experiment(max_epochs=2)
    out = tmp_path / "ttq.json"
    args = ["--config", str(config), "--recipe", "tiny", "--target", "2.0", "--seed", "3", "--out", str(out)]
    assert ttq.main([*args, "--plot", str(tmp_path / "ttq.png"), "train.lr=0.01"]) == 0

    record = json.loads(out.read_text())
    assert {"name", "command", "git_commit", "machine", "started_at", "wall_s"} <= record.keys()
    (row,) = record["rows"]
    assert (row["dataset"], row["model"], row["recipe"], row["seed"]) == ("planted", "sasrec", "tiny", 3)
    assert (row["target_metric"], row["target"]) == ("val/ndcg@10", 2.0)
    assert row["seconds_to_target"] is None and row["epochs_to_target"] is None
    assert row["config"]["train"]["seed"] == 3 and row["config"]["train"]["lr"] == 0.01  # the overrides
    assert 0.0 <= row["test/ndcg@10"] <= 1.0
    assert len(row["load_average"]["start"]) == len(row["load_average"]["end"]) == 3
    # one point per epoch: seconds since the MLflow run started, increasing and within the training time
    seconds, epochs, values = zip(*row["curve"], strict=True)
    assert list(epochs) == [1, 2]
    assert 0 < seconds[0] < seconds[1] <= row["train_s"]
    assert row["setup_s"] > 0 and row["train_s"] + row["setup_s"] == pytest.approx(row["fit_s"], abs=0.02)
    assert all(0.0 <= v <= 1.0 for v in values)
    summary = record["summary"][0]
    assert (summary["seeds"], summary["reached"], summary["seconds_to_target"]) == ([3], "0/1", None)
    assert (tmp_path / "ttq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same curve against a reachable target: the first check at or above it
    first = row["curve"][0]
    assert ttq.time_to_target(row["curve"], "val/ndcg@10", first[2], 0.1, row["fit_s"], 2) == (first[0], 1)


def test_targets_on_the_test_metric_use_the_fit_time(ttq: Any) -> None:
    curve = [[5.0, 1, 0.01], [9.0, 2, 0.04], [13.0, 3, 0.06]]
    assert ttq.time_to_target(curve, "val/ndcg@10", 0.05, 0.0, 20.0, 3) == (13.0, 3)
    assert ttq.time_to_target(curve, "test/ndcg@10", 0.05, 0.051, 20.0, 3) == (20.0, 3)
    assert ttq.time_to_target(curve, "test/ndcg@10", 0.05, 0.049, 20.0, 3) == (None, None)
    with pytest.raises(ValueError, match="target_metric must be one of .* got 'val/hr@10'"):
        ttq.time_to_target(curve, "val/hr@10", 0.05, 0.0, 20.0, 3)


def test_rows_upsert_per_seed_and_summarize_over_seeds(ttq: Any, tmp_path: Path) -> None:
    def row(seed: int, seconds: float | None, test: float) -> dict[str, Any]:
        keys = {"dataset": "beauty", "model": "sasrec", "recipe": "fast", "target_metric": "val/ndcg@10"}
        return keys | {"target": 0.053, "seed": seed, "seconds_to_target": seconds, "fit_s": 60.0, "test/ndcg@10": test,
                       "epochs_to_target": None if seconds is None else 4, "curve": [[1.0, 1, 0.05]]}  # fmt: skip

    out = tmp_path / "ttq.json"
    ttq.write_results(out, row(0, 50.0, 0.055), "cmd", "2026-01-01T00:00:00+00:00", 1.0)
    ttq.write_results(out, row(1, None, 0.050), "cmd", "2026-01-01T00:00:00+00:00", 1.0)
    record = ttq.write_results(out, row(0, 40.0, 0.057), "cmd", "2026-01-01T00:00:00+00:00", 1.0)  # seed 0 again
    assert [(r["seed"], r["seconds_to_target"]) for r in record["rows"]] == [(1, None), (0, 40.0)]
    (summary,) = record["summary"]
    assert summary["seeds"] == [0, 1] and summary["reached"] == "1/2"
    assert summary["seconds_to_target"]["values"] == [40.0]
    assert summary["test/ndcg@10"]["mean"] == pytest.approx(0.0535)
    assert json.loads(out.read_text()) == record
