"""Invalid records -> the dead-letter topic, losing nothing.

A dead letter's value is the original record's bytes, unchanged (it may not even be UTF-8); its
key is ``<topic>/<partition>/<offset>`` of the source record, and its headers carry the reason,
the source coordinates and the original key, as Kafka Connect's dead-letter queues do. The key
makes a replayed micro-batch's duplicates collapse under the topic's compaction.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from streamrec.streaming.parse import (
    KAFKA_TIMESTAMP_MS,
    RAW_KEY,
    RAW_VALUE,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
)

H_REASON = "streamrec.dead_letter.reason"
H_TOPIC = "streamrec.source.topic"
H_PARTITION = "streamrec.source.partition"
H_OFFSET = "streamrec.source.offset"
H_TIMESTAMP = "streamrec.source.timestamp_ms"
H_KEY = "streamrec.source.key"


def _header(name: str, value: Column) -> Column:
    return F.struct(F.lit(name).alias("key"), value.cast("binary").alias("value"))


def dead_letter_rows(parsed: DataFrame) -> DataFrame:
    """(key, value, headers) rows for the Kafka sink, one per invalid parsed record."""
    invalid = parsed.where(F.col(REASON).isNotNull())
    return invalid.select(
        F.concat_ws(
            "/",
            F.col(SOURCE_TOPIC),
            F.col(SOURCE_PARTITION).cast("string"),
            F.col(SOURCE_OFFSET).cast("string"),
        )
        .cast("binary")
        .alias("key"),
        F.col(RAW_VALUE).alias("value"),
        F.array(
            _header(H_REASON, F.col(REASON)),
            _header(H_TOPIC, F.col(SOURCE_TOPIC)),
            _header(H_PARTITION, F.col(SOURCE_PARTITION).cast("string")),
            _header(H_OFFSET, F.col(SOURCE_OFFSET).cast("string")),
            _header(H_TIMESTAMP, F.col(KAFKA_TIMESTAMP_MS).cast("string")),
            _header(H_KEY, F.coalesce(F.col(RAW_KEY), F.lit(b"").cast("binary"))),
        ).alias("headers"),
    )


def write_dead_letters(rows: DataFrame, bootstrap_servers: str, topic: str) -> None:
    (
        rows.write.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("topic", topic)
        .option("includeHeaders", "true")
        .save()
    )
