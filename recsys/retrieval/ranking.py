"""The ranking stage after retrieval: a ranker (`recsys.registry.RANKERS`, e.g. DARE) re-orders the
retrieval model's top-N against the user's history. Off unless the service is given a ranker.

The stage never adds or drops items: it returns the retrieval candidates in the ranker's order
(ties keep the retrieval order). When the ranker fails on a request, the retrieval order is
returned unchanged with `fallback=True`, and the error is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recsys.model_io import MODEL_JSON, build_from_spec, load_weights, read_spec
from recsys.models.ranker import Ranker
from recsys.tracking.registry import RegistryError, load_version, resolve_model_uri

log = logging.getLogger(__name__)


def _load_named_ranker(directory: Path) -> tuple[str, Ranker]:
    """The ranker saved in `directory` by `recsys.model_io.save_model`, in eval mode, with its registry name."""
    spec = read_spec(directory)
    model = build_from_spec(spec, source=str(directory / MODEL_JSON), kind="ranker")
    return str(spec["name"]), load_weights(model, directory)


def fetch_ranker(ranker_uri: str, tracking_uri: str, *, cache_dir: Path | None = None) -> tuple[str, Ranker]:
    """The ranker `ranker_uri` points to now: `models:/name@alias`, `models:/name/3` (registered by
    `python -m pipelines.train_ranker`) or a directory written by `recsys.model_io.save_model`."""
    if not ranker_uri.startswith("models:/"):
        folder = Path(ranker_uri)
        try:
            return _load_named_ranker(folder)
        except FileNotFoundError as err:
            raise RegistryError(
                f"ranker URI {ranker_uri!r} is neither models:/<name>@<alias> nor a ranker directory "
                f"(with {MODEL_JSON})",
                public="the ranker URI is neither a registry URI nor a ranker directory",
            ) from err
    return load_version(
        tracking_uri, resolve_model_uri(tracking_uri, ranker_uri), _load_named_ranker, cache_dir=cache_dir
    )


@dataclass(frozen=True)
class Ranked:
    items: np.ndarray  # [n] int64 item_idx, best first: the retrieval candidates re-ordered
    scores: np.ndarray  # [n] float32 ranker logits (retrieval scores on fallback)
    fallback: bool  # True: the ranker failed and this is the retrieval order


class RankingStage:
    """Scores retrieval candidates with a ranker's `score(history, candidates, stage1_scores)`.

    Args:
        name: the ranker's registry name (reported in responses).
        model: the ranker, in eval mode.
        top_n: candidates asked from retrieval per request.
        history_len: history events fed to the ranker (the most recent ones).
    """

    def __init__(self, name: str, model: Ranker, top_n: int, history_len: int) -> None:
        if top_n < 1 or history_len < 1:
            raise ValueError(f"top_n and history_len must be >= 1, got {top_n}, {history_len}")
        self.name = name
        self.model = model
        self.top_n = top_n
        self.history_len = history_len

    def scores(self, history: np.ndarray, candidates: np.ndarray, stage1: np.ndarray | None = None) -> np.ndarray:
        """Ranker logits [C] of `candidates` [C] after `history` (item indices, oldest first), given
        the retrieval scores `stage1` [C] of the candidates (None: unknown, zeros)."""
        tail = np.ascontiguousarray(history[-self.history_len :])
        items = torch.zeros((1, self.history_len), dtype=torch.long)  # [1, L] left-padded
        if len(tail):
            items[0, self.history_len - len(tail) :] = torch.from_numpy(tail)
        cands = torch.from_numpy(np.ascontiguousarray(candidates))[None]  # [1, C]
        first = torch.zeros(cands.shape) if stage1 is None else torch.tensor(stage1, dtype=torch.float32)[None]
        with torch.inference_mode():
            out = self.model.score(items, cands, first)  # [1, C]
        return out[0].float().numpy()

    def rerank(self, history: np.ndarray, items: np.ndarray, scores: np.ndarray) -> Ranked:
        """`items` (retrieval order, with their `scores`) re-ordered by the ranker; the retrieval
        order with `fallback=True` if the ranker raises or returns non-finite scores."""
        if not len(items):
            return Ranked(items, scores, fallback=False)
        try:
            ranked = self.scores(history, items, scores)
            if ranked.shape != items.shape or not np.isfinite(ranked).all():
                raise ValueError(f"ranker returned {ranked.shape} scores, finite: {bool(np.isfinite(ranked).all())}")
        except Exception:  # any ranker failure: serve the retrieval order, flagged
            log.exception("ranker %s failed; returning the retrieval order", self.name)
            return Ranked(items, scores, fallback=True)
        order = np.argsort(-ranked, kind="stable")
        return Ranked(items[order], ranked[order].astype(np.float32), fallback=False)
