"""Fixtures that run the real services: a Kafka broker, a redis-server and Spark in local mode.

The test stack runs on its own ports and folder (so it can live beside a developer's
`streamrec stack up`); the session starts it if needed and stops it at the end if it started it.
Each test gets its own topics, Redis key prefix and folders (``isolated_cfg``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides

if TYPE_CHECKING:
    from streamrec.stack.redis_cluster import LocalCluster

REPO = Path(__file__).resolve().parent.parent


def base_test_config() -> Config:
    return with_overrides(
        Config(),
        stack=dict(home=str(REPO / ".streamrec" / "test-stack"), cache_dir=str(REPO / ".cache")),
        kafka=dict(bootstrap_servers="127.0.0.1:29092", controller_port=29093),
        redis=dict(port=26379),
        spark=dict(
            master="local[2]",
            shuffle_partitions=2,
            checkpoint_dir=str(REPO / ".streamrec" / "test-spark-checkpoints"),
            conf={"spark.ui.enabled": "false"},
        ),
        # Tuning trains several models per run: off unless a test is about it (test_tuning).
        batch=dict(rank=8, max_iter=5, top_n=10, tune_every=0),
        streaming=dict(top_n=10),
        # Segmenting costs a batch run ~15 s on 2 cores: off unless a test is about segments
        # (test_batch_segments, the e2e test), and then with a narrow k range.
        segments=dict(enabled=False, k_min=2, k_max=4),
    )


@pytest.fixture(scope="session")
def stack_cfg() -> Iterator[Config]:
    """A running test stack (Kafka + Redis)."""
    from streamrec.stack import kafka_broker, manager, redis_server

    cfg = base_test_config()
    started = manager.up(cfg)
    yield cfg
    if started["kafka"] != "already running":
        kafka_broker.process(cfg).stop()
    if started["redis"] != "already running":
        redis_server.process(cfg).stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A local Redis Cluster of three masters on 27001-27003 (stack/redis_cluster.py), for the
    tests that ask for it; stopped at the end if this session started it."""
    from streamrec.stack.redis_cluster import LocalCluster

    cluster = LocalCluster(REPO / ".streamrec" / "test-redis-cluster", first_port=27001)
    started = cluster.start()
    yield cluster
    if started != "already running":
        cluster.stop()


@pytest.fixture(scope="session")
def spark(stack_cfg: Config):  # type: ignore[no-untyped-def]
    from streamrec.spark import build_spark

    session = build_spark(stack_cfg, "test")
    yield session
    session.stop()


@pytest.fixture
def isolated_cfg(stack_cfg: Config, tmp_path: Path) -> Iterator[Config]:
    """The test stack's config with this test's own topics, Redis prefix and folders."""
    from streamrec.kafka_topics import admin_client, ensure_topics

    tag = uuid.uuid4().hex[:10]
    cfg = with_overrides(
        stack_cfg,
        kafka=dict(events_topic=f"test.{tag}.events", dead_letter_topic=f"test.{tag}.dead"),
        redis=dict(key_prefix=f"test{tag}"),
        paths=dict(
            event_store=str(tmp_path / "events"),
            stream_checkpoint=str(tmp_path / "checkpoint"),
            model_store=str(tmp_path / "models"),
        ),
    )
    ensure_topics(cfg.kafka)
    yield cfg
    client = redis.Redis(host=cfg.redis.host, port=cfg.redis.port)
    keys = list(client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
    admin = admin_client(cfg.kafka)
    try:
        admin.delete_topics([cfg.kafka.events_topic, cfg.kafka.dead_letter_topic])
    finally:
        admin.close()


@pytest.fixture
def redis_client(stack_cfg: Config) -> Iterator[redis.Redis]:
    client = redis.Redis(host=stack_cfg.redis.host, port=stack_cfg.redis.port)
    yield client
    client.close()


def read_topic(cfg: Config, topic: str, timeout_s: float = 20.0) -> list:  # type: ignore[type-arg]
    """Every record in ``topic`` from the beginning to its current end."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=cfg.kafka.bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        records = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def source_digest(value: bytes | None) -> str:
    """The SHA-256 a dead letter's headers give for its source value ("" for a tombstone)."""
    import hashlib

    return "" if value is None else hashlib.sha256(value).hexdigest()


def dead_letter_digests(records: list) -> list[str]:  # type: ignore[type-arg]
    """The source values' SHA-256 of dead-letter records, read from their headers."""
    from streamrec.streaming.dead_letter import H_VALUE_SHA256

    return [dict(r.headers)[H_VALUE_SHA256].decode() for r in records]


def trained_with(cfg: Config | None = None) -> dict:  # type: ignore[type-arg]
    """The training record of a hand-built model's meta, as the batch job writes it."""
    from streamrec.model.store import training_record

    cfg = cfg or Config()
    return training_record(cfg.batch, cfg.feedback)
