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
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.demo import namespace_config, reset_namespace
from streamrec.kafka_topics import client_options
from streamrec.producer.invalid import KINDS, malformed
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import connect, decoded
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import dump_config, with_overrides
from streamrec.schemas.redis_layout import decode_list
from streamrec.spark import build_spark
from streamrec.stack import kafka_broker, manager
from streamrec.stack.process import port_open
from streamrec.streaming.fresh_lists import read_states
from streamrec.streaming.job import StreamReport, run_stream, start_stream
from streamrec.streaming.state_rebuild import rebuild_states

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultParams:
    valid: int = 10_000
    malformed: int = 10_000
    load_events: int = 6_000
    rate: float = 400.0
    down_s: float = 10.0
    freeze_s: float = 30.0
    broker_down_s: float = 30.0
    # The stream SIGKILLed at this many random points under a slower steady load.
    stream_kills: int = 3
    kill_load_events: int = 4_000
    kill_rate: float = 50.0
    # The batch job run twice under a steady producer, the second switch timed.
    switch_rate: float = 100.0
    seed: int = 7
    faults: tuple[str, ...] = (
        "poison",
        "redis_restart",
        "redis_freeze",
        "broker_stop",
        "stream_kill",
        "batch_switch",
    )


SHORT = FaultParams(
    valid=1_000,
    malformed=1_000,
    load_events=1_200,
    rate=300.0,
    down_s=3.0,
    freeze_s=5.0,
    broker_down_s=5.0,
    kill_load_events=1_800,
    kill_rate=40.0,
    switch_rate=60.0,
)


@dataclass
class Outcome:
    fault: str
    sent: int
    stored: int
    lost: int
    doubled: int
    halted: bool
    malformed: int = 0
    dead_lettered: int = 0
    bad_lost: int = 0
    bad_doubled: int = 0
    state_doubled: int = 0
    states_rebuilt: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


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


