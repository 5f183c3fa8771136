"""Micro-batching: requests that arrive while a batch is computing are encoded and searched together.

On a few CPU cores the encoder's cost is mostly per-call overhead, so a batch of 16 histories costs
little more than one. One batch computes at a time (in a worker thread, so the event loop keeps
accepting requests); whatever queued meanwhile becomes the next batch. Under light load a batch is a
single request and latency is unchanged. `max_batch=1` turns batching off (the slow twin).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import anyio
import numpy as np

from recsys.retrieval.recommender import Recommendations, Recommender

log = logging.getLogger(__name__)


@dataclass
class _Job:
    recommender: Recommender
    history: np.ndarray
    k: int
    exclude_seen: bool
    future: asyncio.Future[Recommendations] = field(repr=False)


class MicroBatcher:
    """Collects `recommend` calls from concurrent requests into batched `Recommender.recommend` calls."""

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1")
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop (from the app's lifespan)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def recommend(
        self, recommender: Recommender, history: np.ndarray, k: int, *, exclude_seen: bool
    ) -> Recommendations:
        """Top-k for one history, computed in the next batch."""
        if self._queue is None:  # not started (no lifespan): compute directly
            return (
                await anyio.to_thread.run_sync(lambda: recommender.recommend([history], k, exclude_seen=exclude_seen))
            )[0]
        future: asyncio.Future[Recommendations] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(recommender, history, k, exclude_seen, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            while len(jobs) < self.max_batch and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                results = await anyio.to_thread.run_sync(_compute, jobs)
            except Exception as err:  # every waiting request gets the error (answered as a 500)
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():  # the client may have gone away
                    job.future.set_result(result)


def _compute(jobs: list[_Job]) -> list[Recommendations]:
    """Group jobs by (model, exclude_seen); one `recommend` per group with the group's largest k."""
    out: list[Recommendations | None] = [None] * len(jobs)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((id(job.recommender), job.exclude_seen), []).append(i)
    for (_, exclude_seen), rows in groups.items():
        recommender = jobs[rows[0]].recommender
        k = max(jobs[i].k for i in rows)
        recs = recommender.recommend([jobs[i].history for i in rows], k, exclude_seen=exclude_seen)
        for i, rec in zip(rows, recs, strict=True):
            kept = jobs[i].k
            out[i] = Recommendations(items=rec.items[:kept], scores=rec.scores[:kept])
    return [r for r in out if r is not None]
