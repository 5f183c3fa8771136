"""The serving benchmark's load generator: a minimal asyncio HTTP/1.1 keep-alive client posting /recommend.

Cheaper than a full HTTP client, so it steals less CPU from the server (both run on the same machine).
Two load shapes: closed loop (N workers, each waiting for its answer) and paced (open-loop arrivals at a
fixed rate, latency from the scheduled send time, so queueing is counted). bench/serve.py runs the cases.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Sample:
    latency_s: float
    status: int  # HTTP status; -1 = timeout or connection error


@dataclass(frozen=True)
class LoadPlan:
    """The load levels of one measurement: closed-loop concurrencies, then a paced run (rate_rps 0: none)."""

    concurrency: tuple[int, ...]
    duration_s: float
    rate_rps: float
    timeout_s: float


class _Conn:
    """One keep-alive HTTP/1.1 connection posting JSON."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed this idle keep-alive connection: reconnect, as HTTP clients do
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next(int(h.split(":", 1)[1]) for h in lines[1:] if h.lower().startswith("content-length:"))
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _one(conn: _Conn, body: bytes, timeout_s: float) -> int:
    try:
        return await asyncio.wait_for(conn.post("/recommend", body), timeout_s)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
        conn.close()
        return -1


async def closed_loop(
    port: int, bodies: list[bytes], concurrency: int, duration_s: float, timeout_s: float
) -> list[Sample]:
    """`concurrency` workers on 127.0.0.1:`port`, each sending its next body when its answer came back.

    Args:
        port: the server's port on loopback.
        bodies: request bodies, taken round-robin.
        concurrency: number of workers (one connection each).
        duration_s: how long the workers keep sending.
        timeout_s: per-request timeout; a timed-out request counts as failed.
    """
    samples: list[Sample] = []
    end = time.perf_counter() + duration_s

    async def worker(w: int) -> None:
        conn, i = _Conn("127.0.0.1", port), w
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status = await _one(conn, bodies[i % len(bodies)], timeout_s)
            samples.append(Sample(time.perf_counter() - t0, status))
            i += concurrency
        conn.close()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return samples


async def paced(
    port: int, bodies: list[bytes], rate: float, duration_s: float, timeout_s: float, max_conns: int
) -> list[Sample]:
    """Open-loop arrivals every 1/rate s; latency counts from the scheduled time (no coordinated omission).

    Args:
        port: the server's port on loopback.
        bodies: request bodies, taken round-robin.
        rate: arrivals per second.
        duration_s: how long arrivals are scheduled.
        timeout_s: per-request timeout; a timed-out request counts as failed.
        max_conns: connections available; an arrival finding none idle counts as failed (saturation).
    """
    samples: list[Sample] = []
    idle = [_Conn("127.0.0.1", port) for _ in range(max_conns)]
    tasks = []
    start = time.perf_counter()

    async def send(i: int, scheduled: float) -> None:
        if not idle:  # every connection busy: the server is past saturation
            samples.append(Sample(time.perf_counter() - scheduled, -1))
            return
        conn = idle.pop()
        status = await _one(conn, bodies[i % len(bodies)], timeout_s)
        samples.append(Sample(time.perf_counter() - scheduled, status))
        idle.append(conn)

    for i in range(int(rate * duration_s)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i, scheduled)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return samples


def latency_row(samples: list[Sample], wall_s: float, **labels: Any) -> dict[str, Any]:
    """Throughput and p50/p95/p99/max latency (ms) of the successful requests of one load level (printed too).

    Args:
        samples: the level's requests.
        wall_s: the level's wall-clock time.
        labels: fields put first in the row (mode, concurrency, index, ...).
    """
    ok = np.array([s.latency_s for s in samples if s.status == 200]) * 1000

    def pct(q: float) -> float | None:
        return round(float(np.percentile(ok, q)), 2) if len(ok) else None

    row = {
        **labels,
        "duration_s": round(wall_s, 2),
        "requests": len(samples),
        "ok": len(ok),
        "failed": len(samples) - len(ok),
        "throughput_rps": round(len(ok) / wall_s, 1),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "max_ms": round(float(ok.max()), 2) if len(ok) else None,
    }
    print("   ", json.dumps(row), flush=True)
    return row


def level_of(row: dict[str, Any]) -> dict[str, Any]:
    """The load level of a `latency_row`: mode, concurrency (closed loop) and rate_rps (paced), None where unset."""
    return {"mode": row["mode"], "concurrency": row.get("concurrency"), "rate_rps": row.get("rate_rps")}


def freeze_client_heap() -> None:
    """Keep the load generator's own garbage collector out of the latencies.

    This process imports torch, polars and mlflow (~650k objects); a full collection over them
    stalls the event loop for ~300 ms, which reads as server latency and, in paced mode, as
    failed requests (measured: 9-14 of 4,000 at 200 req/s). Frozen objects are skipped by the
    collector; what the load test itself allocates is still collected.
    """
    gc.collect()
    gc.freeze()


def run_levels(port: int, bodies: list[bytes], plan: LoadPlan, **labels: Any) -> list[dict[str, Any]]:
    """A warm-up, then one `latency_row` per closed-loop concurrency of `plan` and one for its paced rate.

    Args:
        port: the server's port on loopback.
        bodies: request bodies, taken round-robin.
        plan: the levels to run.
        labels: fields added to every row.
    """
    rows = []
    freeze_client_heap()
    asyncio.run(closed_loop(port, bodies, 2, 2.0, plan.timeout_s))  # warm-up
    for c in plan.concurrency:
        t0 = time.perf_counter()
        samples = asyncio.run(closed_loop(port, bodies, c, plan.duration_s, plan.timeout_s))
        rows.append(latency_row(samples, time.perf_counter() - t0, mode="closed", concurrency=c, **labels))
    if plan.rate_rps:
        t0 = time.perf_counter()
        samples = asyncio.run(paced(port, bodies, plan.rate_rps, plan.duration_s, plan.timeout_s, max_conns=64))
        rows.append(latency_row(samples, time.perf_counter() - t0, mode="paced", rate_rps=plan.rate_rps, **labels))
    return rows


def bodies_for_users(users: list[str], k: int) -> list[bytes]:
    """One /recommend JSON body per user id, asking for the top `k`."""
    return [json.dumps({"user_id": u, "k": k}).encode() for u in users]
