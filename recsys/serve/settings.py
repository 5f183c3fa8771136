"""Service settings: a pydantic model (a service edge), filled from the environment by the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ENV_PREFIX = "RECSYS_SERVE_"


class ServeSettings(BaseModel):
    """Everything the recommendation service is configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_uri: str = Field(min_length=1)  # models:/<name>@<alias>, models:/<name>/<version> or a bundle dir
    tracking_uri: str = "sqlite:///mlflow.db"
    max_body_bytes: int = Field(default=64 * 1024, ge=1)  # larger request bodies get 413
    max_k: int = Field(default=1000, ge=1)
    max_history_items: int = Field(default=10_000, ge=1)  # items accepted in one request's history
    history_len: int | None = Field(default=None, ge=1)  # items fed to the model; None = its max_len
    max_batch: int = Field(default=32, ge=1)  # requests encoded together (1 = no micro-batching)
    torch_threads: int = Field(default=1, ge=1)  # per process; requests already run in parallel threads
    admin_token: str | None = None  # when set, /admin/* requires the header X-Admin-Token
    poll_interval_s: float = Field(default=0.0, ge=0.0)  # > 0: follow the alias, reloading on change
    cache_dir: str | None = None  # where registry versions are downloaded (then deleted) on load

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ServeSettings:
        """Settings from `RECSYS_SERVE_<FIELD>` variables (and `MLFLOW_TRACKING_URI`); `overrides` win.

        Args:
            environ: the environment (the pipeline passes `os.environ`).
            overrides: explicit values, e.g. from command-line flags; None values are ignored.
        """
        values: dict[str, Any] = {}
        if "MLFLOW_TRACKING_URI" in environ:
            values["tracking_uri"] = environ["MLFLOW_TRACKING_URI"]
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if key in environ:
                values[name] = environ[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
