"""`streamrec demo`: the whole path on synthetic data on the local stack, then real lists read
back from Redis and the measured time from an event to its user's updated list.

The demo runs in its own namespace (topics ``<events_topic>.demo``, Redis prefix
``<prefix>-demo``, folders under ``.streamrec/demo``), which it clears first, so it can be run
again and again beside real data.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import time
from pathlib import Path

from streamrec.batch.job import run_batch
from streamrec.errors import StreamrecError
from streamrec.kafka_topics import admin_client, ensure_topics
from streamrec.model import store
from streamrec.producer.run import ProduceOptions, produce, publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import RedisClient, connect, read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.spark import build_spark
from streamrec.stack import manager
from streamrec.streaming.job import StreamQueries, StreamReport, run_stream, start_stream

log = logging.getLogger(__name__)

DEMO_USERS, DEMO_ITEMS, DEMO_SEGMENTS, DEMO_SEED = 500, 300, 5, 7


def namespace_config(cfg: Config, name: str) -> Config:
    """``cfg`` moved to its own namespace: topics ``<topic>.<name>``, Redis prefix
    ``<prefix>-<name>``, folders under ``.streamrec/<name>``; micro-batches back to back."""
    home = Path(".streamrec", name).resolve()
    return with_overrides(
        cfg,
        kafka=dict(
            events_topic=f"{cfg.kafka.events_topic}.{name}",
            dead_letter_topic=f"{cfg.kafka.dead_letter_topic}.{name}",
        ),
        redis=dict(key_prefix=f"{cfg.redis.key_prefix}-{name}"),
        paths=dict(
            event_store=str(home / "events"),
            stream_checkpoint=str(home / "checkpoint"),
            model_store=str(home / "models"),
        ),
        streaming=dict(trigger_seconds=0.0),  # micro-batches back to back: lowest latency
    )


def demo_config(cfg: Config) -> Config:
    return namespace_config(cfg, "demo")


def reset_namespace(cfg: Config) -> None:
    """Delete the namespace's topics, folders and Redis keys, then create the topics again."""
    admin = admin_client(cfg.kafka)
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in (cfg.kafka.events_topic, cfg.kafka.dead_letter_topic) if t in existing]
        if doomed:
            admin.delete_topics(doomed)
            time.sleep(1.0)  # topic deletion completes asynchronously in the broker
    finally:
        admin.close()
    shutil.rmtree(Path(cfg.paths.event_store).parent, ignore_errors=True)
    client = connect(cfg.redis)
    keys = list(client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    ensure_topics(cfg.kafka)


def _wait_for_list(
    client: RedisClient,
    cfg: Config,
    user: str,
    watermark: int,
    timeout_s: float,
    queries: StreamQueries,
) -> float | None:
    """Poll, as an app would, until the user's list is a stream list at least as new as
    ``watermark``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stopped = [q for q in queries.all if not q.isActive]
        if stopped:
            raise StreamrecError(f"the streaming query stopped: {stopped[0].exception()}")
        rec = read_lists(client, cfg.redis.key_prefix, [user])[2][user]
        if rec is not None and rec.source == L.SOURCE_STREAM and rec.watermark_ms >= watermark:
            return time.monotonic()
        time.sleep(0.01)
    return None


def _measure_freshness(
    cfg: Config, world: SyntheticWorld, probes: int, queries: StreamQueries
) -> list[float]:
    """Send one event per probe user and time it until that user's list changes in Redis."""
    client = connect(cfg.redis)
    latencies = []
    users = world.user_ids[:probes]
    # Probe with items the model knows: an event on an unknown item cannot change a list yet.
    known_items = store.load_item_model(cfg.paths.model_store).item_ids
    now_ms = int(time.time() * 1000)
    for n, user in enumerate(users):
        event_time = now_ms + n
        event = {
            E.EVENT_ID: f"demo-probe-{now_ms}-{n}",
            E.USER_ID: user,
            E.ITEM_ID: known_items[(n * 13) % len(known_items)],
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: event_time,
            E.VALUE: 180.0,
        }
        sent_at = time.monotonic()
        publish_events(cfg, [event])
        seen_at = _wait_for_list(client, cfg, user, event_time, 60, queries)
        if seen_at is None:
            log.warning("demo: no fresh list for %s within 60 s", user)
            continue
        latencies.append(seen_at - sent_at)
    client.close()
    return latencies


def _print_lists(cfg: Config, users: list[str]) -> None:
    client = connect(cfg.redis)
    now_ms = int(time.time() * 1000)
    _, _, lists = read_lists(client, cfg.redis.key_prefix, users)
    for user, rec in lists.items():
        if rec is None:
            print(f"\n{user}: no list in Redis")
            continue
        age = (now_ms - rec.generated_ms) / 1000
        print(
            f"\n{user}  (source {rec.source}, model {rec.model_version}, generated {age:.1f}s ago)"
        )
        for rank, (item, score) in enumerate(rec.items[:10], start=1):
            print(f"  {rank:>2}. {item:<12} {score:8.4f}")
    client.close()


def run_demo(cfg: Config, events: int = 20_000, users_to_show: int = 3) -> int:
    cfg = demo_config(cfg)
    print("1/5 starting the local stack (Kafka KRaft broker + redis-server)")
    manager.up(cfg)
    reset_namespace(cfg)
    print(f"2/5 producing {events} synthetic events (+0.5% malformed) to {cfg.kafka.events_topic}")
    report = produce(
        cfg,
        ProduceOptions(
            count=events,
            users=DEMO_USERS,
            items=DEMO_ITEMS,
            segments=DEMO_SEGMENTS,
            seed=DEMO_SEED,
            inject_invalid=0.005,
            new_user_share=0.05,
            progress=True,
        ),
    )
    print(f"    {report.summary()}")
    spark = build_spark(cfg, "demo")
    print("3/5 streaming job over the topic (available-now): dead letters + event store")
    stream = run_stream(cfg, available_now=True, spark=spark)
    print(
        f"    {stream.valid} events stored, {stream.invalid} sent to {cfg.kafka.dead_letter_topic}"
    )
    print("4/5 batch job: implicit ALS on the event store, top-N for every user to Redis")
    result = run_batch(cfg, spark=spark)
    print(f"    {result.summary()}")
    print("5/5 continuous stream: one event per probe user, timed until its list changes")
    live = StreamReport()
    queries = start_stream(spark, cfg, available_now=False, report=live)
    try:
        time.sleep(3.0)  # first micro-batch loads the model
        world = SyntheticWorld(
            users=DEMO_USERS, items=DEMO_ITEMS, segments=DEMO_SEGMENTS, seed=DEMO_SEED
        )
        latencies = _measure_freshness(cfg, world, 10, queries)
        _print_lists(cfg, world.user_ids[:users_to_show])
    finally:
        queries.stop_gracefully()
    if not latencies:
        print("\nno fresh list arrived: see the log above")
        return 1
    print(
        f"\nevent -> updated list in Redis, {len(latencies)} probes: "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    print("The stack keeps running; stop it with `streamrec stack down`.")
    return 0
