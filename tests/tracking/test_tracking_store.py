"""The embedded SQLite store under concurrent first use (two runs started together on a new database)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.tracking.config import TrackingConfig
from recsys.tracking.logger import make_logger
from recsys.tracking.mlflow import TrackingError, check_tracking_uri


def _start_run(uri: str, artifact_dir: str, barrier: mp.synchronize.Barrier, out: mp.Queue) -> None:
    barrier.wait()  # both processes reach the new store at the same moment
    try:
        logger = make_logger(TrackingConfig(experiment="shared", artifact_dir=artifact_dir), uri)
        out.put(("ok", logger.run_id))
    except Exception as err:  # reported to the test, which names it
        out.put(("error", f"{type(err).__name__}: {err}"))


def test_two_runs_start_together_on_a_new_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_start_run, args=(uri, str(tmp_path / "art"), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [r for r in results if r[0] == "error"] == []
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shared")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(r[1] for r in results)


def test_a_broken_sqlite_file_is_a_one_line_tracking_error(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_text("this is not a database")
    with pytest.raises(TrackingError, match=r"mlflow\.db' cannot be used: DatabaseError: .*not a database") as err:
        check_tracking_uri(f"sqlite:///{db}")
    assert "\n" not in str(err.value)
