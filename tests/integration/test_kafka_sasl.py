"""Kafka with authentication, for real: a broker of the test's own with a SASL_PLAINTEXT
listener (PLAIN), and every client of the project configured by the `kafka.security_protocol`,
`kafka.sasl_*` keys: the admin client creating the topics, the producer, the stream's Kafka
source and its dead-letter sink. A client with a wrong password is refused."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import SparkSession

from streamrec.errors import ServiceUnavailable
from streamrec.kafka_topics import client_options, ensure_topics
from streamrec.producer.invalid import malformed
from streamrec.producer.run import publish_events
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack import kafka_broker
from streamrec.streaming.job import run_stream

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sasl_cfg(isolated_cfg: Config, tmp_path: Path) -> Iterator[Config]:
    cfg = with_overrides(
        isolated_cfg,
        stack=dict(home=str(tmp_path / "sasl-stack")),
        kafka=dict(
            bootstrap_servers=f"127.0.0.1:{_free_port()}",
            controller_port=_free_port(),
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="streamrec-app",
            sasl_password='pa"ss\\word-Ω',
        ),
    )
    kafka_broker.start(cfg)
    try:
        yield cfg
    finally:
        kafka_broker.process(cfg).stop()


def test_every_client_authenticates_with_sasl(spark: SparkSession, sasl_cfg: Config) -> None:
    cfg = sasl_cfg
    ensure_topics(cfg.kafka)
    events = [
        {
            E.EVENT_ID: f"s{n}",
            E.USER_ID: f"u{n % 4}",
            E.ITEM_ID: f"i{n % 6}",
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: T + n,
            E.VALUE: 30.0,
        }
        for n in range(40)
    ]
    report = publish_events(cfg, [*events, malformed("not_json", events[0], 1)])
    assert (report.sent, report.injected_invalid, report.acknowledged) == (40, 1, 41)

    run_stream(cfg, available_now=True, spark=spark)
    stored = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    assert sorted(r[E.EVENT_ID] for r in stored) == sorted(e[E.EVENT_ID] for e in events)
    # the dead-letter sink wrote through the same authenticated connection
    consumer = KafkaConsumer(
        **client_options(cfg.kafka),
        bootstrap_servers=cfg.kafka.bootstrap_servers,
        enable_auto_commit=False,
    )
    try:
        parts = [
            TopicPartition(cfg.kafka.dead_letter_topic, p) for p in range(cfg.kafka.partitions)
        ]
        assert sum(consumer.end_offsets(parts).values()) == 1
    finally:
        consumer.close()

    wrong = with_overrides(cfg, kafka=dict(sasl_password="not-it"))
    with pytest.raises(ServiceUnavailable):
        publish_events(wrong, events[:1])
