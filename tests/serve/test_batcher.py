"""Micro-batching against its slow twin: one `recommend` call per request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serve_support import TrainedRun

from recsys.retrieval.export import fetch_bundle
from recsys.retrieval.recommender import Recommender
from recsys.serve.batcher import MicroBatcher, _compute, _Job


@pytest.fixture(scope="module")
def recommender(trained_run: TrainedRun, registered: str) -> Recommender:
    return Recommender(fetch_bundle(registered, trained_run.tracking_uri).bundle)


def _cases(rec: Recommender) -> list[tuple[np.ndarray, int, bool]]:
    rng = np.random.default_rng(0)
    users = list(rec.bundle.user_vocab)
    cases = []
    for i in range(40):
        hist = rec.bundle.user_history(users[i % len(users)])
        assert hist is not None
        if i % 3 == 0:
            hist = rng.integers(1, 41, size=int(rng.integers(1, 20)))
        cases.append((hist, int(rng.integers(1, 45)), bool(i % 2)))
    return cases


def _assert_same(a_items: np.ndarray, a_scores: np.ndarray, b_items: np.ndarray, b_scores: np.ndarray) -> None:
    assert len(a_items) == len(b_items)
    np.testing.assert_allclose(a_scores, b_scores, atol=1e-4)
    if len(b_scores):
        strict = set(b_items[b_scores > b_scores[-1] + 1e-4].tolist())
        assert strict <= set(a_items.tolist())


def test_batched_compute_equals_one_call_per_request(recommender: Recommender) -> None:
    cases = _cases(recommender)
    loop = asyncio.new_event_loop()
    jobs = [_Job(recommender, h, k, ex, loop.create_future()) for h, k, ex in cases]
    batched = _compute(jobs)
    loop.close()
    for (h, k, ex), got in zip(cases, batched, strict=True):
        ref = recommender.recommend([h], k, exclude_seen=ex)[0]
        _assert_same(got.items, got.scores, ref.items, ref.scores)


def test_concurrent_requests_are_batched_and_answered_correctly(recommender: Recommender) -> None:
    cases = _cases(recommender)
    sizes: list[int] = []
    original = recommender.recommend

    def spy(histories, k, *, exclude_seen=True):  # type: ignore[no-untyped-def]
        sizes.append(len(histories))
        return original(histories, k, exclude_seen=exclude_seen)

    async def main() -> list:
        batcher = MicroBatcher(max_batch=16)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.recommend(recommender, h, k, exclude_seen=ex) for h, k, ex in cases))
        finally:
            await batcher.stop()

    recommender.recommend = spy  # type: ignore[method-assign]
    try:
        results = asyncio.run(main())
    finally:
        del recommender.recommend
    assert max(sizes) > 1 and max(sizes) <= 16  # requests were grouped, within the limit
    for (h, k, ex), got in zip(cases, results, strict=True):
        ref = recommender.recommend([h], k, exclude_seen=ex)[0]
        _assert_same(got.items, got.scores, ref.items, ref.scores)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(0)