def _topic_keys(cfg: Config, topic: str) -> list[bytes | None]:
    """The keys of every record in ``topic``, from the beginning to its current end."""
    consumer = KafkaConsumer(
        **client_options(cfg.kafka),
        bootstrap_servers=cfg.kafka.bootstrap_servers.split(","),
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        keys: list[bytes | None] = []
        while any(consumer.position(p) < ends[p] for p in parts):
            for batch in consumer.poll(timeout_ms=1000).values():
                keys.extend(record.key for record in batch)
        return keys
    finally:
        consumer.close()


def _stored(spark: SparkSession, cfg: Config, sent: set[str]) -> tuple[int, int, int]:
    """(stored rows of sent events, lost, doubled) in the event store."""
    rows = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    counts = Counter(r[E.EVENT_ID] for r in rows if r[E.EVENT_ID] in sent)
    return sum(counts.values()), len(sent - set(counts)), sum(n - 1 for n in counts.values())


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
    stored, lost, doubled = _stored(spark, cfg, {e[E.EVENT_ID] for e in valid})
    keys = _topic_keys(cfg, cfg.kafka.dead_letter_topic)
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
        halted = not _caught_up(queries.lists, deadline_s=120)
        halted = halted or not all(q.isActive for q in queries.all)
    finally:
        queries.stop_gracefully()
    return _count_load(spark, cfg, events, name, halted)


def _count_load(
    spark: SparkSession, cfg: Config, events: list[dict[str, Any]], name: str, halted: bool
) -> Outcome:
    """The counts once the stream is stopped: the archive query catches up, lost states are
    rebuilt, then the event store and every user's state are compared with what was sent."""
    run_stream(cfg, available_now=True, spark=spark)
    rebuilt = rebuild_states(spark, cfg).written
    users = sorted({e[E.USER_ID] for e in events})
    client = connect(cfg.redis)
    try:
        states = read_states(client, cfg.redis.key_prefix, users)
    finally:
        client.close()
    sent_by_user = Counter(e[E.USER_ID] for e in events)
    pairs = list(zip(users, states, strict=True))
    state_doubled = sum(1 for u, st in pairs if st.events > sent_by_user[u])
    # Users whose state misses events: what Redis lost at a restart without persistence.
    state_short = sum(1 for u, st in pairs if st.events < sent_by_user[u])
    stored, lost, doubled = _stored(spark, cfg, {e[E.EVENT_ID] for e in events})
    return Outcome(
        name,
        len(events),
        stored,
        lost,
        doubled,
        halted,
        state_doubled=state_doubled,
        states_rebuilt=rebuilt,
        detail={"users": len(users), "state_short": state_short},
    )


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
    halted = not _states_complete(cfg, events, deadline_s=240) or stream.poll() is not None
    if stream.poll() is None:
        os.killpg(stream.pid, signal.SIGTERM)
        stream.wait(timeout=60)
    outcome = _count_load(spark, cfg, events, "stream_kill", halted)
    outcome.detail["killed_at_s"] = [round(at, 1) for at in kill_at]
    return outcome


class SwitchWatch:
    """A reader around a version switch: it copies the live version's user lists every poll
    until the pointer moves, then times when each user whose last list under the old version
    was fresher than their list under the new one sees one at least as fresh."""

    def __init__(self, cfg: Config, users: list[str], poll_s: float = 0.02) -> None:
        self.cfg, self.users, self.poll_s = cfg, users, poll_s
        self.before: dict[str, int] = {}  # user -> the old version's list fence at the switch
        self.visible_s: dict[str, float] = {}
        self.waiting: list[str] = []
        self.switched_to: str | None = None

    def _fences(self, client: Any, version: str) -> dict[str, int]:
        """Each user's list fence as a reader decodes it (watermark_ms), one round trip."""
        prefix = self.cfg.redis.key_prefix
        pipe = client.pipeline(transaction=False)
        for user in self.users:
            pipe.hget(L.user_list_key(prefix, version, user), "list")
        raw = pipe.execute()
        return {
            u: decode_list(r, limit=0).watermark_ms
            for u, r in zip(self.users, raw, strict=True)
            if r is not None
        }

    def run(self, old: str, deadline_s: float, stop: threading.Event) -> None:
        prefix = self.cfg.redis.key_prefix
        client = connect(self.cfg.redis)
        try:
            while not stop.is_set():
                live = decoded(client.get(L.current_model_key(prefix)))
                if live is not None and live != old:
                    switched, self.switched_to = time.monotonic(), live
                    break
                self.before = self._fences(client, old) or self.before
                time.sleep(self.poll_s)
            else:
                return
            after = self._fences(client, self.switched_to)
            self.waiting = [u for u, t in self.before.items() if after.get(u, -1) < t]
            pending = set(self.waiting)
            while pending and time.monotonic() - switched < deadline_s:
                now = self._fences(client, self.switched_to)
                for u in list(pending):
                    if now.get(u, -1) >= self.before[u]:
                        self.visible_s[u] = time.monotonic() - switched
                        pending.discard(u)
                time.sleep(self.poll_s)
        finally:
            client.close()


def _batch_switch(spark: SparkSession, cfg: Config, params: FaultParams, tmp: Path) -> Outcome:
    """A first version trained on the first events, then the stream running under a steady
    producer while a second batch run (its own process, ``streamrec batch run``) trains and
    switches; a reader (``SwitchWatch``) times the switch."""
    world = SyntheticWorld(users=200, items=150, segments=4, seed=19)
    pool = world.events(1_000_000)
    sent: list[dict[str, Any]] = []
    stop_sending = threading.Event()

    def until_stopped() -> Any:
        for event in pool:
            if stop_sending.is_set():
                return
            sent.append(event)
            yield event

    # The switch is what is timed: the runs train at the configured setting, untuned.
    untuned = with_overrides(cfg, batch=dict(tune_every=0, holdout_share=0.0))
    config = tmp / "switch.yaml"
    text, env = dump_config(untuned)
    config.write_text(text, "utf-8")
    first_events = [next(pool) for _ in range(1_000)]
    sent += first_events
    publish_events(cfg, first_events)
    run_stream(cfg, available_now=True, spark=spark)
    first = run_batch(untuned, spark=spark).version

    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    producer = threading.Thread(
        target=publish_events, args=(cfg, until_stopped()), kwargs={"rate": params.switch_rate}
    )
    watch = SwitchWatch(cfg, world.user_ids)
    stop_watching = threading.Event()
    halted, code = False, 0
    try:
        producer.start()
        # The stream loads the first version and writes fresh lists under it; the archive
        # query stores the new events for the second run.
        time.sleep(cfg.streaming.archive_trigger_seconds + 5.0)
        watcher = threading.Thread(target=watch.run, args=(first, 30.0, stop_watching))
        watcher.start()
        cmd = [sys.executable, "-m", "streamrec.cli", "--config", str(config), "batch", "run"]
        run = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        code = run.returncode
        if code:
            log.error("faults: the batch run exited %d: %s", code, run.stderr[-3000:])
        watcher.join(timeout=60.0)
        stop_watching.set()
        watcher.join()
        stop_sending.set()
        producer.join()
        halted = not _caught_up(queries.lists, deadline_s=120)
        halted = halted or not all(q.isActive for q in queries.all) or code != 0
    finally:
        stop_watching.set()
        stop_sending.set()
        queries.stop_gracefully()
    outcome = _count_load(spark, cfg, sent, "batch_switch", halted)
    times = sorted(watch.visible_s.values())
    outcome.detail.update(
        batch_exit_code=code,
        switched_from=first,
        switched_to=watch.switched_to,
        fresher_before_switch=len(watch.waiting),
        visible_p50_s=round(times[len(times) // 2], 3) if times else None,
        visible_max_s=round(times[-1], 3) if times else None,
        late=sum(1 for u in watch.waiting if watch.visible_s.get(u, 99.0) > 1.0),
        never_visible=sum(1 for u in watch.waiting if u not in watch.visible_s),
    )
    return outcome


def _states_complete(cfg: Config, events: list[dict[str, Any]], deadline_s: float) -> bool:
    """Until every user's state has taken all their events (the stream caught up)."""
    sent = Counter(e[E.USER_ID] for e in events)
    users = sorted(sent)
    deadline = time.monotonic() + deadline_s
    client = connect(cfg.redis)
    try:
        while time.monotonic() < deadline:
            states = read_states(client, cfg.redis.key_prefix, users)
            if all(st.events >= sent[u] for u, st in zip(users, states, strict=True)):
                return True
            time.sleep(1.0)
        return False
    finally:
        client.close()


def _caught_up(lists: Any, deadline_s: float) -> bool:
    """Until the lists query has taken every record in the topic (no new input twice running);
    False when it stopped or the deadline passed."""
    deadline, idle = time.monotonic() + deadline_s, 0
    while time.monotonic() < deadline:
        if not lists.isActive:
            return False
        progress = lists.lastProgress or {}
        idle = idle + 1 if progress and not progress.get("numInputRows") else 0
        if idle >= 2 and not lists.status.get("isDataAvailable"):
            return True
        time.sleep(1.0)
    return False


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
                        outcome = _batch_switch(spark, cfg_own, params, Path(tmp))
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
