"""Kafka records -> valid events and dead letters, with the contract's validator.

Validation runs in Python (``schemas.events.parse_event``) on the executors, batched through
Arrow, so the stream rejects exactly what producers reject; the Spark schema of the result is
derived from the same JSON Schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import types as T
from pyspark.sql.pandas.types import to_arrow_schema

from streamrec.schemas import events as E
from streamrec.schemas.config import Config, StreamingConfig
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION

# Columns of a parsed record besides the event's own fields.
REASON = "dead_letter_reason"
SOURCE_TOPIC = "source_topic"
KAFKA_TIMESTAMP_MS = "kafka_timestamp_ms"
RAW_KEY = "raw_key"
RAW_VALUE = "raw_value"
# How far an event may be dated after its record unless the config says otherwise.
DEFAULT_MAX_AHEAD_MS = int(StreamingConfig().max_event_time_ahead_s * 1000)


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


_EVENT_FIELDS = E.event_contract().field_names
_ARROW_PARSED = to_arrow_schema(parsed_schema())
_NO_EVENT: dict[str, object] = {}
# Parsed columns taken as they are from the Kafka rows' columns...
_PASSED_THROUGH = {
    SOURCE_TOPIC: "topic",
    SOURCE_PARTITION: "partition",
    SOURCE_OFFSET: "offset",
    KAFKA_TIMESTAMP_MS: "timestamp_ms",
}
# ... and the raw bytes, for the invalid records only.
_KEPT_FOR_DEAD_LETTERS = {RAW_KEY: "key", RAW_VALUE: "value"}


def parse_with_clock(
    values: Iterable[bytes | None], record_ms: Iterable[int | None], max_ahead_ms: int
) -> list[tuple[dict[str, Any] | None, str | None]]:
    """``parse_event`` of each value, and an event dated too far after its record's timestamp
    made a dead letter too (``E.ahead_of_record_reason``)."""
    out = []
    for value, at in zip(values, record_ms, strict=True):
        event, reason = E.parse_event(value)
        if event is not None:
            reason = E.ahead_of_record_reason(event[E.EVENT_TIME], at, max_ahead_ms)
            if reason is not None:
                event = None
        out.append((event, reason))
    return out


def parse_batch(batch: pa.RecordBatch, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> pa.RecordBatch:
    """One Arrow batch of Kafka rows (key, value, topic, partition, offset, timestamp_ms) ->
    rows of ``parsed_schema()``. Only the values go through Python; the Kafka coordinates pass
    through as they came, and the raw bytes are kept only for dead letters."""
    parsed = parse_with_clock(
        batch.column("value").to_pylist(), batch.column("timestamp_ms").to_pylist(), max_ahead_ms
    )
    events = [event or _NO_EVENT for event, _ in parsed]
    reasons = pa.array([reason for _, reason in parsed], pa.string())
    invalid = reasons.is_valid()
    columns: dict[str, pa.Array] = {
        name: pa.array([event.get(name) for event in events], _ARROW_PARSED.field(name).type)
        for name in _EVENT_FIELDS
    }
    columns[REASON] = reasons
    for name, source in _PASSED_THROUGH.items():
        columns[name] = batch.column(source)
    for name, source in _KEPT_FOR_DEAD_LETTERS.items():
        raw = batch.column(source)
        columns[name] = pc.if_else(invalid, raw, pa.scalar(None, raw.type))
    # A no-op unless Spark hands over other Arrow types (large binary, say) than declared.
    ordered = [columns[field.name].cast(field.type) for field in _ARROW_PARSED]
    return pa.RecordBatch.from_arrays(ordered, schema=_ARROW_PARSED)


def valid_event_frame(
    values: Iterable[bytes | None],
    record_ms: Iterable[int | None],
    max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS,
) -> pd.DataFrame:
    """The valid events among Kafka record values, one column per contract field (event time as
    int64, a missing value as NaN). The invalid ones are left out: the lists query has no use
    for them, and the archive query sends them to the dead-letter topic."""
    parsed = parse_with_clock(values, record_ms, max_ahead_ms)
    events = [event for event, _ in parsed if event is not None]
    columns: dict[str, object] = {
        name: [event.get(name) for event in events] for name in E.event_contract().field_names
    }
    columns[E.EVENT_TIME] = np.array(columns[E.EVENT_TIME], dtype=np.int64)
    columns[E.VALUE] = np.array(columns[E.VALUE], dtype=np.float64)  # None -> NaN
    return pd.DataFrame(columns)


def max_ahead_ms(cfg: Config) -> int:
    return int(cfg.streaming.max_event_time_ahead_s * 1000)


def record_millis(batch: pa.RecordBatch) -> list[int | None]:
    """The Kafka record timestamps of a batch of a Kafka source's rows, in ms (None for rows
    without one: nothing to check their event time against)."""
    if "timestamp" not in batch.schema.names:
        return [None] * batch.num_rows
    micros = batch.column("timestamp").cast(pa.int64())
    return [None if us is None else us // 1000 for us in micros.to_pylist()]


def parse_records(kafka_rows: DataFrame, max_ahead_ms: int = DEFAULT_MAX_AHEAD_MS) -> DataFrame:
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

    def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield parse_batch(batch, max_ahead_ms)

    return selected.mapInArrow(parse_batches, schema=parsed_schema())
