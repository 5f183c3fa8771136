"""The model serving now, and background reloads that swap it atomically."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recsys.retrieval.bundle import BundleError
from recsys.retrieval.export import current_version, fetch_bundle
from recsys.retrieval.ranking import RankingStage, fetch_ranker
from recsys.retrieval.recommender import Recommendations, Recommender
from recsys.serve.metrics import ServeMetrics
from recsys.serve.schemas import ReloadState, ReloadStatus
from recsys.serve.settings import ServeSettings
from recsys.tracking.registry import RegistryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version. Requests take a reference once, so a swap never changes it under them."""

    recommender: Recommender
    name: str
    version: str
    ranker: RankingStage | None = None  # the ranking stage after retrieval; None = off

    def retrieval_depth(self, k: int) -> int:
        """Candidates asked from retrieval for a top-k: k, or the ranker's top-N when that is larger."""
        return k if self.ranker is None else max(k, self.ranker.top_n)

    def finish(self, history: np.ndarray, candidates: Recommendations, k: int) -> TopK:
        """The top-k of the retrieval `candidates` of `history` (item indices, oldest first): re-ordered
        by the ranker when there is one, as `POST /recommend` answers."""
        if self.ranker is None:
            return TopK(candidates.items[:k], candidates.scores[:k], ranked_by=None, fallback=None)
        ranked = self.ranker.rerank(history, candidates.items, candidates.scores)
        return TopK(ranked.items[:k], ranked.scores[:k], ranked_by=self.ranker.name, fallback=ranked.fallback)

    def top_k(self, histories: Sequence[np.ndarray], k: int, *, exclude_seen: bool = True) -> list[TopK]:
        """`finish` of many non-empty histories at once: one retrieval batch, then the ranker per history.

        Args:
            histories: item indices per query, oldest first (as `Recommender.resolve` gives them).
            k: items per query.
            exclude_seen: drop items that appear in the history.
        """
        found = self.recommender.recommend(histories, self.retrieval_depth(k), exclude_seen=exclude_seen)
        return [self.finish(history, recs, k) for history, recs in zip(histories, found, strict=True)]


@dataclass(frozen=True)
class TopK:
    """One query's answer from the whole pipeline: retrieval, then the ranking stage when there is one."""

    items: np.ndarray  # [k'] int64 item_idx, best first
    scores: np.ndarray  # [k'] float32: the ranker's logits when it ordered them, else the retrieval scores
    ranked_by: str | None  # the ranker's name; None without a ranking stage
    fallback: bool | None  # True: the ranker failed and this is the retrieval order; None without a ranker


def load_model_version(settings: ServeSettings) -> LoadedModel:
    """The version `settings.model_uri` points to now, with the ranker of `settings.ranker_uri` if any."""
    cache = Path(settings.cache_dir) if settings.cache_dir else None
    fetched = fetch_bundle(settings.model_uri, settings.tracking_uri, cache_dir=cache)
    recommender = Recommender(fetched.bundle, history_len=settings.history_len)
    ranker = None
    if settings.ranker_uri is not None:
        name, model = fetch_ranker(settings.ranker_uri, settings.tracking_uri, cache_dir=cache)
        if model.n_items != fetched.bundle.meta.n_items:
            raise ValueError(
                f"ranker {settings.ranker_uri} was trained on a catalog of {model.n_items} items but "
                f"{settings.model_uri} serves {fetched.bundle.meta.n_items}: train the ranker on the same "
                "processed dataset as the retrieval model"
            )
        ranker = RankingStage(name, model, settings.ranker_top_n, model.max_len)
    return LoadedModel(recommender=recommender, name=fetched.bundle.meta.name, version=fetched.version, ranker=ranker)


class ModelHolder:
    """Holds the current `LoadedModel`; `start_reload` loads a new one in a thread and swaps it in.

    The swap is a single attribute assignment: requests that already hold the old model finish on it,
    new requests get the new one. A failed load leaves the old model serving and records the error.
    """

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()  # guards _thread and _status
        self._thread: threading.Thread | None = None
        self._status = ReloadStatus(state="idle", model_version=None)
        self._failures = 0  # failed reloads in a row (the alias poller retries a broken version)
        self._last_reason: str | None = None

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def status(self) -> ReloadStatus:
        with self._lock:
            current = self._current
            return self._status.model_copy(update={"model_version": current.version if current else None})

    def load(self) -> None:
        """Load the version the model URI points to now, in the calling thread (start-up)."""
        self._swap(self._load())

    def swap_in(self, new: LoadedModel) -> None:
        """Serve `new` from the next request on (the current version with items added, say)."""
        self._swap(new)

    def start_reload(self, *, force: bool = False) -> bool:
        """Start a background reload; False when one is already running.

        Args:
            force: reload even when the URI still points to the version serving now.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._status = ReloadStatus(state="running", model_version=None, started_at=_now())
            self._thread = threading.Thread(target=self._reload, args=(force,), name="model-reload", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the running reload (if any) finishes."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    def _reload(self, force: bool) -> None:
        settings = self._settings
        target: str | None = None
        try:
            target = current_version(settings.model_uri, settings.tracking_uri)
            current = self._current
            if not force and current is not None and current.version == target:
                self._finish("unchanged", target)
                return
            new = self._load()
            target = new.version
        except Exception as err:  # any load failure: keep serving the old model, report why
            self._failed(target, err)
            return
        self._failures, self._last_reason = 0, None
        self._swap(new)
        self._finish("succeeded", target)

    def _failed(self, target: str | None, err: Exception) -> None:
        """Record a failed reload: the full message goes to the log (an ERROR the first time a reason
        appears, a WARNING while it repeats), the status gets a reason without paths or URIs."""
        reason = public_reason(err)
        self._failures += 1
        if reason == self._last_reason:
            log.warning("reload of %s still failing (%d in a row): %s", self._settings.model_uri, self._failures, err)
        else:
            log.error("reload of %s failed, keeping the current model: %s", self._settings.model_uri, err)
        self._last_reason = reason
        self._finish("failed", target, error=reason)

    def _load(self) -> LoadedModel:
        return load_model_version(self._settings)

    def _swap(self, new: LoadedModel) -> None:
        self._current = new
        self._metrics.set_model(new.name, new.version)
        log.info("serving %s version %s", new.name, new.version)

    def _finish(self, state: ReloadState, target: str | None, error: str | None = None) -> None:
        self._metrics.reloads.labels(state).inc()
        with self._lock:
            self._status = self._status.model_copy(
                update={"state": state, "target_version": target, "error": error, "finished_at": _now()}
            )


def public_reason(err: Exception) -> str:
    """Why a load failed, in words a client may read: file names inside the bundle, never paths or URIs."""
    if isinstance(err, BundleError | RegistryError):
        return err.public
    return f"{type(err).__name__} while loading the model version (details in the server log)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
