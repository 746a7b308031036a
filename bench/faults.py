"""`streamrec bench faults`: faults with real processes, each counted as lost, doubled, halted.

On the local stack, in its own namespace, each fault runs on fresh topics:

- ``poison``: valid events with malformed records of every kind of producer/invalid.py between
  them (truncated JSON, invalid UTF-8, NaN, 400-digit integers, 2,000-deep nesting,
  tombstones, records at Kafka's 1 MB limit, ...), through the stream: each valid event must
  be stored once and each malformed record dead-lettered once.
- ``redis_restart``: the stream running under a steady producer while its redis-server (one of
  the bench's own) is killed and started again empty.
- ``redis_freeze``: the same with the redis-server frozen (SIGSTOP) for a while.
- ``broker_stop``: the Kafka broker stopped for a while under the running stream, then started
  again; the producer holds its records while the broker is down.
- ``stream_kill``: the stream as its own process, SIGKILLed at random points under load and
  started again at once each time.
- ``batch_switch``: the batch job run twice as its own process (``streamrec batch run``) under
  the running stream and a steady producer. Around the second run's switch a reader polls
  Redis: the users whose list under the old version was fresher than the new version's batch
  list must see a list at least as fresh under the new version; ``visible_s`` is how long after
  the switch each of them did (``late`` counts those over a second or never).

Counts: ``lost`` valid events missing from the event store, ``doubled`` extra copies there,
``bad_lost`` / ``bad_doubled`` for the dead letters, ``halted`` when the stream stopped by
itself, and ``state_doubled`` users whose stream state counts more events than they sent.
After a restart without persistence, the states lost with Redis (whole, or the part from before
the restart) are rebuilt from the event store (``streamrec state rebuild``), counted as
``states_rebuilt``; ``state_short`` counts the users whose state still misses events after it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from streamrec.bench.fault_counts import (
    FaultParams,
    Outcome,
    caught_up,
    count_load,
    states_complete,
    stored_counts,
    topic_keys,
)
from streamrec.bench.faults_switch import batch_switch
from streamrec.demo import namespace_config, reset_namespace
from streamrec.producer.invalid import KINDS, malformed
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.spark import build_spark
from streamrec.stack import kafka_broker, manager
from streamrec.stack.process import port_open
from streamrec.streaming.job import StreamReport, run_stream, start_stream

log = logging.getLogger(__name__)


class OwnRedis:
    """A redis-server of the bench's own (no persistence), to kill, freeze and restart."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("the bench's redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)


def _poison(spark: SparkSession, cfg: Config, params: FaultParams) -> Outcome:
    world = SyntheticWorld(users=300, items=200, segments=4, seed=11)
    valid = list(world.events(params.valid))
    records: list[Any] = []
    bad = 0
    for n, event in enumerate(valid):
        records.append(event)
        while bad < params.malformed * (n + 1) // len(valid):
            records.append(malformed(KINDS[bad % len(KINDS)], event, bad))
            bad += 1
    publish_events(cfg, records)
    halted = False
    try:
        run_stream(cfg, available_now=True, spark=spark)
    except Exception:  # a crash of the stream is the fault being counted
        log.exception("faults: the stream failed on poison records")
        halted = True
    stored, lost, doubled = stored_counts(spark, cfg, {e[E.EVENT_ID] for e in valid})
    keys = topic_keys(cfg, cfg.kafka.dead_letter_topic)
    distinct = len(set(keys))
    return Outcome(
        "poison",
        len(valid),
        stored,
        lost,
        doubled,
        halted,
        bad,
        len(keys),
        bad - distinct,
        len(keys) - distinct,
        detail={"kinds": len(KINDS)},
    )


def _under_load(
    spark: SparkSession, cfg: Config, params: FaultParams, name: str, fault: Callable[[], None]
) -> Outcome:
    """The stream running while a producer sends ``load_events`` at ``rate``; ``fault`` runs a
    third of the way in."""
    world = SyntheticWorld(users=200, items=150, segments=4, seed=13)
    events = list(world.events(params.load_events))
    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    halted = False
    try:
        time.sleep(3.0)
        third = len(events) // 3
        publish_events(cfg, events[:third], rate=params.rate)
        faulting = threading.Thread(target=fault)
        faulting.start()
        if name == "broker_stop":
            # The producer cannot deliver to a stopped broker for longer than its own delivery
            # timeout (30 s, producer/publisher.py): it waits for the broker, the stream does not.
            faulting.join()
        publish_events(cfg, events[third:], rate=params.rate)
        faulting.join()
        halted = not caught_up(queries.lists, deadline_s=120)
        halted = halted or not all(q.isActive for q in queries.all)
    finally:
        queries.stop_gracefully()
    return count_load(spark, cfg, events, name, halted)


