"""`POST /admin/items`: a new item by its text joins the live catalog, recommendable in the next request.

Only a model that embeds items from text (Recformer) can take them. The items are added to a copy
of the serving model and index, swapped in like a reload; they last until the next reload of a new
version (`python -m pipelines.add_items` writes them into a registered version instead).
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from recsys.retrieval.recommender import CatalogError, TextCatalogModel
from recsys.serve.auth import ADMIN_RESPONSES, AdminAuth
from recsys.serve.deps import CurrentModel, Holder
from recsys.serve.schemas import JSON_BODY_RESPONSES, Text, error_response
from recsys.serve.state import LoadedModel

# bounds that keep the largest valid body (every character a JSON escape) under the default body
# limit even when the operator sets small history limits
MAX_ID_CHARS, MAX_FIELDS, MAX_FIELD_NAME_CHARS, MAX_VALUE_CHARS = 64, 4, 16, 100

FieldName = Annotated[Text, StringConstraints(min_length=1, max_length=MAX_FIELD_NAME_CHARS)]
FieldValue = Annotated[Text, StringConstraints(max_length=MAX_VALUE_CHARS)]


class AddItemRequest(BaseModel):
    """One new item: its raw id and its text fields, as the model reads them."""

    model_config = ConfigDict(extra="forbid")

    id: Text = Field(min_length=1, max_length=MAX_ID_CHARS, description="The new item's raw id (not in the catalog)")
    fields: dict[FieldName, FieldValue] = Field(
        min_length=1, max_length=MAX_FIELDS, description="Text fields by name (e.g. title, year, genres)"
    )


class AddItemResponse(BaseModel):
    added: str  # the new raw id
    n_items: int  # catalog size now
    model_version: str


items_router = APIRouter(prefix="/admin", dependencies=[AdminAuth], responses=ADMIN_RESPONSES, tags=["admin"])


@items_router.post(
    "/items",
    response_model=AddItemResponse,
    responses={
        **JSON_BODY_RESPONSES,
        409: error_response("An id is already in the catalog, or the model reads no text"),
        422: error_response("Malformed items or text fields the model does not read"),
        503: error_response("No model loaded yet, or the server shut down before the request finished"),
    },
)
async def add_item(req: AddItemRequest, current: CurrentModel, holder: Holder) -> AddItemResponse:
    """Embed a new item from its text and add it to the live index and vocabulary."""
    fields = _model_fields(current)
    if not fields:
        raise HTTPException(
            status_code=409, detail=f"model {current.name!r} embeds no item text: items cannot be added"
        )
    unknown = sorted(set(req.fields) - set(fields))
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown text fields {unknown}; this model reads {fields}")
    items = {req.id: {name: req.fields.get(name) for name in fields}}
    try:
        grown = await anyio.to_thread.run_sync(current.recommender.with_new_items, items)
    except CatalogError as err:
        raise HTTPException(status_code=409, detail=str(err)) from err
    holder.swap_in(LoadedModel(recommender=grown, name=current.name, version=current.version, ranker=current.ranker))
    return AddItemResponse(added=req.id, n_items=grown.bundle.meta.n_items, model_version=current.version)


def _model_fields(model: LoadedModel) -> list[str]:
    """The text fields the serving model reads (none for an ID-only model: every add is refused)."""
    served = model.recommender.bundle.model
    return list(served.text_fields) if isinstance(served, TextCatalogModel) else []
