"""What `streamrec bench faults` counts after each fault: the parameters of the runs, the
outcome of one fault, and how lost, doubled and halted are found (the event store, the
dead-letter topic and every user's stream state against what was sent)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from streamrec.kafka_topics import client_options
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import read_states
from streamrec.streaming.job import run_stream
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


def topic_keys(cfg: Config, topic: str) -> list[bytes | None]:
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


def stored_counts(spark: SparkSession, cfg: Config, sent: set[str]) -> tuple[int, int, int]:
    """(stored rows of sent events, lost, doubled) in the event store."""
    rows = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    counts = Counter(r[E.EVENT_ID] for r in rows if r[E.EVENT_ID] in sent)
    return sum(counts.values()), len(sent - set(counts)), sum(n - 1 for n in counts.values())


def count_load(
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
    stored, lost, doubled = stored_counts(spark, cfg, {e[E.EVENT_ID] for e in events})
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


def states_complete(cfg: Config, events: list[dict[str, Any]], deadline_s: float) -> bool:
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


def caught_up(lists: Any, deadline_s: float) -> bool:
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
