"""Top-k recommendation over a loaded bundle: resolve raw ids, encode the history once, search, filter.

`Recommender.recommend` is the online fast path (FAISS); `recommend_exact` is its slow twin (torch
matmul over the model's own `item_embeddings()`), the reference the tests and benchmarks compare to.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import faiss
import numpy as np
import torch

from recsys.retrieval.bundle import ServingBundle
from recsys.retrieval.index import ItemIndex, exact_search


@runtime_checkable
class TextCatalogModel(Protocol):
    """A model that embeds items from their text fields, so new items join without retraining."""

    @property
    def text_fields(self) -> tuple[str, ...]:
        """The item text fields the model reads."""
        ...

    def add_items(self, items: list[dict[str, str | None]]) -> torch.Tensor:
        """Append items by their text; their vectors [K, D] as the index holds them."""
        ...


class CatalogError(ValueError):
    """New items that cannot join the catalog (duplicate ids, a model without text, ...)."""


@dataclass(frozen=True)
class ResolvedHistory:
    """A request's effective history as item indices, and what could not be used."""

    items: np.ndarray  # [n] int64 item_idx, oldest first (stored history, then request items)
    unknown_items: list[str]  # raw ids in the request history that are not in the catalog
    user_known: bool  # the user id was found in the stored histories


@dataclass(frozen=True)
class Recommendations:
    """Top-k for one history: item indices and scores, best first (possibly fewer than k)."""

    items: np.ndarray  # [k'] int64 item_idx
    scores: np.ndarray  # [k'] float32


