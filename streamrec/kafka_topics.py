"""Create and inspect the events and dead-letter topics (idempotent)."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamrec.errors import ServiceUnavailable
from streamrec.schemas.config import KafkaConfig

log = logging.getLogger(__name__)

# Dead letters are keyed by their source topic/partition/offset: compaction keeps one copy of
# each even if a replayed micro-batch writes it twice, and never deletes one by age.
DEAD_LETTER_TOPIC_CONFIG = {"cleanup.policy": "compact"}
# Events carry the broker's clock as their record timestamp, whatever the producer's says: the
# stream checks each event's own time against it (streaming.max_event_time_ahead_s).
EVENTS_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}


def admin_client(kafka: KafkaConfig, timeout_ms: int = 10_000) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers.split(","),
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
            client_id="streamrec-admin",
        )
    except KafkaError as exc:
        raise ServiceUnavailable(
            f"Kafka at {kafka.bootstrap_servers} does not answer ({exc!r}). Start the local "
            "stack with `streamrec stack up`, or fix kafka.bootstrap_servers in the config file."
        ) from exc


def ensure_topics(kafka: KafkaConfig, extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Create the events and dead-letter topics (and ``extra`` ones) unless they exist."""
    wanted: dict[str, dict[str, Any]] = {
        kafka.events_topic: {
            "num_partitions": kafka.partitions,
            "replication_factor": 1,
            "configs": EVENTS_TOPIC_CONFIG,
        },
        kafka.dead_letter_topic: {
            "num_partitions": kafka.partitions,
            "replication_factor": 1,
            "configs": DEAD_LETTER_TOPIC_CONFIG,
        },
    }
    wanted.update(extra or {})
    admin = admin_client(kafka)
    try:
        existing = set(admin.list_topics())
        missing = {name: spec for name, spec in wanted.items() if name not in existing}
        if not missing:
            return
        try:
            admin.create_topics(missing, wait_for_metadata=True)
            log.info("created topics %s", sorted(missing))
        except TopicAlreadyExistsError:
            pass  # created concurrently by another process: fine
    finally:
        admin.close()


def partition_bounds(kafka: KafkaConfig, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition of ``topic`` and its (beginning, end) offsets now."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers.split(","),
            client_id="streamrec-offsets",
            enable_auto_commit=False,
        )
    except KafkaError as exc:
        raise ServiceUnavailable(
            f"Kafka at {kafka.bootstrap_servers} does not answer ({exc!r}). Start the local "
            "stack with `streamrec stack up`, or fix kafka.bootstrap_servers in the config file."
        ) from exc
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        beginning, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
        return {tp.partition: (int(beginning[tp]), int(end[tp])) for tp in parts}
    finally:
        consumer.close()
