"""The ranking stage after retrieval: a ranker (`recsys.registry.RANKERS`, e.g. DARE) re-orders the
retrieval model's top-N against the user's history. Off unless the service is given a ranker.

The stage never adds or drops items: it returns the retrieval candidates in the ranker's order
(ties keep the retrieval order). When the ranker fails on a request, the retrieval order is
returned unchanged with `fallback=True`, and the error is logged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recsys.models.base import SequentialRecommender
from recsys.registry import build_ranker
from recsys.tracking.registry import RegistryError, load_version, resolve_model_uri

log = logging.getLogger(__name__)
RANKER_META = "ranker.json"
RANKER_WEIGHTS = "ranker.pt"


def save_ranker(directory: Path, name: str, params: dict[str, Any], n_items: int, model: SequentialRecommender) -> Path:
    """Write a ranker (its registry name, resolved params, catalog size and weights) to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RANKER_META).write_text(json.dumps({"name": name, "params": params, "n_items": n_items}, indent=2))
    torch.save(model.state_dict(), directory / RANKER_WEIGHTS)
    return directory


def load_ranker(directory: Path) -> tuple[str, SequentialRecommender]:
    """The ranker saved in `directory` by `save_ranker`, in eval mode, with its registry name."""
    meta = json.loads((directory / RANKER_META).read_text())
    model = build_ranker(meta["name"], meta["params"], int(meta["n_items"]))
    state = torch.load(directory / RANKER_WEIGHTS, map_location="cpu", weights_only=True)
    for name, buffer in model.named_buffers():  # side tables (item genres) take their saved shape
        if name in state and state[name].shape != buffer.shape:
            model.register_buffer(name, torch.empty_like(state[name]))
    model.load_state_dict(state)
    return str(meta["name"]), model.eval()


def fetch_ranker(
    ranker_uri: str, tracking_uri: str, *, cache_dir: Path | None = None
) -> tuple[str, SequentialRecommender]:
    """The ranker `ranker_uri` points to now: `models:/name@alias`, `models:/name/3` (registered by
    `python -m pipelines.train_ranker`) or a directory written by `save_ranker`."""
    if not ranker_uri.startswith("models:/"):
        folder = Path(ranker_uri)
        if not (folder / RANKER_META).is_file():
            raise RegistryError(
                f"ranker URI {ranker_uri!r} is neither models:/<name>@<alias> nor a ranker directory "
                f"(with {RANKER_META})",
                public="the ranker URI is neither a registry URI nor a ranker directory",
            )
        return load_ranker(folder)
    return load_version(tracking_uri, resolve_model_uri(tracking_uri, ranker_uri), load_ranker, cache_dir=cache_dir)


@dataclass(frozen=True)
class Ranked:
    items: np.ndarray  # [n] int64 item_idx, best first: the retrieval candidates re-ordered
    scores: np.ndarray  # [n] float32 ranker logits (retrieval scores on fallback)
    fallback: bool  # True: the ranker failed and this is the retrieval order


class RankingStage:
    """Scores retrieval candidates with a ranker's `score(history, candidates)`.

    Args:
        name: the ranker's registry name (reported in responses).
        model: the ranker, in eval mode.
        top_n: candidates asked from retrieval per request.
        history_len: history events fed to the ranker (the most recent ones).
    """

    def __init__(self, name: str, model: SequentialRecommender, top_n: int, history_len: int) -> None:
        if top_n < 1 or history_len < 1:
            raise ValueError(f"top_n and history_len must be >= 1, got {top_n}, {history_len}")
        self.name = name
        self.model = model
        self.top_n = top_n
        self.history_len = history_len

    def scores(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Ranker logits [C] of `candidates` [C] after `history` (item indices, oldest first)."""
        tail = np.ascontiguousarray(history[-self.history_len :])
        items = torch.zeros((1, self.history_len), dtype=torch.long)  # [1, L] left-padded
        if len(tail):
            items[0, self.history_len - len(tail) :] = torch.from_numpy(tail)
        with torch.inference_mode():
            out = self.model.score(items, torch.from_numpy(np.ascontiguousarray(candidates))[None])  # [1, C]
        return out[0].float().numpy()

    def rerank(self, history: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Ranked:
        """`items` (retrieval order, with their `scores`) re-ordered by the ranker; the retrieval
        order with `fallback=True` if the ranker raises or returns non-finite scores."""
        if not len(items):
            return Ranked(items, scores, fallback=False)
        try:
            ranked = self.scores(history, items)
            if ranked.shape != items.shape or not np.isfinite(ranked).all():
                raise ValueError(f"ranker returned {ranked.shape} scores, finite: {bool(np.isfinite(ranked).all())}")
        except Exception:  # any ranker failure: serve the retrieval order, flagged
            log.exception("ranker %s failed; returning the retrieval order", self.name)
            return Ranked(items, scores, fallback=True)
        order = np.argsort(-ranked, kind="stable")
        return Ranked(items[order], ranked[order].astype(np.float32), fallback=False)
