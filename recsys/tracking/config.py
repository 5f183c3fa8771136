"""Where runs are tracked: a plain config dataclass, importable without MLflow (config loading stays light)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlartifacts"


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
