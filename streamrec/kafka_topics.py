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


def client_options(kafka: KafkaConfig) -> dict[str, Any]:
    """kafka-python's security options, the same for every client: the producer, the admin
    client and the consumers."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism,
            sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password,
        )
    if "SSL" in kafka.security_protocol and kafka.ssl_ca_file:
        options["ssl_cafile"] = kafka.ssl_ca_file
    return options


_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def jaas_quoted(value: str) -> str:
    """``value`` as a quoted string of a JAAS configuration line."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spark_options(kafka: KafkaConfig) -> dict[str, str]:
    """The same settings for Spark's Kafka source and sink (the Java client's, prefixed with
    ``kafka.``). Spark redacts option values that name a password in its logs and UI."""
    options = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "kafka.security.protocol": kafka.security_protocol,
    }
    if kafka.security_protocol.startswith("SASL"):
        options["kafka.sasl.mechanism"] = kafka.sasl_mechanism
        options["kafka.sasl.jaas.config"] = (
            f"{_LOGIN_MODULES[kafka.sasl_mechanism]} required "
            f"username={jaas_quoted(kafka.sasl_username)} "
            f"password={jaas_quoted(kafka.sasl_password)};"
        )
    if "SSL" in kafka.security_protocol and kafka.ssl_ca_file:
        options["kafka.ssl.truststore.type"] = "PEM"
        options["kafka.ssl.truststore.location"] = kafka.ssl_ca_file
    return options


def admin_client(kafka: KafkaConfig, timeout_ms: int = 10_000) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            **client_options(kafka),
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


def wanted_topics(kafka: KafkaConfig) -> dict[str, dict[str, Any]]:
    """The topics the jobs need, as ``create_topics`` takes them: name -> partitions,
    replication factor and topic configs. Pure."""
    return {
        kafka.events_topic: {
            "num_partitions": kafka.partitions,
            "replication_factor": kafka.replication_factor,
            "configs": EVENTS_TOPIC_CONFIG,
        },
        kafka.dead_letter_topic: {
            "num_partitions": kafka.partitions,
            "replication_factor": kafka.replication_factor,
            "configs": DEAD_LETTER_TOPIC_CONFIG,
        },
    }


def ensure_topics(kafka: KafkaConfig, extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Create the events and dead-letter topics (and ``extra`` ones) unless they exist."""
    wanted = {**wanted_topics(kafka), **(extra or {})}
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
            **client_options(kafka),
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