class Recommender:
    """Wraps a `ServingBundle` (it never subclasses the model): one instance per loaded version."""

    def __init__(self, bundle: ServingBundle, *, history_len: int | None = None) -> None:
        self.bundle = bundle
        max_len = bundle.meta.max_len
        if history_len is not None and not 1 <= history_len <= max_len:
            raise ValueError(f"history_len={history_len} must be in 1..{max_len} (the model's max_len)")
        self.history_len = history_len or max_len

    def resolve(self, user_id: str | None, history: Sequence[str]) -> ResolvedHistory:
        """Turn a request into item indices.

        A known `user_id` contributes its stored history; `history` items are appended after it as the
        most recent events (so a client can send what happened since the last export). An unknown
        `user_id` contributes nothing. Raw ids missing from the catalog are skipped and reported.
        """
        stored = self.bundle.user_history(user_id) if user_id is not None else None
        vocab = self.bundle.item_vocab
        known = [vocab[raw] for raw in history if raw in vocab]
        unknown = list(dict.fromkeys(raw for raw in history if raw not in vocab))
        parts = [stored] if stored is not None else []
        items = np.concatenate([*parts, np.asarray(known, dtype=np.int64)])
        return ResolvedHistory(items=items, unknown_items=unknown, user_known=stored is not None)

    def encode(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Query vectors [B, D] for histories (item indices, oldest first), truncated and left-padded."""
        # the window is always max_len wide (positions as in training); only the last history_len
        # items are kept in it
        length = self.bundle.meta.max_len
        items = torch.zeros((len(histories), length), dtype=torch.long)  # [B, L], 0 = pad
        for row, hist in enumerate(histories):
            tail = hist[-self.history_len :]
            if len(tail):
                items[row, length - len(tail) :] = torch.from_numpy(np.ascontiguousarray(tail))
        mask = items != 0  # [B, L]
        with torch.inference_mode():
            return self.bundle.model.sequence_representation(items, mask).float()  # [B, D]

    def recommend(self, histories: Sequence[np.ndarray], k: int, *, exclude_seen: bool = True) -> list[Recommendations]:
        """Top-k per history from the FAISS index, history items removed when `exclude_seen`.

        Args:
            histories: item indices per request, oldest first, each non-empty.
            k: items per request.
            exclude_seen: drop items that appear in the history.
        """
        if not histories:
            return []
        queries = self.encode(histories).numpy()
        seen = [np.unique(h) if exclude_seen else np.empty(0, dtype=np.int64) for h in histories]
        scores, ids = self.bundle.index.search(queries, k + max(len(s) for s in seen))  # [B, k + n_seen]
        out = []
        for row, s in enumerate(seen):
            keep = ids[row] > 0  # approximate indexes pad with item 0
            if len(s):
                keep &= ~np.isin(ids[row], s)
            out.append(Recommendations(items=ids[row][keep][:k], scores=scores[row][keep][:k]))
        return out

    def recommend_exact(
        self, histories: Sequence[np.ndarray], k: int, *, exclude_seen: bool = True
    ) -> list[Recommendations]:
        """The slow twin of `recommend`: full matmul against `model.item_embeddings()`, seen items masked."""
        if not histories:
            return []
        queries = self.encode(histories)
        with torch.inference_mode():
            item_emb = self.bundle.model.item_embeddings().float()  # [N + 1, D]
            exclude = torch.zeros((len(histories), item_emb.shape[0]), dtype=torch.bool)
            if exclude_seen:
                for row, hist in enumerate(histories):
                    exclude[row, torch.from_numpy(np.ascontiguousarray(hist))] = True
            scores, items = exact_search(item_emb, queries, min(k, item_emb.shape[0] - 1), exclude=exclude)
        out = []
        for row in range(len(histories)):
            keep = torch.isfinite(scores[row])
            out.append(Recommendations(items=items[row][keep].numpy(), scores=scores[row][keep].numpy()))
        return out

    def with_new_items(self, items: Mapping[str, Mapping[str, str | None]]) -> Recommender:
        """A copy serving the catalog plus `items` (raw id -> text fields), embedded by the model's
        text encoder and added to a copy of the index; this instance is left as it was.

        Raises:
            CatalogError: the model has no text encoder, no items, a text field the model does not
                read, or an id already in the catalog.
        """
        bundle = self.bundle
        if not isinstance(bundle.model, TextCatalogModel):
            raise CatalogError(f"model {bundle.meta.model!r} cannot embed items from text (no add_items)")
        if not items:
            raise CatalogError("no items to add")
        reads = list(bundle.model.text_fields)
        unknown = sorted({name for fields in items.values() for name in fields} - set(reads))
        if reads and unknown:
            raise CatalogError(f"unknown text fields {unknown}; this model reads {reads}")
        taken = sorted(raw for raw in items if raw in bundle.item_vocab)
        if taken:
            raise CatalogError(f"item ids already in the catalog: {taken[:10]}")
        model = copy.deepcopy(bundle.model)  # requests in flight keep the old one
        try:
            vectors = model.add_items([dict(fields) for fields in items.values()]).float().numpy()
        except ValueError as err:  # e.g. a control model without a text encoder
            raise CatalogError(f"model {bundle.meta.model!r} cannot add items by text: {err}") from err
        first = bundle.meta.n_items + 1
        new_ids = np.arange(first, first + len(items), dtype=np.int64)
        index = faiss.clone_index(bundle.index.index)
        index.add_with_ids(np.ascontiguousarray(vectors), new_ids)
        texts = [" | ".join(v for v in fields.values() if v) for fields in items.values()]
        grown = dataclasses.replace(
            bundle,
            meta=dataclasses.replace(bundle.meta, n_items=bundle.meta.n_items + len(items)),
            model=model,
            index=ItemIndex(index, bundle.index.config),
            item_raw_ids=np.concatenate([bundle.item_raw_ids, np.array(list(items), dtype=object)]),
            item_text=None
            if bundle.item_text is None
            else np.concatenate([bundle.item_text, np.array(texts, dtype=object)]),
            item_vocab=bundle.item_vocab | {raw: int(i) for raw, i in zip(items, new_ids, strict=True)},
        )
        return Recommender(grown, history_len=self.history_len)
