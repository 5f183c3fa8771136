"""Request and response bodies of the recommendation service: together with the routes' declared
status codes, the OpenAPI document the service publishes (and a schemathesis test holds it to)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StrictStr,
    model_validator,
)

# the request must name someone or something: a user id, or at least one history item
_NEEDS_USER_OR_HISTORY: list[JsonValue] = [
    {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
    {"required": ["history"], "properties": {"history": {"type": "array", "minItems": 1}}},
]


def _encodable(text: str) -> str:
    """JSON's `\\ud800` escape decodes to a lone UTF-16 surrogate: not text, and not writable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = ord(text[err.start])
        raise ValueError(
            f"not valid text: an unpaired UTF-16 surrogate (U+{bad:04X}) at character {err.start}; "
            "send characters outside the BMP as a surrogate pair or as UTF-8"
        ) from None
    return text


# a string the service can write back (in unknown_items, in the log): valid Unicode, so valid UTF-8
Text = Annotated[StrictStr, AfterValidator(_encodable)]


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 10.0 as an integer, so the contract accepts it as 10; 2.5, "10" and true stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RecommendRequest(BaseModel):
    """A known `user_id` uses the stored history, with `history` appended as the most recent events;
    an unknown or absent `user_id` uses `history` alone. Ids are the raw catalog ids, as strings (a
    number is refused, never converted). The limits on k, the history and the ids are the service's
    settings; its OpenAPI document states them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": _NEEDS_USER_OR_HISTORY})

    user_id: Text | None = Field(default=None, min_length=1)
    history: list[Text] = Field(default_factory=list)
    k: Annotated[int, BeforeValidator(_whole_number)] = Field(default=10, ge=1, strict=True)
    exclude_seen: bool = Field(default=True, strict=True)

    @model_validator(mode="after")
    def _names_someone(self) -> RecommendRequest:
        if self.user_id is None and not self.history:
            raise ValueError("give a user_id or a non-empty history")
        return self


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    text: str | None = None


class RecommendResponse(BaseModel):
    items: list[RecommendedItem]
    model_version: str
    unknown_items: list[str]  # request history ids not in the catalog (ignored)
    user_known: bool
    ranked_by: str | None = None  # the ranker that ordered the items (absent without a ranking stage)
    ranker_fallback: bool | None = None  # True: the ranker failed and the items are in retrieval order


class FieldError(BaseModel):
    loc: list[str | int]  # where in the request, e.g. ["body", "history", 3]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every error answer: a one-line `detail`, and per-field `errors` for a malformed request (422)."""

    detail: str
    errors: list[FieldError] | None = None


Responses = dict[int | str, dict[str, Any]]


def error_response(description: str) -> dict[str, Any]:
    """One status code's entry in a route's `responses`: an `ErrorResponse` body, and why."""
    return {"model": ErrorResponse, "description": description}


# what any route that reads a JSON body can answer before its own code runs
JSON_BODY_RESPONSES: Responses = {
    400: error_response("The body is not valid JSON (or not UTF-8)"),
    408: error_response("The request body did not arrive within body_timeout_s"),
    415: error_response("The body was not sent as Content-Type: application/json"),
}


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "loading"]
    model_version: str | None = None  # the version serving, once ready


ReloadState = Literal["idle", "running", "succeeded", "unchanged", "failed"]


class ReloadStatus(BaseModel):
    state: ReloadState
    model_version: str | None  # the version serving now
    target_version: str | None = None  # the version the last reload loaded or tried to load
    error: str | None = None  # why the last reload failed (no paths or URIs); the previous version kept serving
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
