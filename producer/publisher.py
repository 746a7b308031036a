"""Publish events to the events topic with kafka-python's ``KafkaProducer``.

kafka-python 3.0 is idempotent with ``acks=all`` by default, so a retried send never
duplicates a record; what is left to this module:

- ``open()`` connects and checks the topic up front, failing fast with ``ServiceUnavailable``
  that says how to start the broker, instead of blocking on the first send;
- ``send()`` validates with the contract first, and a rejected event is returned as a reason,
  not sent: the producer side rejects exactly what the streaming job would;
- ``send_raw()`` bypasses validation, to inject malformed records for the dead-letter path;
- every delivery is counted; a failed one raises ``ServiceUnavailable`` at the next send or
  flush, so nothing is dropped silently.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner import DefaultPartitioner

from streamrec.errors import ServiceUnavailable
from streamrec.kafka_topics import client_options
from streamrec.schemas.config import KafkaConfig
from streamrec.schemas.events import USER_ID, encode_event, validate_event

log = logging.getLogger(__name__)

# Time limits of a local, single-broker stack: long enough for a busy laptop, short enough that a
# stopped broker is reported in seconds rather than after kafka-python's minute-long defaults.
CONNECT_TIMEOUT_MS = 5_000
MAX_BLOCK_MS = 10_000
REQUEST_TIMEOUT_MS = 10_000
DELIVERY_TIMEOUT_MS = 30_000
# Records wait up to this long to share a produce request: at 2,000 events/s, 20 ms instead of
# 5 ms cut the producer's CPU (kafka-python, both threads) from ~0.6 to ~0.45 of a core and the
# broker's requests fourfold, for at most 20 ms of a freshness budget of a second.
LINGER_MS = 20


def event_key(event: dict[str, Any]) -> bytes:
    """The Kafka key of an event: its user id, so that one user's events stay in order."""
    return str(event[USER_ID]).encode("utf-8")


