"""Kafka records -> valid events and dead letters, with the contract's validator.

Validation runs in Python (``schemas.events.parse_event``) on the executors, batched through
Arrow, so the stream rejects exactly what producers reject; the Spark schema of the result is
derived from the same JSON Schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from streamrec.schemas import events as E

# Columns of a parsed record besides the event's own fields.
REASON = "dead_letter_reason"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
KAFKA_TIMESTAMP_MS = "kafka_timestamp_ms"
RAW_KEY = "raw_key"
RAW_VALUE = "raw_value"


def parsed_schema() -> T.StructType:
    event_fields = [T.StructField(f.name, f.dataType, True) for f in E.spark_event_schema().fields]
    return T.StructType(
        [
            *event_fields,
            T.StructField(REASON, T.StringType(), True),
            T.StructField(SOURCE_TOPIC, T.StringType(), False),
            T.StructField(SOURCE_PARTITION, T.IntegerType(), False),
            T.StructField(SOURCE_OFFSET, T.LongType(), False),
            T.StructField(KAFKA_TIMESTAMP_MS, T.LongType(), True),
            T.StructField(RAW_KEY, T.BinaryType(), True),
            T.StructField(RAW_VALUE, T.BinaryType(), True),
        ]
    )


def parse_frame(pdf: pd.DataFrame) -> pd.DataFrame:
    """One Arrow batch of Kafka rows (key, value, topic, partition, offset, timestamp_ms) ->
    rows of ``parsed_schema()``. The raw bytes are kept only for dead letters."""
    names = [f.name for f in E.event_contract().fields]
    columns: dict[str, list[object]] = {n: [] for n in names}
    reasons: list[str | None] = []
    raw_keys: list[bytes | None] = []
    raw_values: list[bytes | None] = []
    for key, value in zip(pdf["key"], pdf["value"], strict=True):
        event, reason = E.parse_event(value)
        reasons.append(reason)
        for n in names:
            columns[n].append(event.get(n) if event else None)
        raw_keys.append(key if reason else None)
        raw_values.append(value if reason else None)
    out = pd.DataFrame(columns)
    out[E.EVENT_TIME] = pd.array(columns[E.EVENT_TIME], dtype="Int64")
    out[E.VALUE] = pd.array(columns[E.VALUE], dtype="Float64")
    out[REASON] = reasons
    out[SOURCE_TOPIC] = pdf["topic"].to_numpy()
    out[SOURCE_PARTITION] = pdf["partition"].to_numpy()
    out[SOURCE_OFFSET] = pdf["offset"].to_numpy()
    out[KAFKA_TIMESTAMP_MS] = pdf["timestamp_ms"].to_numpy()
    out[RAW_KEY] = raw_keys
    out[RAW_VALUE] = raw_values
    return out


def valid_event_frame(values: Iterable[bytes | None]) -> pd.DataFrame:
    """The valid events among Kafka record values, one column per contract field (event time as
    int64, a missing value as NaN). The invalid ones are left out: the lists query has no use
    for them, and the archive query sends them to the dead-letter topic."""
    events = [event for event, _ in map(E.parse_event, values) if event is not None]
    columns: dict[str, object] = {
        name: [event.get(name) for event in events] for name in E.event_contract().field_names
    }
    columns[E.EVENT_TIME] = np.array(columns[E.EVENT_TIME], dtype=np.int64)
    columns[E.VALUE] = np.array(columns[E.VALUE], dtype=np.float64)  # None -> NaN
    return pd.DataFrame(columns)


def _parse_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for pdf in batches:
        yield parse_frame(pdf)


def parse_records(kafka_rows: DataFrame) -> DataFrame:
    """A Kafka source DataFrame -> parsed rows (valid events have a null REASON)."""
    from pyspark.sql import functions as F

    selected = kafka_rows.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_millis(F.col("timestamp")).alias("timestamp_ms"),
    )
    return selected.mapInPandas(_parse_batches, schema=parsed_schema())
