"""Where runs are tracked: a plain config dataclass, importable without MLflow (config loading stays light)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"


def resolve_tracking_uri(flag: str | None) -> str:
    """A CLI's tracking store: its --tracking-uri, else $MLFLOW_TRACKING_URI, else the embedded default."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def registry_cli_setup(flag: str | None) -> str:
    """Logging and MLflow's environment for a registry CLI (export, add items); its tracking store."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return resolve_tracking_uri(flag)


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs go. `tracking_uri` None = the pipeline's environment or the embedded default."""

    tracking_uri: str | None = None
    experiment: str = "recsys"
    artifact_dir: str = DEFAULT_ARTIFACT_DIR  # local artifact root for file/sqlite stores
    run_name: str | None = None

    def __post_init__(self) -> None:
        if not self.experiment:
            raise ValueError("experiment must be a non-empty name")
