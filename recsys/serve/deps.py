"""The routes' dependencies: what `create_app` put into `app.state`, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from recsys.serve.batcher import MicroBatcher
from recsys.serve.settings import ServeSettings
from recsys.serve.state import LoadedModel, ModelHolder


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


Settings = Annotated[ServeSettings, Depends(_settings)]
Holder = Annotated[ModelHolder, Depends(_holder)]
CurrentModel = Annotated[LoadedModel, Depends(_current_model)]  # 503 until a model is loaded
Batcher = Annotated[MicroBatcher, Depends(_batcher)]
