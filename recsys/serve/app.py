"""The online top-k service: `create_app(settings)`; the lifespan loads the model version into app.state.

Routes stay thin: the query path lives in `recsys.retrieval.recommender`, model loading and hot
reload in `recsys.serve.state`, metrics and the body limits in ASGI middlewares, the admin lock in
`recsys.serve.auth`. Every status a route can answer is declared on it: the OpenAPI document at
/openapi.json is the contract (tests/serve/test_schema.py runs schemathesis against it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException as StarletteHTTPException

from recsys.retrieval.recommender import ResolvedHistory
from recsys.serve.auth import ADMIN_RESPONSES, AdminAuth
from recsys.serve.batcher import MicroBatcher
from recsys.serve.deps import Batcher, CurrentModel, Holder, Settings
from recsys.serve.items import items_router
from recsys.serve.metrics import ServeMetrics
from recsys.serve.middleware import BodyLimitMiddleware, GuardMiddleware
from recsys.serve.schemas import (
    JSON_BODY_RESPONSES,
    ErrorResponse,
    FieldError,
    Health,
    ModelInfo,
    Readiness,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ReloadStatus,
    Responses,
    error_response,
)
from recsys.serve.settings import ServeSettings
from recsys.serve.state import LoadedModel, ModelHolder, TopK

log = logging.getLogger(__name__)


NOT_READY: Responses = {503: error_response("No model loaded yet, or the server shut down before the request finished")}
INVALID: Responses = {422: error_response("Malformed request: wrong types, a missing field, a value out of its limits")}
# answered by the middlewares and FastAPI itself, on any route
APP_RESPONSES: Responses = {
    413: error_response("Request body over the limit (max_body_bytes)"),
    500: error_response("Unhandled error (logged by the server; no details are sent)"),
    503: error_response("The server shut down before the request finished (shutdown_timeout_s passed)"),
}

router = APIRouter()
# the admin surface: mounted only when an admin token is configured, and every route on it needs the token
admin_router = APIRouter(prefix="/admin", dependencies=[AdminAuth], responses=ADMIN_RESPONSES, tags=["admin"])


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    response_model_exclude_none=True,
    responses={
        **JSON_BODY_RESPONSES,
        404: error_response("Nothing to recommend from: the user is unknown and no history item is in the catalog"),
        **INVALID,
        **NOT_READY,
    },
)
async def recommend(req: RecommendRequest, model: CurrentModel, settings: Settings, batcher: Batcher) -> Response:
    """Top-k items for a user id and/or a history of raw item ids."""
    _check_limits(req, settings)
    resolved = model.recommender.resolve(req.user_id, req.history)
    if not len(resolved.items):
        raise HTTPException(status_code=404, detail=_empty_history_message(req))
    n = model.retrieval_depth(req.k)
    recs = await batcher.recommend(model.recommender, resolved.items, n, exclude_seen=req.exclude_seen)
    if model.ranker is None:
        return _response(model, model.finish(resolved.items, recs, req.k), resolved)
    top = await anyio.to_thread.run_sync(model.finish, resolved.items, recs, req.k)
    return _response(model, top, resolved)


@router.get("/healthz", response_model=Health)
@router.head("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Loading"}})
@router.head("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Loading"}})
async def readyz(holder: Holder) -> JSONResponse:
    """Readiness: 200 once a model is loaded, else 503."""
    model = holder.current
    if model is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": model.version})


@router.get("/info", response_model=ModelInfo, responses=NOT_READY)
async def info(model: CurrentModel) -> ModelInfo:
    """What is serving: model, version, catalog size, index, an example user id."""
    bundle = model.recommender.bundle
    meta = bundle.meta
    return ModelInfo(
        name=meta.name,
        model=meta.model,
        model_version=model.version,
        n_items=meta.n_items,
        n_users=len(bundle.user_vocab),
        max_len=meta.max_len,
        history_len=model.recommender.history_len,
        index=meta.index.to_dict(),
        source_run_id=meta.source_run_id,
        example_user_id=next(iter(bundle.user_vocab), None),
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus text format, from this app's own registry."""
    registry: ServeMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


