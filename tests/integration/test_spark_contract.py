"""The Spark side of the event contract agrees with the Python side."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec.schemas import events as E
from streamrec.streaming.parse import REASON

pytestmark = pytest.mark.integration

VALID = [
    {
        "event_id": "e1",
        "user_id": "u 1",
        "item_id": "i:1",
        "event_type": "play",
        "event_time": 1_700_000_000_123,
        "value": 42.5,
    },
    {
        "event_id": "e2",
        "user_id": "{ü}/x",
        "item_id": "🎵",
        "event_type": "click",
        "event_time": 946_684_800_000,
    },
    {
        "event_id": "e3",
        "user_id": "u",
        "item_id": "i",
        "event_type": "skip",
        "event_time": 4_102_444_800_000,
        "value": None,
    },
]
INVALID = [
    b"not json",
    b'{"event_id":"x"}',
    json.dumps({**VALID[0], "user_id": 7}).encode(),
    json.dumps({**VALID[0], "event_type": "teleport"}).encode(),
    json.dumps({**VALID[0], "extra": 1}).encode(),
    b"\xff\xfe",
    b"[1,2]",
]


def test_spark_schema_parses_valid_events_like_python(spark: SparkSession) -> None:
    raw = [E.encode_event(e).decode() for e in VALID]
    df = spark.createDataFrame([(r,) for r in raw], "value string")
    rows = df.select(F.from_json("value", E.spark_event_schema()).alias("e")).select("e.*")
    got = [r.asDict() for r in rows.collect()]
    expected = [E.parse_event(r)[0] for r in raw]
    assert got == expected


def test_parse_records_in_spark_matches_parse_event(spark: SparkSession) -> None:
    from streamrec.streaming.parse import parse_records

    values = [E.encode_event(e) for e in VALID] + INVALID
    # Records appended at the contract's newest event time (2100-01-01): no event in VALID is
    # ahead of its record (tests/unit/test_parse_batch.py checks that bound).
    record_ms = 4_102_444_800_000
    rows = [(b"k", v, "t", 0, i, record_ms + i) for i, v in enumerate(values)]
    kafka_like = (
        spark.createDataFrame(
            rows, "key binary, value binary, topic string, partition int, offset long, ts_ms long"
        )
        .withColumn("timestamp", F.timestamp_millis("ts_ms"))
        .drop("ts_ms")
    )
    parsed = parse_records(kafka_like).orderBy("source_offset").collect()
    assert len(parsed) == len(values)
    for row, value in zip(parsed, values, strict=True):
        event, reason = E.parse_event(value)
        assert row[REASON] == reason
        if event is not None:
            assert {k: row[k] for k in event} == event
        else:
            assert bytes(row["raw_value"]) == value