def _stream_kills(spark: SparkSession, cfg: Config, params: FaultParams, tmp: Path) -> Outcome:
    """The stream as its own process (``streamrec stream``), SIGKILLed at ``stream_kills``
    random points while a producer sends ``kill_load_events`` at ``kill_rate``, and started
    again at once each time, as a supervisor would."""
    world = SyntheticWorld(users=200, items=150, segments=4, seed=17)
    events = list(world.events(params.kill_load_events))
    config = tmp / "faults.yaml"
    text, env = dump_config(cfg)
    config.write_text(text, "utf-8")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "streamrec.cli", "--config", str(config), "stream"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    duration = len(events) / params.kill_rate
    rng = random.Random(params.seed)
    kill_at = sorted(rng.uniform(0.15, 0.85) * duration for _ in range(params.stream_kills))
    stream = start()
    producer = threading.Thread(
        target=publish_events, args=(cfg, events), kwargs={"rate": params.kill_rate}
    )
    started = time.monotonic()
    producer.start()
    for at in kill_at:
        time.sleep(max(0.0, started + at - time.monotonic()))
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait()
        stream = start()
    producer.join()
    halted = not states_complete(cfg, events, deadline_s=240) or stream.poll() is not None
    if stream.poll() is None:
        os.killpg(stream.pid, signal.SIGTERM)
        stream.wait(timeout=60)
    outcome = count_load(spark, cfg, events, "stream_kill", halted)
    outcome.detail["killed_at_s"] = [round(at, 1) for at in kill_at]
    return outcome


def run_faults(cfg: Config, params: FaultParams) -> dict[str, Any]:
    base = namespace_config(cfg, "faults")
    manager.up(base)
    spark = build_spark(base, "faults")
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="streamrec-faults-") as tmp:
        for name in params.faults:
            started = time.monotonic()
            if name == "poison":
                reset_namespace(base)
                outcome = _poison(spark, base, params)
            else:
                server = OwnRedis(Path(tmp))
                server.start()
                cfg_own = with_overrides(base, redis=dict(port=server.port))
                reset_namespace(cfg_own)
                try:
                    if name == "stream_kill":
                        outcome = _stream_kills(spark, cfg_own, params, Path(tmp))
                    elif name == "batch_switch":
                        outcome = batch_switch(spark, cfg_own, params, Path(tmp))
                    else:
                        fault = _fault(name, cfg_own, server, params)
                        outcome = _under_load(spark, cfg_own, params, name, fault)
                finally:
                    server.kill()
            outcome.seconds = round(time.monotonic() - started, 1)
            log.info("faults: %s", outcome)
            outcomes.append(outcome)
    return {"params": asdict(params), "outcomes": [asdict(o) for o in outcomes]}


def _fault(name: str, cfg: Config, server: OwnRedis, params: FaultParams) -> Callable[[], None]:
    def restart() -> None:
        server.kill()
        time.sleep(params.down_s)
        server.start()

    def freeze() -> None:
        server.signal(signal.SIGSTOP)
        time.sleep(params.freeze_s)
        server.signal(signal.SIGCONT)

    def broker_stop() -> None:
        kafka_broker.process(cfg).stop()
        time.sleep(params.broker_down_s)
        kafka_broker.start(cfg)

    faults = {"redis_restart": restart, "redis_freeze": freeze, "broker_stop": broker_stop}
    return faults[name]


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'fault':<14} {'sent':>6} {'lost':>5} {'doubled':>7} {'halted':>6} {'bad':>6} "
        f"{'bad lost':>8} {'bad dbl':>7} {'state dbl':>9} {'state short':>11} {'rebuilt':>7} "
        f"{'s':>6}"
    )
    lines = [head, "-" * len(head)]
    for o in result["outcomes"]:
        lines.append(
            f"{o['fault']:<14} {o['sent']:>6} {o['lost']:>5} {o['doubled']:>7} "
            f"{'yes' if o['halted'] else 'no':>6} {o['malformed']:>6} {o['bad_lost']:>8} "
            f"{o['bad_doubled']:>7} {o['state_doubled']:>9} "
            f"{o['detail'].get('state_short', 0):>11} {o['states_rebuilt']:>7} "
            f"{o['seconds']:>6}"
        )
        if o["fault"] == "batch_switch":
            d = o["detail"]
            lines.append(
                f"  switch to {d['switched_to']}: {d['fresher_before_switch']} users' lists "
                f"were fresher under the old version; visible under the new one after "
                f"p50 {d['visible_p50_s']} s, max {d['visible_max_s']} s; {d['late']} late (> 1 s)"
            )
    return "\n".join(lines)
