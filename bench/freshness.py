"""`streamrec bench freshness [--rate R ...] [--duration S] --json OUT`: how fresh lists are.

Measured as an app sees it: from the moment the producer hands an event to Kafka to the moment
a client polling Redis sees that user's list built from it (the list's fence reaches the
event's time). On the local stack, in its own namespace (``*.bench`` topics, the
``<prefix>-bench`` Redis prefix, ``.streamrec/bench``), cleared first:

1. a warm-up history of synthetic events goes through the stream (available-now) and one batch
   run, so that a model and every user's state exist;
2. the stream then runs continuously (micro-batches back to back) while, for each rate, a
   producer thread sends events for the synthetic users at that rate for ``duration`` seconds,
   and every ``probe_every_s`` one event is a probe: a poller thread times it until its user's
   list in Redis carries it;
   The first rate first runs ``settle_s`` seconds unmeasured (the JVM's JIT warm-up; its
   figures are kept apart, under "settle");
3. a rate is *kept up with* when every probe arrived and the stream drained within
   ``drain_ok_s`` of the producer's last event: a stream that falls behind has a backlog to
   work off when the producer stops.

The JSON holds p50/p95/p99 in milliseconds per rate, the rate the producer actually achieved,
probes sent and seen, and the highest rate kept up with.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamrec.batch.job import run_batch
from streamrec.demo import namespace_config, reset_namespace
from streamrec.model import store
from streamrec.model.user_state import decode_state
from streamrec.producer.run import ProduceOptions, produce, publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.spark import build_spark
from streamrec.stack import manager
from streamrec.streaming.job import StreamReport, run_stream, start_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FreshnessParams:
    rates: tuple[float, ...] = (500.0, 2000.0, 5000.0)
    duration_s: float = 30.0
    users: int = 5000
    items: int = 1000
    warmup_events: int = 50_000
    # Seconds of load at the first rate before anything is measured: the JVM compiles the
    # stream's hot paths in its first minute or two of load (its JIT compiler threads alone
    # took ~0.4 of a core here), a deployment runs for days. Reported apart, as "settle".
    settle_s: float = 40.0
    probe_every_s: float = 0.1
    drain_timeout_s: float = 60.0
    drain_ok_s: float = 3.0


class _Probes:
    """Probe events in flight, and the poller that times them until their list carries them."""

    def __init__(self, cfg: Config, version: str) -> None:
        self.cfg, self.version = cfg, version
        self.pending: dict[str, tuple[int, float]] = {}  # user -> (event time, sent at)
        self.latencies: list[tuple[float, float]] = []  # (sent at, latency s)
        self.sent = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, user: str, event_time: int, sent_at: float) -> None:
        with self.lock:
            if user not in self.pending:  # one probe per user in flight: fences are per user
                self.pending[user] = (event_time, sent_at)
                self.sent += 1

    def poll(self) -> None:
        client = connect(self.cfg.redis)
        try:
            while not self.stop.is_set() or self.pending:
                with self.lock:
                    waiting = list(self.pending.items())
                if not waiting:
                    time.sleep(0.01)
                    continue
                pipe = client.pipeline(transaction=False)
                for user, _ in waiting:
                    pipe.hget(
                        L.user_list_key(self.cfg.redis.key_prefix, self.version, user),
                        L.FIELD_FENCE,
                    )
                fences = pipe.execute()
                now = time.monotonic()
                with self.lock:
                    for (user, (event_time, sent_at)), fence in zip(waiting, fences, strict=True):
                        if fence is not None and int(fence) >= event_time:
                            self.latencies.append((sent_at, now - sent_at))
                            del self.pending[user]
                time.sleep(0.01)
        finally:
            client.close()


class _ProbeSink(Protocol):
    def add(self, user: str, event_time: int, sent_at: float) -> None: ...


class _QueueSink:
    """The producer process's side of the probes: handed to the bench process through a queue
    (``time.monotonic`` is one clock for every process of the machine)."""

    def __init__(self, queue: Queue[tuple[str, int, float]]) -> None:
        self.queue = queue

    def add(self, user: str, event_time: int, sent_at: float) -> None:
        self.queue.put((user, event_time, sent_at))


def _stream_of_events(
    world: SyntheticWorld,
    probes: _ProbeSink,
    probe_every_s: float,
    stop_at: float,
    tag: str,
    known_items: frozenset[str],
    weights: dict[str, float],
) -> Iterator[dict[str, Any]]:
    """The world's events, re-timed to now with fresh ids; every ``probe_every_s`` one of them
    is a probe: positive feedback (a skip weighs less than nothing) on an item the model knows,
    so that its user's list must change (a user whose events are all on items the warm-up
    never saw, or all skips, gets no personal list, by design)."""
    next_probe = time.monotonic()
    for n, event in enumerate(itertools.cycle(world.events(50_000))):
        now = time.monotonic()
        if now >= stop_at:
            return
        event_time = int(time.time() * 1000)
        out = {**event, E.EVENT_ID: f"bench-{tag}-{n}", E.EVENT_TIME: event_time}
        if (
            now >= next_probe
            and event[E.ITEM_ID] in known_items
            and weights.get(event[E.EVENT_TYPE], 0.0) > 0
        ):
            probes.add(str(event[E.USER_ID]), event_time, now)
            next_probe = now + probe_every_s
        yield out


def _log_lost(cfg: Config, version: str, missing: dict[str, tuple[int, float]]) -> None:
    """What Redis holds for probes whose list never carried them: where to start looking."""
    client = connect(cfg.redis)
    try:
        for user, (event_time, _) in sorted(missing.items())[:20]:
            fence = client.hget(L.user_list_key(cfg.redis.key_prefix, version, user), L.FIELD_FENCE)
            state = decode_state(client.hget(L.user_state_key(cfg.redis.key_prefix, user), "state"))
            log.warning(
                "bench freshness: probe of user %s at %d never seen: list fence %s, "
                "state of %d events, newest %s, micro-batch %d %s, weights %s",
                user,
                event_time,
                fence,
                state.events,
                state.last_ms,
                state.batch,
                state.parts,
                state.weights,
            )
    finally:
        client.close()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.array(latencies) * 1000
    return {f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def _produce(
    cfg: Config,
    world: SyntheticWorld,
    rate: float,
    duration_s: float,
    params: FreshnessParams,
    tag: str,
    known_items: frozenset[str],
    probes: Queue[tuple[str, int, float]],
    sent: Queue[tuple[int, float]],
) -> None:
    """The producer, in its own process as producers are: in the Spark driver's process it would
    compete with the stream for the interpreter lock."""
    started = time.monotonic()
    events = _stream_of_events(
        world,
        _QueueSink(probes),
        params.probe_every_s,
        started + duration_s,
        tag,
        known_items,
        cfg.feedback.weights,
    )
    report = publish_events(cfg, events, rate=rate)
    sent.put((report.sent, time.monotonic() - started))


def _run_rate(
    cfg: Config,
    world: SyntheticWorld,
    version: str,
    rate: float,
    params: FreshnessParams,
    duration_s: float,
) -> dict[str, Any]:
    probes = _Probes(cfg, version)
    poller = threading.Thread(target=probes.poll, daemon=True)
    poller.start()
    started = time.monotonic()
    tag = f"{int(rate)}-{int(started)}"
    spawn = multiprocessing.get_context("spawn")  # no fork of a process running a JVM gateway
    probe_queue: Queue[tuple[str, int, float]] = spawn.Queue()
    sent_queue: Queue[tuple[int, float]] = spawn.Queue()  # (events sent, seconds)
    known_items = frozenset(store.load_item_model(cfg.paths.model_store, version).item_ids)
    args = (cfg, world, rate, duration_s, params, tag, known_items, probe_queue, sent_queue)
    producer = spawn.Process(target=_produce, args=args, daemon=True)
    producer.start()
    sent = None
    while sent is None:
        with contextlib.suppress(queue.Empty):
            probes.add(*probe_queue.get(timeout=0.01))
        with contextlib.suppress(queue.Empty):
            sent = sent_queue.get_nowait()
        if sent is None and not producer.is_alive() and sent_queue.empty():
            raise RuntimeError(f"the bench's producer process ended with {producer.exitcode}")
    producer.join()
    while not probe_queue.empty():
        probes.add(*probe_queue.get())
    stopped = time.monotonic()
    deadline = stopped + params.drain_timeout_s
    while probes.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    drain_s = time.monotonic() - stopped
    probes.stop.set()
    with probes.lock:
        lost = len(probes.pending)
        missing = dict(probes.pending)
        probes.pending.clear()
    if missing:
        _log_lost(cfg, version, missing)
    poller.join(timeout=5)
    ordered = [lat for _, lat in sorted(probes.latencies)]
    result = {
        "rate_asked": rate,
        "rate_achieved": sent[0] / sent[1] if sent[1] > 0 else 0.0,
        "events": sent[0],
        "probes_sent": probes.sent,
        "probes_seen": len(ordered),
        "probes_lost": lost,
        **_percentiles(ordered),
        "drain_s": drain_s,
        "kept_up": lost == 0 and bool(ordered) and drain_s <= params.drain_ok_s,
    }
    log.info("bench freshness: %s", result)
    return result


def run_freshness(cfg: Config, params: FreshnessParams) -> dict[str, Any]:
    cfg = namespace_config(cfg, "bench")
    manager.up(cfg)
    reset_namespace(cfg)
    world = SyntheticWorld(
        users=params.users, items=params.items, segments=5, seed=17, new_user_share=0.0
    )
    log.info("bench freshness: warm-up, %d events", params.warmup_events)
    warmup = ProduceOptions(
        count=params.warmup_events,
        users=params.users,
        items=params.items,
        segments=5,
        seed=17,
        new_user_share=0.0,
    )
    produce(cfg, warmup)
    spark = build_spark(cfg, "bench-freshness")
    run_stream(cfg, available_now=True, spark=spark)
    run_batch(cfg, spark=spark)
    version = store.current_version(cfg.paths.model_store)
    assert version is not None
    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    results = []
    settle = None
    try:
        time.sleep(3.0)  # the first micro-batch loads the model
        if params.settle_s > 0:
            log.info(
                "bench freshness: settling, %.0f s at %.0f events/s, not measured",
                params.settle_s,
                params.rates[0],
            )
            settle = _run_rate(cfg, world, version, params.rates[0], params, params.settle_s)
        for rate in params.rates:
            results.append(_run_rate(cfg, world, version, rate, params, params.duration_s))
    finally:
        queries.stop_gracefully()
    # The producer's own rate: on this machine it may fall short of the rate asked.
    kept = [r["rate_achieved"] for r in results if r["kept_up"]]
    return {
        "params": {**params.__dict__, "rates": list(params.rates)},
        "model_version": version,
        "settle": settle,
        "rates": results,
        "sustained_rate": max(kept) if kept else 0.0,
    }


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'rate asked':>10} {'achieved':>9} {'probes':>7} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'drain s':>8} {'kept up':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rates"]:
        lines.append(
            f"{r['rate_asked']:10.0f} {r['rate_achieved']:9.0f} "
            f"{r['probes_seen']:>3}/{r['probes_sent']:<3} {r['p50_ms']:8.0f} "
            f"{r['p95_ms']:8.0f} {r['p99_ms']:8.0f} {r['drain_s']:8.1f} "
            f"{r['kept_up']!s:>8}"
        )
    lines.append(f"highest rate kept up with: {result['sustained_rate']:.0f} events/s")
    settle = result.get("settle")
    if settle:
        lines.append(
            f"(first, unmeasured: {result['params']['settle_s']:.0f} s at "
            f"{settle['rate_asked']:.0f}/s to settle: p50 {settle['p50_ms']:.0f} ms, "
            f"p99 {settle['p99_ms']:.0f} ms)"
        )
    return "\n".join(lines)


def write(result: dict[str, Any], path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