@admin_router.post(
    "/reload",
    response_model=ReloadStatus,
    status_code=202,
    responses={
        200: {"model": ReloadStatus, "description": "With wait=true: the reload has finished"},
        409: error_response("A reload is already running"),
        **INVALID,
    },
)
async def reload(holder: Holder, response: Response, force: bool = False, wait: bool = False) -> ReloadStatus:
    """Load the version the model URI points to now in the background and swap it in.

    `force` reloads an unchanged version; `wait` answers (200) only when the reload has finished.
    """
    if not holder.start_reload(force=force):
        raise HTTPException(status_code=409, detail="a reload is already running")
    if wait:
        await anyio.to_thread.run_sync(holder.wait)
        response.status_code = 200
    return holder.status()


@admin_router.get("/reload", response_model=ReloadStatus)
async def reload_status(holder: Holder) -> ReloadStatus:
    """The state of the last reload (and why it failed, if it did)."""
    return holder.status()


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the service; nothing is loaded until the app starts (its lifespan)."""
    metrics = ServeMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder: ModelHolder = app.state.holder
        if holder.current is None:  # the serve pipeline may have loaded it before binding the port
            await anyio.to_thread.run_sync(holder.load)
        poll = None
        if settings.poll_interval_s:
            poll = asyncio.create_task(_poll(holder, settings.poll_interval_s, settings.poll_max_interval_s))
        app.state.batcher.start()
        if settings.admin_token is None:
            log.info("admin routes are off: no admin token configured (RECSYS_SERVE_ADMIN_TOKEN)")
        yield
        await app.state.batcher.stop()
        if poll is not None:
            poll.cancel()
        await anyio.to_thread.run_sync(holder.wait, settings.shutdown_timeout_s, abandon_on_cancel=True)

    app = FastAPI(
        title="recsys",
        summary="Top-k sequential recommendations from a registered model version",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses=APP_RESPONSES,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = ModelHolder(settings, metrics)
    app.state.batcher = MicroBatcher(settings.max_batch)
    app.include_router(router)
    if settings.admin_token is not None:
        app.include_router(admin_router)
        app.include_router(items_router)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    # add_middleware wraps: the last added is the outermost
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.body_limit, timeout_s=settings.body_timeout_s)
    app.add_middleware(GuardMiddleware, metrics=metrics)
    app.openapi = _openapi_with_limits(app, settings)  # type: ignore[method-assign]
    return app


async def _poll(holder: ModelHolder, interval_s: float, max_interval_s: float) -> None:
    """Follow the alias: ask for a reload every `interval_s`; after a failed one wait twice as long as
    before (up to `max_interval_s`), back to `interval_s` once a reload does not fail."""
    delay = interval_s
    while True:
        await asyncio.sleep(delay)
        if holder.start_reload(force=False):
            await anyio.to_thread.run_sync(holder.wait, abandon_on_cancel=True)
        failed = holder.status().state == "failed"
        delay = min(delay * 2, max(max_interval_s, interval_s)) if failed else interval_s


def _check_limits(req: RecommendRequest, settings: ServeSettings) -> None:
    """The limits that come from the settings (the schema states them; pydantic checks the rest)."""
    if req.k > settings.max_k:  # not echoed: k may have thousands of digits
        raise HTTPException(status_code=422, detail=f"k is above the limit max_k={settings.max_k}")
    if len(req.history) > settings.max_history_items:
        raise HTTPException(
            status_code=422,
            detail=f"history has {len(req.history)} items; the limit is max_history_items={settings.max_history_items}",
        )
    longest = max((len(i) for i in [req.user_id or "", *req.history]), default=0)
    if longest > settings.max_id_chars:
        raise HTTPException(
            status_code=422, detail=f"an id has {longest} characters; the limit is max_id_chars={settings.max_id_chars}"
        )


def _openapi_with_limits(app: FastAPI, settings: ServeSettings) -> Callable[[], dict[str, Any]]:
    """`app.openapi`, with the limits the settings put on a recommend request written into its schema."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            request_schema = schema["components"]["schemas"][RecommendRequest.__name__]
            props = request_schema["properties"]
            current = app.state.holder.current
            if current is not None:  # a request that works on the model serving when the document was made
                bundle = current.recommender.bundle
                user = next(iter(bundle.user_vocab), None)
                example = {"user_id": user, "k": 10} if user else {"history": [bundle.item_raw_ids[1]], "k": 10}
                request_schema["examples"] = [example]
            props["k"]["maximum"] = settings.max_k
            props["history"]["maxItems"] = settings.max_history_items
            props["history"]["items"]["maxLength"] = settings.max_id_chars
            for branch in props["user_id"]["anyOf"]:
                if branch.get("type") == "string":
                    branch["maxLength"] = settings.max_id_chars
        return app.openapi_schema  # type: ignore[return-value]

    return openapi


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer to an `HTTPException`, except that a 405's Allow header lists every method the
    OpenAPI document has for the path: Starlette names only those of the first route that matched."""
    headers = dict(exc.headers or {})
    documented = request.app.openapi()["paths"].get(request.url.path)
    if exc.status_code == 405 and documented:
        headers["Allow"] = ", ".join(sorted(m.upper() for m in documented))
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 415 for one sent as another media type, else 422; each names the
    problem by location, without echoing the (possibly large, possibly unencodable) input back."""
    if isinstance(exc.body, bytes):  # FastAPI parses JSON only when the content type says JSON
        sent_as = request.headers.get("content-type") or "no Content-Type"
        detail = f"the body must be JSON sent as Content-Type: application/json (it came as {_clip(sent_as)})"
        return JSONResponse(ErrorResponse(detail=detail).model_dump(exclude_none=True), status_code=415)
    errors = [
        FieldError(loc=[p if isinstance(p, int) else _clip(str(p)) for p in e["loc"]], msg=_message(e), type=e["type"])
        for e in exc.errors()
    ]
    if any(e.type == "json_invalid" for e in errors):
        body = ErrorResponse(detail=f"the body is not valid JSON: {errors[0].msg}", errors=errors)
        return JSONResponse(body.model_dump(), status_code=400)
    where = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors[:5])
    body = ErrorResponse(detail=f"invalid request: {where}", errors=errors)
    return JSONResponse(body.model_dump(), status_code=422)


