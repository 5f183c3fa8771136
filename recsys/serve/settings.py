"""Service settings: a pydantic model (a service edge), filled from the environment by the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ENV_PREFIX = "RECSYS_SERVE_"
# JSON bytes one id can take at most: `\uXXXX` per UTF-16 unit (12 for a character outside the BMP),
# two quotes and the ", " separator. Sizing the body limit by this worst case means a request inside
# the documented limits is never refused for its size.
_ID_JSON_BYTES_PER_CHAR = 12
_ID_JSON_OVERHEAD = 4
_BODY_FIXED_BYTES = 256  # braces, key names, k and exclude_seen


def body_bytes_needed(max_history_items: int, max_id_chars: int) -> int:
    """The largest JSON body a request within the limits can take: a full history plus a user id."""
    per_id = _ID_JSON_BYTES_PER_CHAR * max_id_chars + _ID_JSON_OVERHEAD
    return (max_history_items + 1) * per_id + _BODY_FIXED_BYTES


class ServeSettings(BaseModel):
    """Everything the recommendation service is configured with."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    model_uri: str = Field(min_length=1)  # models:/<name>@<alias>, models:/<name>/<version> or a bundle dir
    tracking_uri: str = "sqlite:///mlflow.db"
    max_k: int = Field(default=1000, ge=1)
    max_history_items: int = Field(default=1000, ge=1)  # items accepted in one request's history
    max_id_chars: int = Field(default=64, ge=1)  # longest user or item id accepted
    # larger request bodies get 413; None = exactly what max_history_items ids of max_id_chars need
    max_body_bytes: int | None = Field(default=None, ge=1)
    history_len: int | None = Field(default=None, ge=1)  # items fed to the model; None = its max_len
    max_batch: int = Field(default=32, ge=1)  # requests encoded together (1 = no micro-batching)
    torch_threads: int = Field(default=1, ge=1)  # per process; requests already run in parallel threads
    # None = the /admin routes are off; otherwise they need this value in the X-Admin-Token header
    admin_token: SecretStr | None = None
    poll_interval_s: float = Field(default=0.0, ge=0.0)  # > 0: follow the alias, reloading on change
    poll_max_interval_s: float = Field(default=600.0, gt=0.0)  # backoff ceiling after failed polls
    cache_dir: str | None = None  # where registry versions are downloaded (then deleted) on load
    body_timeout_s: float = Field(default=10.0, gt=0.0)  # a request body must fully arrive within this: else 408
    shutdown_timeout_s: float = Field(default=10.0, gt=0.0)  # after SIGTERM, requests still running are cancelled
    keep_alive_s: float = Field(default=5.0, gt=0.0)  # idle keep-alive connections are closed after this
    # a request line and headers must fully arrive within this (from the connection's opening, or from the
    # first byte of a later request on it): else the connection is closed (408 if part of them arrived)
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    # open connections at most (each an open file): past it a new one gets 503 and is closed at once
    max_connections: int = Field(default=512, ge=1)
    # ranking stage, off by default: a ranker (models:/<name>@<alias> registered by pipelines.train_ranker,
    # or a directory written by recsys.model_io.save_model) re-orders the retrieval top-N
    # (N = max(ranker_top_n, k)) against the user's history; re-resolved at every model (re)load
    ranker_uri: str | None = None
    ranker_top_n: int = Field(default=200, ge=1)

    @field_validator("admin_token")
    @classmethod
    def _token_is_usable(cls, token: SecretStr | None) -> SecretStr | None:
        if token is None:
            return None
        value = token.get_secret_value()
        if not value.strip():
            raise ValueError("admin_token is empty: set a secret, or unset it to turn the /admin routes off")
        if value != value.strip() or not value.isascii() or not value.isprintable():
            raise ValueError("admin_token must be printable ASCII without surrounding whitespace (an HTTP header)")
        return token

    @model_validator(mode="after")
    def _limits_fit_together(self) -> ServeSettings:
        needed = body_bytes_needed(self.max_history_items, self.max_id_chars)
        if self.max_body_bytes is not None and self.max_body_bytes < needed:
            raise ValueError(
                f"max_body_bytes={self.max_body_bytes} cannot hold a request within the other limits "
                f"(max_history_items={self.max_history_items} ids of max_id_chars={self.max_id_chars} need "
                f"{needed} bytes): raise it, lower those, or leave max_body_bytes unset to derive it"
            )
        return self

    @property
    def body_limit(self) -> int:
        """The request body limit in bytes (max_body_bytes, or derived from the history and id limits)."""
        return self.max_body_bytes or body_bytes_needed(self.max_history_items, self.max_id_chars)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> ServeSettings:
        """Settings from `RECSYS_SERVE_<FIELD>` variables (and `MLFLOW_TRACKING_URI`); `overrides` win.

        An empty variable counts as unset: `RECSYS_SERVE_ADMIN_TOKEN=` leaves the admin routes off.

        Args:
            environ: the environment (the pipeline passes `os.environ`).
            overrides: explicit values, e.g. from command-line flags; None values are ignored.
        """
        values: dict[str, Any] = {}
        if "MLFLOW_TRACKING_URI" in environ:
            values["tracking_uri"] = environ["MLFLOW_TRACKING_URI"]
        for name in cls.model_fields:
            key = ENV_PREFIX + name.upper()
            if environ.get(key, "") != "":  # empty = unset, as compose's ${VAR:-} passes it
                values[name] = environ[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
