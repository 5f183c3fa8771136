"""Lightning's MLflow logger with our metric names: the one tracking module that imports Lightning."""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers import MLFlowLogger

from recsys.tracking.config import TrackingConfig
from recsys.tracking.mlflow import RunRecorder, artifact_location, check_tracking_uri, ensure_experiment, metric_key


class _Logger(MLFlowLogger):
    """Lightning's MLflow logger with our metric names (`val/ndcg@10` stored as `val/ndcg_at_10`)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({metric_key(k): v for k, v in metrics.items()}, step)


def make_logger(
    cfg: TrackingConfig, uri: str, tags: Mapping[str, str] | None = None, *, run_id: str | None = None
) -> MLFlowLogger:
    """A Lightning MLflow logger whose run is created now (so its id is known before training).

    With `run_id`, the logger continues that run instead (a resumed fit, see
    `recsys.tracking.mlflow.reopen_run`).
    """
    check_tracking_uri(uri)
    if run_id is None:
        ensure_experiment(cfg, uri)
    logger = _Logger(
        experiment_name=cfg.experiment,
        run_name=cfg.run_name,
        tracking_uri=uri,
        tags=dict(tags or {}),
        artifact_location=artifact_location(cfg, uri),
        run_id=run_id,
    )
    _ = logger.run_id  # creates the run
    if run_id is not None and tags:
        RunRecorder(uri, run_id).set_tags(tags)  # Lightning sets tags only on runs it creates
    return logger