def _message(error: Any) -> str:
    msg = str(error["msg"])
    if error["type"] == "json_invalid":  # loc ends with the character offset
        return f"{error.get('ctx', {}).get('error', msg)} at character {error['loc'][-1]}"
    if error["type"] == "string_type" and error.get("loc", ())[:2] in (("body", "history"), ("body", "user_id")):
        return f'{msg}: ids are strings, so send 42 as "42"'
    return msg


def _clip(text: str, limit: int = 40) -> str:
    """A client's string (a key of its JSON, a header) made safe to echo: short, and valid UTF-8."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    return short.encode("utf-8", "backslashreplace").decode("utf-8")


def _empty_history_message(req: RecommendRequest) -> str:
    who = "no user_id" if req.user_id is None else f"user_id {req.user_id!r} is unknown"
    if not req.history:
        return f"empty history: {who} and no history items were given"
    return f"empty history: {who} and none of the {len(req.history)} history items is in the catalog"


def _response(model: LoadedModel, top: TopK, resolved: ResolvedHistory) -> Response:
    """The response body, built without re-validation: every value comes from the loaded bundle (the
    declared `response_model` still documents it). Returning a `Response` skips FastAPI's second pass."""
    bundle = model.recommender.bundle
    texts = bundle.item_text
    items = [
        RecommendedItem.model_construct(
            item_id=bundle.item_raw_ids[idx],
            score=score,
            text=texts[idx] if texts is not None else None,
        )
        for idx, score in zip(top.items.tolist(), top.scores.tolist(), strict=True)
    ]
    body = RecommendResponse.model_construct(
        items=items,
        model_version=model.version,
        unknown_items=resolved.unknown_items,
        user_known=resolved.user_known,
        ranked_by=top.ranked_by,
        ranker_fallback=top.fallback,
    )
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")