class RememberingPartitioner(DefaultPartitioner):
    """Kafka's default assignment (murmur2 of the key modulo the partition count, as the Java
    client), remembered per key and partition count: producers send the same users' keys again
    and again, and kafka-python's pure-Python murmur2 plus its metadata lookups cost about
    20 µs per record, a tenth of the producer's time."""

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.max_keys = max_keys
        self._known: dict[tuple[str, bytes, int], int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:  # random for no key; errors as Kafka's
            return int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
        known = (topic, serialized_key, len(partitions))
        chosen = self._known.get(known)
        if chosen is None:
            if len(self._known) >= self.max_keys:
                self._known.clear()
            chosen = int(
                super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            )
            self._known[known] = chosen
        return chosen


def unreachable_message(kafka: KafkaConfig, exc: BaseException) -> str:
    return (
        f"Kafka at {kafka.bootstrap_servers} does not answer ({exc}). Start the local stack with "
        "`streamrec stack up`, or fix kafka.bootstrap_servers in the config file."
    )


def no_topic_message(kafka: KafkaConfig, topic: str, exc: BaseException) -> str:
    return (
        f"Kafka at {kafka.bootstrap_servers} answers, but gives no partitions for topic "
        f"{topic!r} ({exc}); the broker does not create topics on its own. "
        "`streamrec stack up` creates it, or fix kafka.events_topic in the config file."
    )


@dataclass
class DeliveryStats:
    """What the broker acknowledged so far: records handed over, delivered and failed."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed


class EventPublisher:
    """A Kafka producer for the events topic of ``kafka``; use as a context manager."""

    def __init__(
        self, kafka: KafkaConfig, *, topic: str | None = None, client_id: str = "streamrec-producer"
    ) -> None:
        self.kafka = kafka
        self.topic = topic or kafka.events_topic
        self.client_id = client_id
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()  # delivery callbacks run on kafka-python's sender thread
        self._stats = DeliveryStats()
        self._failures_raised = 0

    def open(self) -> EventPublisher:
        """Connect and check the topic; ``ServiceUnavailable`` says what to fix."""
        if self._producer is not None:
            return self
        servers = [s.strip() for s in self.kafka.bootstrap_servers.split(",") if s.strip()]
        try:
            producer = KafkaProducer(
                **client_options(self.kafka),
                bootstrap_servers=servers,
                client_id=self.client_id,
                bootstrap_timeout_ms=CONNECT_TIMEOUT_MS,
                max_block_ms=MAX_BLOCK_MS,
                request_timeout_ms=REQUEST_TIMEOUT_MS,
                delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                linger_ms=LINGER_MS,
                partitioner=RememberingPartitioner(),
            )
        except KafkaError as exc:
            raise ServiceUnavailable(unreachable_message(self.kafka, exc)) from exc
        try:
            partitions = producer.partitions_for(self.topic)
        except KafkaError as exc:
            producer.close(timeout=0)
            raise ServiceUnavailable(no_topic_message(self.kafka, self.topic, exc)) from exc
        log.info(
            "producer connected bootstrap=%s topic=%s partitions=%d",
            self.kafka.bootstrap_servers,
            self.topic,
            len(partitions),
        )
        self._producer = producer
        return self

    @property
    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                self._stats.sent,
                self._stats.delivered,
                self._stats.failed,
                Counter(self._stats.errors),
            )

    def send(self, event: dict[str, Any]) -> str | None:
        """Send a valid event (key = user id); return the reason instead when it is invalid."""
        reason = validate_event(event)
        if reason is not None:
            return reason
        self._send(event_key(event), encode_event(event))
        return None

    def send_acknowledged(self, events: list[dict[str, Any]], timeout_s: float) -> int:
        """Send valid events and wait until the broker has acknowledged every one of them
        (what an HTTP client is told before it forgets them); ServiceUnavailable when any is
        not within ``timeout_s``. Returns how many were sent."""
        producer = self._require_open()
        try:
            futures = [
                producer.send(self.topic, key=event_key(event), value=encode_event(event))
                for event in events
            ]
            for future in futures:
                future.get(timeout=timeout_s)
        except KafkaError as exc:
            raise ServiceUnavailable(
                f"topic {self.topic!r} at {self.kafka.bootstrap_servers} did not acknowledge "
                f"the events ({exc}); send them again (event ids make a resend harmless)"
            ) from exc
        with self._lock:
            self._stats.sent += len(events)
            self._stats.delivered += len(events)
        return len(events)

    def send_raw(self, key: bytes | None, value: bytes | None) -> None:
        """Send bytes as they are, unvalidated (for deliberately malformed records); a None
        value is a tombstone."""
        self._send(key, value)

    def _send(self, key: bytes | None, value: bytes | None) -> None:
        producer = self._require_open()
        self._raise_on_failures()
        try:
            future = producer.send(self.topic, key=key, value=value)
        except KafkaError as exc:
            raise ServiceUnavailable(
                f"sending to topic {self.topic!r} at {self.kafka.bootstrap_servers} failed "
                f"({exc}); is the broker still up? `streamrec stack status` tells."
            ) from exc
        with self._lock:
            self._stats.sent += 1
        future.add_callback(self._delivered)
        future.add_errback(self._failed)

    def _delivered(self, _metadata: Any) -> None:
        with self._lock:
            self._stats.delivered += 1

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._stats.failed += 1
            self._stats.errors[type(exc).__name__] += 1
            first = self._stats.failed == 1
        if first:
            log.error("delivery failed topic=%s error=%r", self.topic, exc)

    def _raise_on_failures(self) -> None:
        stats = self.stats
        if stats.failed > self._failures_raised:
            self._failures_raised = stats.failed
            errors = ", ".join(f"{name} x{n}" for name, n in stats.errors.most_common())
            raise ServiceUnavailable(
                f"{stats.failed} of {stats.sent} records were not delivered to topic "
                f"{self.topic!r} at {self.kafka.bootstrap_servers} ({errors}); "
                "check the broker with `streamrec stack status`."
            )

    def flush(self, timeout_s: float | None = None) -> DeliveryStats:
        """Wait until every record sent is acknowledged; raise if any failed."""
        producer = self._require_open()
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            pending = self.stats.pending
            raise ServiceUnavailable(
                f"{pending} records to topic {self.topic!r} were still unacknowledged after "
                f"{timeout_s} s ({exc}); check the broker with `streamrec stack status`."
            ) from exc
        self._raise_on_failures()
        return self.stats

    def close(self) -> None:
        """Flush and close; failures not yet raised are raised here."""
        if self._producer is None:
            return
        try:
            self.flush()
        finally:
            self._producer.close()
            self._producer = None

    def _require_open(self) -> KafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventPublisher is not open: call open() or use it in a with block")
        return self._producer

    def __enter__(self) -> EventPublisher:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing: close without letting a delivery error hide the original one.
        try:
            self.close()
        except ServiceUnavailable as close_exc:
            log.error("while closing after %s: %s", exc_type.__name__, close_exc)
