"""An open-loop HTTP/1.1 load generator in a process of its own, for `streamrec bench lookup`.

Request k of a run is due at ``start + k / rate``, whatever the server does: the schedule never
waits for answers. A due request goes out on an idle keep-alive connection of a fixed pool; when
every connection waits for an answer it queues, and its latency still counts from its due time,
so a server that falls behind is charged for the wait (no coordinated omission). The generator
runs in a spawned process (its own interpreter and GIL) on uvloop with a raw asyncio Protocol
per connection (no streams, no HTTP library), and reports its own CPU time and how late it sent
requests (``send_lag``: what of a latency is the generator's, not the server's).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import uvloop

_SETTLE_S = 30.0  # after the last due time, how long answers are waited for
_TICK_S = 0.001


def content_length(head: bytes) -> int | None:
    """The Content-Length of a response head (status line and headers, lower case)."""
    for line in head.split(b"\r\n")[1:]:
        if line.startswith(b"content-length:"):
            return int(line[15:])
    return None


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time, its answer parsed from the
    status line and Content-Length (the servers measured always send one)."""

    def __init__(self, run: _Run) -> None:
        self.run, self.buffer = run, bytearray()
        self.transport: asyncio.Transport | None = None
        self.due = 0.0  # the in-flight request's due time (perf_counter seconds)
        self.busy = False  # a request is in flight
        self.lost: asyncio.Future[None] = run.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = content_length(head)
        if length is None:
            self.run.fail("an answer without Content-Length")
            return
        if len(self.buffer) < end + 4 + length:
            return
        if len(self.buffer) > end + 4 + length:
            self.run.fail("more bytes than one answer (the generator never pipelines)")
            return
        self.buffer.clear()
        self.busy = False
        self.run.answered(self, time.perf_counter() - self.due, head.startswith(b"http/1.1 200"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.run.closed(self)


class _Run:
    """One run's schedule, pool and results."""

    def __init__(
        self, requests: list[bytes], rate: float, total: int, address: tuple[str, int]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.address = address
        self.pool: list[_Connection] = []  # every connection opened, to close at the end
        self.requests, self.rate, self.total = requests, rate, total
        self.idle: list[_Connection] = []
        self.queued: deque[int] = deque()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors, self.finished = 0, self.loop.create_future()
        self.problem: str | None = None
        self.start = 0.0

    def due(self, k: int) -> float:
        return self.start + k / self.rate

    def dispatch(self, k: int, now: float) -> None:
        self.lags.append(now - self.due(k))
        if self.idle:
            self.idle.pop().send(self.requests[k % len(self.requests)], self.due(k))
        else:
            self.queued.append(k)

    def answered(self, conn: _Connection, latency: float, ok: bool) -> None:
        self.latencies.append(latency)
        self.errors += not ok
        if self.queued:
            k = self.queued.popleft()
            conn.send(self.requests[k % len(self.requests)], self.due(k))
        else:
            self.idle.append(conn)
        if len(self.latencies) == self.total and not self.finished.done():
            self.finished.set_result(None)

    def fail(self, problem: str) -> None:
        self.problem = self.problem or problem
        if not self.finished.done():
            self.finished.set_result(None)

    def closed(self, conn: _Connection) -> None:
        """A connection the server closed: with an answer owed, the run fails; an idle one
        (the server's keep-alive timeout, when the rate leaves some connections unused) is
        replaced, as a client's pool would."""
        if self.finished.done():
            return
        if conn.busy:
            self.fail("the server closed a connection before answering")
            return
        if conn in self.idle:
            self.idle.remove(conn)
        self.loop.create_task(self.open_connection())

    async def open_connection(self) -> None:
        _, conn = await self.loop.create_connection(lambda: _Connection(self), *self.address)
        self.pool.append(conn)
        if self.queued:
            k = self.queued.popleft()
            conn.send(self.requests[k % len(self.requests)], self.due(k))
        else:
            self.idle.append(conn)

    async def schedule(self) -> None:
        """Dispatch every request whose due time has come, then sleep until the next one, for
        at least the event loop's timer resolution (1 ms): a shorter sleep would spin and take
        the cores the servers measured need. A request is never sent before its due time."""
        k = 0
        while k < self.total and not self.finished.done():
            now = time.perf_counter()
            while k < self.total and self.due(k) <= now:
                self.dispatch(k, now)
                k += 1
            if k < self.total:
                await asyncio.sleep(max(_TICK_S, self.due(k) - time.perf_counter()))


def get_requests(url: str, paths: list[str]) -> list[bytes]:
    """HTTP/1.1 GETs of ``paths`` on ``url``'s server, as the generator sends them."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]


def post_requests(url: str, path: str, bodies: list[bytes]) -> list[bytes]:
    """HTTP/1.1 POSTs of JSON ``bodies`` to ``path`` on ``url``'s server."""
    parts = urlsplit(url)
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
    return [
        f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]


async def _load(
    url: str, requests: list[bytes], rate: float, duration_s: float, connections: int
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    run = _Run(requests, rate, max(1, int(rate * duration_s)), (host, port))
    for _ in range(connections):
        await run.open_connection()
    cpu_before = time.process_time()
    run.start = time.perf_counter() + 0.01
    await run.schedule()
    try:
        await asyncio.wait_for(asyncio.shield(run.finished), duration_s + _SETTLE_S)
    except TimeoutError:
        run.problem = run.problem or f"answers missing {_SETTLE_S:.0f} s after the last due time"
    elapsed = time.perf_counter() - run.start
    cpu_s = time.process_time() - cpu_before
    for conn in run.pool:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.gather(*(conn.lost for conn in run.pool))
    ms = np.array(run.latencies or [float("nan")]) * 1000
    lag_ms = np.array(run.lags or [float("nan")]) * 1000
    return {
        "rate_asked": rate,
        "rate_achieved": len(run.latencies) / elapsed,
        "requests": len(run.latencies),
        "errors": run.errors + (run.total - len(run.latencies)),
        "problem": run.problem,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "send_lag_p99_ms": float(np.percentile(lag_ms, 99)),
        "generator_cores": cpu_s / elapsed,
    }


def http_load(
    url: str, paths: list[str], rate: float, duration_s: float, connections: int
) -> dict[str, Any]:
    """Load ``url`` with GETs of ``paths`` (in turn) at ``rate`` requests/s for ``duration_s``
    over ``connections`` keep-alive connections, in this process: rate achieved, answers that
    were not 200 (``errors``, unanswered ones included), latency p50/p99 from the due times."""
    return uvloop.run(_load(url, get_requests(url, paths), rate, duration_s, connections))


def requests_load(
    url: str, requests: list[bytes], rate: float, duration_s: float, connections: int
) -> dict[str, Any]:
    """``http_load`` of ready-made ``requests`` (in turn): any method, any body."""
    return uvloop.run(_load(url, requests, rate, duration_s, connections))


class LoadGenerator:
    """The generator's process, started once and reused for every run of a benchmark:
    ``with LoadGenerator() as gen: gen.run(url, paths, rate, duration_s, connections)``."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self.pid: int = self._pool.submit(os.getpid).result()

    def run(
        self, url: str, paths: list[str], rate: float, duration_s: float, connections: int
    ) -> dict[str, Any]:
        """``http_load`` in the generator's process."""
        return self._pool.submit(http_load, url, paths, rate, duration_s, connections).result()

    def run_requests(
        self, url: str, requests: list[bytes], rate: float, duration_s: float, connections: int
    ) -> dict[str, Any]:
        """``requests_load`` in the generator's process."""
        job = self._pool.submit(requests_load, url, requests, rate, duration_s, connections)
        return job.result()

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
