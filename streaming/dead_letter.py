"""Invalid records -> the dead-letter topic, losing nothing.

A dead letter's value is the original record's bytes, unchanged (it may not even be UTF-8); its
key is ``<topic>/<partition>/<offset>`` of the source record, and its headers carry the reason,
the source coordinates and the original key, as Kafka Connect's dead-letter queues do. The key
makes a replayed micro-batch's duplicates collapse under the topic's compaction.

The events topic takes records up to about 1 MB, and so does the dead-letter topic: a record
that big plus its headers would not fit, and failing to write it would stop the stream. So the
value is kept whole up to ``MAX_DEAD_LETTER_VALUE_BYTES`` and the original key up to
``MAX_DEAD_LETTER_KEY_BYTES``; past that they are cut, and the headers say the original sizes and
SHA-256 digests and that the copy is truncated. A null source value (a tombstone) becomes an
empty value with a size of -1, so that compaction does not take it for a deletion.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamrec.kafka_topics import spark_options
from streamrec.schemas.config import KafkaConfig
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION
from streamrec.streaming.parse import (
    KAFKA_TIMESTAMP_MS,
    RAW_KEY,
    RAW_VALUE,
    REASON,
    SOURCE_TOPIC,
)

H_REASON = "streamrec.dead_letter.reason"
H_TOPIC = "streamrec.source.topic"
H_PARTITION = "streamrec.source.partition"
H_OFFSET = "streamrec.source.offset"
H_TIMESTAMP = "streamrec.source.timestamp_ms"
H_KEY = "streamrec.source.key"
H_VALUE_BYTES = "streamrec.source.value_bytes"
H_VALUE_SHA256 = "streamrec.source.value_sha256"
H_KEY_BYTES = "streamrec.source.key_bytes"
H_KEY_SHA256 = "streamrec.source.key_sha256"
H_TRUNCATED = "streamrec.dead_letter.truncated"

# Far above any valid event (16 KiB) and far below Kafka's default 1 MB message limit.
MAX_DEAD_LETTER_VALUE_BYTES = 256 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 16 * 1024
# The size headers' value for a null key or value (a tombstone), as Kafka's own wire format.
NULL_BYTES = -1


def _header(name: str, value: Column) -> Column:
    return F.struct(F.lit(name).alias("key"), value.cast("binary").alias("value"))


def _cut(raw: Column, limit: int) -> Column:
    """``raw`` (binary) cut to its first ``limit`` bytes."""
    return F.when(F.length(raw) > limit, F.substring(raw, 1, limit)).otherwise(raw)


def _is_cut(raw: Column, limit: int) -> Column:
    return F.coalesce(F.length(raw) > limit, F.lit(False))


def dead_letter_rows(parsed: DataFrame) -> DataFrame:
    """(key, value, headers) rows for the Kafka sink, one per invalid parsed record."""
    invalid = parsed.where(F.col(REASON).isNotNull())
    raw_key, raw_value = F.col(RAW_KEY), F.col(RAW_VALUE)
    truncated = _is_cut(raw_value, MAX_DEAD_LETTER_VALUE_BYTES) | _is_cut(
        raw_key, MAX_DEAD_LETTER_KEY_BYTES
    )
    return invalid.select(
        F.concat_ws(
            "/",
            F.col(SOURCE_TOPIC),
            F.col(SOURCE_PARTITION).cast("string"),
            F.col(SOURCE_OFFSET).cast("string"),
        )
        .cast("binary")
        .alias("key"),
        # A tombstone's dead letter is empty, not null: null would delete it under compaction.
        F.coalesce(_cut(raw_value, MAX_DEAD_LETTER_VALUE_BYTES), F.lit(b"")).alias("value"),
        F.array(
            _header(H_REASON, F.col(REASON)),
            _header(H_TOPIC, F.col(SOURCE_TOPIC)),
            _header(H_PARTITION, F.col(SOURCE_PARTITION).cast("string")),
            _header(H_OFFSET, F.col(SOURCE_OFFSET).cast("string")),
            _header(H_TIMESTAMP, F.col(KAFKA_TIMESTAMP_MS).cast("string")),
            _header(
                H_KEY,
                F.coalesce(_cut(raw_key, MAX_DEAD_LETTER_KEY_BYTES), F.lit(b"").cast("binary")),
            ),
            _header(
                H_VALUE_BYTES, F.coalesce(F.length(raw_value), F.lit(NULL_BYTES)).cast("string")
            ),
            _header(H_VALUE_SHA256, F.coalesce(F.sha2(raw_value, 256), F.lit(""))),
            _header(H_KEY_BYTES, F.coalesce(F.length(raw_key), F.lit(NULL_BYTES)).cast("string")),
            _header(H_KEY_SHA256, F.coalesce(F.sha2(raw_key, 256), F.lit(""))),
            _header(H_TRUNCATED, F.when(truncated, "true").otherwise("false")),
        ).alias("headers"),
    )


def write_dead_letters(rows: DataFrame, kafka: KafkaConfig) -> None:
    (
        rows.write.format("kafka")
        .options(**spark_options(kafka))
        .option("topic", kafka.dead_letter_topic)
        .option("includeHeaders", "true")
        .save()
    )
