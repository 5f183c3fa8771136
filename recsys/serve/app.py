"""The online top-k service: `create_app(settings)`; the lifespan loads the model version into app.state.

Routes stay thin: the query path lives in `recsys.retrieval.recommender`, model loading and hot
reload in `recsys.serve.state`, metrics and the body limit in ASGI middlewares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from recsys.retrieval.recommender import Recommendations, ResolvedHistory
from recsys.serve.batcher import MicroBatcher
from recsys.serve.metrics import ServeMetrics
from recsys.serve.middleware import BodyLimitMiddleware, GuardMiddleware
from recsys.serve.schemas import (
    ModelInfo,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    ReloadStatus,
)
from recsys.serve.settings import ServeSettings
from recsys.serve.state import LoadedModel, ModelHolder

log = logging.getLogger(__name__)


def _settings(request: Request) -> ServeSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _holder(request: Request) -> ModelHolder:
    return request.app.state.holder  # type: ignore[no-any-return]


def _batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher  # type: ignore[no-any-return]


async def _current_model(holder: Annotated[ModelHolder, Depends(_holder)]) -> LoadedModel:
    model = holder.current
    if model is None:
        raise HTTPException(status_code=503, detail="no model loaded yet")
    return model


async def _admin(
    settings: Annotated[ServeSettings, Depends(_settings)],
    x_admin_token: Annotated[str | None, Header()] = None,
) -> None:
    if settings.admin_token is not None and x_admin_token != settings.admin_token:
        raise HTTPException(status_code=401, detail="admin endpoints need a valid X-Admin-Token header")


Settings = Annotated[ServeSettings, Depends(_settings)]
Holder = Annotated[ModelHolder, Depends(_holder)]
CurrentModel = Annotated[LoadedModel, Depends(_current_model)]
Batcher = Annotated[MicroBatcher, Depends(_batcher)]
Admin = Depends(_admin)

router = APIRouter()


@router.post("/recommend", response_model=RecommendResponse, response_model_exclude_none=True)
async def recommend(req: RecommendRequest, model: CurrentModel, settings: Settings, batcher: Batcher) -> Response:
    """Top-k items for a user id and/or a history of raw item ids."""
    if req.k > settings.max_k:
        raise HTTPException(status_code=422, detail=f"k={req.k} is above the limit max_k={settings.max_k}")
    if len(req.history) > settings.max_history_items:
        raise HTTPException(
            status_code=422,
            detail=f"history has {len(req.history)} items; the limit is {settings.max_history_items}",
        )
    resolved = model.recommender.resolve(req.user_id, req.history)
    if not len(resolved.items):
        raise HTTPException(status_code=422, detail=_empty_history_message(req))
    recs = await batcher.recommend(model.recommender, resolved.items, req.k, exclude_seen=req.exclude_seen)
    return _response(model, recs, resolved)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(holder: Holder) -> JSONResponse:
    """Readiness: 200 once a model is loaded, else 503."""
    model = holder.current
    if model is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": model.version})


@router.get("/info", response_model=ModelInfo)
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


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format, from this app's own registry."""
    registry: ServeMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)


@router.post("/admin/reload", response_model=ReloadStatus, dependencies=[Admin], status_code=202)
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


@router.get("/admin/reload", response_model=ReloadStatus, dependencies=[Admin])
async def reload_status(holder: Holder) -> ReloadStatus:
    """The state of the last reload (and its error, if it failed)."""
    return holder.status()


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the service; nothing is loaded until the app starts (its lifespan)."""
    metrics = ServeMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder: ModelHolder = app.state.holder
        if holder.current is None:  # the serve pipeline may have loaded it before binding the port
            await anyio.to_thread.run_sync(holder.load)
        poll = asyncio.create_task(_poll(holder, settings.poll_interval_s)) if settings.poll_interval_s else None
        app.state.batcher.start()
        yield
        await app.state.batcher.stop()
        if poll is not None:
            poll.cancel()
        await anyio.to_thread.run_sync(holder.wait, 30.0)

    app = FastAPI(title="recsys", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = ModelHolder(settings, metrics)
    app.state.batcher = MicroBatcher(settings.max_batch)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    # add_middleware wraps: the last added is the outermost
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(GuardMiddleware, metrics=metrics)
    return app


async def _poll(holder: ModelHolder, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        holder.start_reload(force=False)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 listing each problem by location, without echoing the (possibly large) input back."""
    del request
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def _empty_history_message(req: RecommendRequest) -> str:
    who = "no user_id" if req.user_id is None else f"user_id {req.user_id!r} is unknown"
    if not req.history:
        return f"empty history: {who} and no history items were given"
    return f"empty history: {who} and none of the {len(req.history)} history items is in the catalog"


def _response(model: LoadedModel, recs: Recommendations, resolved: ResolvedHistory) -> Response:
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
        for idx, score in zip(recs.items.tolist(), recs.scores.tolist(), strict=True)
    ]
    body = RecommendResponse.model_construct(
        items=items, model_version=model.version, unknown_items=resolved.unknown_items, user_known=resolved.user_known
    )
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")
