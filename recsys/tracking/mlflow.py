"""MLflow tracking: with tracking/registry.py, the only place that imports mlflow.

Embedded default: `sqlite:///mlflow.db` (MLflow 3's own default, so a bare `mlflow ui` in the
repo shows our runs) with artifacts under `./mlartifacts`. Any server via an explicit URI.
Lightning's logger lives in `recsys.tracking.logger`, so readers of runs (the service, notebooks)
do not import Lightning.
"""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys.tracking.config import TrackingConfig

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used."""


def _probe_server(uri: str, timeout_s: float) -> None:
    """One quick GET of the server's /health: the MLflow client would retry for minutes."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise TrackingError(f"tracking URI {uri!r} cannot be reached: {err}") from err


def check_tracking_uri(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before training, when the store at `uri` cannot be used."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.exists():
            raise TrackingError(f"tracking URI {uri!r}: directory {db.parent} does not exist")
        _init_sqlite_store(uri, db)
        return
    if parsed.scheme not in ("http", "https", "file", "databricks", "postgresql", "mysql"):
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme {parsed.scheme!r}")
    if parsed.scheme in ("http", "https"):
        _probe_server(uri, timeout_s)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # any client/transport failure means the store is unusable
        raise TrackingError(f"tracking URI {uri!r} cannot be reached: {type(err).__name__}: {err}") from err


def _init_sqlite_store(uri: str, db: Path) -> None:
    """Create the store's tables under a file lock: two runs starting together on a new database
    would otherwise both try to create them, and one fails ("table experiments already exists")."""
    try:
        with open(db.with_name(db.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as err:  # an unwritable directory or a broken database file: the store is unusable
        first_line = str(err).splitlines()[0] if str(err) else ""  # SQLAlchemy appends the SQL and a link
        raise TrackingError(f"tracking URI {uri!r} cannot be used: {type(err).__name__}: {first_line}") from err


def artifact_location(cfg: TrackingConfig, uri: str) -> str | None:
    """A local artifact root for embedded stores; servers choose their own."""
    if urlparse(uri).scheme in ("sqlite", "file", ""):
        return Path(cfg.artifact_dir).resolve().as_uri()
    return None


def reopen_run(uri: str, run_id: str) -> None:
    """Mark a stopped run as running again so it can be continued; a finished run is refused."""
    check_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        status = client.get_run(run_id).info.status
    except MlflowException as err:
        raise TrackingError(f"run {run_id!r} not found in {uri!r}") from err
    if status == "FINISHED":
        raise TrackingError(f"run {run_id!r} has already finished: only a stopped run can be resumed")
    if status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def ensure_experiment(cfg: TrackingConfig, uri: str) -> None:
    """Create the config's experiment (with its artifact root) unless it exists; safe when racing."""
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(cfg.experiment) is not None:
        return
    try:
        client.create_experiment(cfg.experiment, artifact_location=artifact_location(cfg, uri))
    except MlflowException:
        if client.get_experiment_by_name(cfg.experiment) is None:  # not a concurrent creation: a real error
            raise


class RunRecorder:
    """Writes params, metrics, text and files to one existing MLflow run."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(tracking_uri=uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in flatten(params).items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.client.log_metric(self.run_id, metric_key(key), float(value), step=step or 0)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_json(self, data: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True), artifact_file)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dir(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def metric_key(key: str) -> str:
    """MLflow forbids '@' in metric names: `val/ndcg@10` is stored as `val/ndcg_at_10`."""
    return key.replace("@", "_at_")


def metric_name(key: str) -> str:
    """The inverse of the storage rename, for readers: `val/ndcg_at_10` -> `val/ndcg@10`."""
    return key.replace("_at_", "@")


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {'a.b.c': value} (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def read_run(uri: str, run_id: str) -> dict[str, Any]:
    """Params, metrics (with '@' names restored) and tags of a run, for evaluation and tests."""
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    return {
        "run_id": run_id,
        "status": run.info.status,
        "start_ms": run.info.start_time,
        "start_time": datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        "params": dict(run.data.params),
        "metrics": {metric_name(k): v for k, v in run.data.metrics.items()},
        "tags": dict(run.data.tags),
    }


def download_run_artifacts(uri: str, run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    """Download `artifact_path` of a run into `dst` (a fresh temp dir by default) and return its path."""
    target = dst or Path(tempfile.mkdtemp(prefix="recsys-run-"))
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(target), tracking_uri=uri
    )
    return Path(local)


def runs_table(uri: str, experiment: str) -> pd.DataFrame:
    """All runs of an experiment as a DataFrame (one row per run; metric names with '@' restored)."""
    import pandas as pd  # mlflow loads it too; only readers of runs need it here

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise TrackingError(f"no experiment named {experiment!r} in {uri}")
    rows = []
    for run in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"]):
        row: dict[str, Any] = {"run_id": run.info.run_id, "status": run.info.status, "name": run.info.run_name}
        row.update({f"param:{k}": v for k, v in run.data.params.items()})
        row.update({metric_name(k): v for k, v in run.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def dataset_runs(uri: str, dataset: str, *, max_runs: int = 10_000) -> pl.DataFrame:
    """The finished training runs of a dataset (its `dataset` tag) across all experiments, newest first.

    One row per run: run_id, experiment, run_name, start_time, `param:<key>` for every param,
    `tag:<key>` for our tags (not MLflow's own `mlflow.*`) and the metrics by name (`val/ndcg@10`).
    """
    import polars as pl

    if "'" in dataset or not dataset:
        raise ValueError(f"dataset name {dataset!r} must be non-empty and hold no quote")
    client = MlflowClient(tracking_uri=uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments(max_results=1000)}
    query = f"tags.dataset = '{dataset}' and attributes.status = 'FINISHED'"
    rows: list[dict[str, Any]] = []
    token: str | None = None
    while experiments and len(rows) < max_runs:
        page = client.search_runs(
            list(experiments), query, order_by=["attributes.start_time DESC"], max_results=1000, page_token=token
        )
        for run in page:
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "experiment": experiments[run.info.experiment_id],
                "run_name": run.info.run_name,
                "start_time": datetime.fromtimestamp(run.info.start_time / 1000, UTC),
            }
            row.update({f"param:{k}": v for k, v in run.data.params.items()})
            row.update({f"tag:{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
            row.update({metric_name(k): v for k, v in run.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    if not rows:
        return pl.DataFrame(schema={"run_id": pl.String})
    return pl.from_dicts(rows[:max_runs], infer_schema_length=None)


def validation_curve(uri: str, run_id: str, key: str = "val/ndcg@10", *, with_time: bool = False) -> pl.DataFrame:
    """A metric at each validation check during the fit: epochs_trained (1-based), step, value, and with
    `with_time` the wall-clock time it was logged (`timestamp_ms`, Unix milliseconds).

    Lightning logs each check in one batch with `epoch` (same step, same timestamp); the final value
    a finished run logs for its best checkpoint has no `epoch` beside it and is left out.
    """
    import polars as pl

    client = MlflowClient(tracking_uri=uri)
    epochs = {(m.step, m.timestamp): m.value for m in client.get_metric_history(run_id, "epoch")}
    checks = sorted(
        (m.step, int(epochs[(m.step, m.timestamp)]) + 1, m.value, m.timestamp)
        for m in client.get_metric_history(run_id, metric_key(key))
        if (m.step, m.timestamp) in epochs
    )
    curve = pl.DataFrame(
        {"epochs_trained": [c[1] for c in checks], "step": [c[0] for c in checks], "value": [c[2] for c in checks]},
        schema={"epochs_trained": pl.Int64, "step": pl.Int64, "value": pl.Float64},
    )
    if with_time:
        curve = curve.with_columns(pl.Series("timestamp_ms", [c[3] for c in checks], dtype=pl.Int64))
    return curve


def metric_history(uri: str, run_id: str, key: str) -> pd.DataFrame:
    """One metric's history (step, value) for a run, e.g. key='val/ndcg@10'."""
    import pandas as pd

    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, metric_key(key))
    return pd.DataFrame({"step": [m.step for m in history], "value": [m.value for m in history]})
