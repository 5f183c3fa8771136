"""Request and response bodies of the recommendation service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RecommendRequest(BaseModel):
    """A known `user_id` uses the stored history, with `history` appended as the most recent events;
    an unknown or absent `user_id` uses `history` alone. Item ids are the raw catalog ids."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    user_id: str | None = None
    history: list[str] = Field(default_factory=list)
    k: int = Field(default=10, ge=1, strict=True)
    exclude_seen: bool = Field(default=True, strict=True)


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    text: str | None = None


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    model_version: str
    unknown_items: list[str]  # request history ids not in the catalog (ignored)
    user_known: bool


ReloadState = Literal["idle", "running", "succeeded", "unchanged", "failed"]


class ReloadStatus(BaseModel):
    state: ReloadState
    model_version: str | None  # the version serving now
    target_version: str | None = None  # the version the last reload loaded or tried to load
    error: str | None = None  # why the last reload failed; the previous version kept serving
    started_at: str | None = None
    finished_at: str | None = None


class ModelInfo(BaseModel):
    name: str
    model: str
    model_version: str
    n_items: int
    n_users: int
    max_len: int
    history_len: int
    index: dict[str, object]
    source_run_id: str | None
    example_user_id: str | None  # a user with a stored history (for demos and smoke tests)
