"""`streamrec stream`: Kafka events -> fresh lists in Redis, the event store, dead letters.

Two streaming queries read the events topic, each with its own checkpoint (``lists/`` and
``archive/`` under ``paths.stream_checkpoint``), so the one apps wait for never waits for the
other:

- **lists**: micro-batches back to back, each ONE Spark job of one stage (no shuffle): each
  task parses and validates its Kafka partition's records, groups the valid events by user and
  writes every active user's state, fresh list and segment to Redis in one atomic, fenced step
  (streaming/fresh_lists.py), so a replay never puts an older list over a newer one;
- **archive**: every ``streaming.archive_trigger_seconds``, invalid records go to the dead-letter
  topic (raw bytes + reason headers) and valid events replace the micro-batch's folder in the
  event store (exactly once under replays) for the batch job to train on.

Any failure fails the micro-batch and so its query: Spark replays it from the checkpoint on
restart. Each micro-batch's metrics are logged and kept in Redis (streaming/metrics.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamrec import storage
from streamrec.errors import StreamrecError
from streamrec.kafka_topics import ensure_topics, partition_bounds, spark_options
from streamrec.redis_lists import RedisClient, connect, decoded
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION
from streamrec.spark import build_spark
from streamrec.streaming.metrics import (
    ARCHIVE,
    LISTS,
    BatchMetrics,
    record,
)
from streamrec.streaming.micro_batches import (
    ListsProgress,
    Rate,
    process_archive_batch,
    process_lists_batch,
)
from streamrec.streaming.model_holder import ModelHolder
from streamrec.streaming.runs import (
    fence_id,
    is_new_checkpoint,
    resume_offsets,
    run_epoch,
    spark_query_id,
)

log = logging.getLogger(__name__)


@dataclass
class StreamReport:
    """What the stream's two queries did, micro-batch by micro-batch."""

    batches: list[BatchMetrics] = field(default_factory=list)  # the lists query
    archived: list[BatchMetrics] = field(default_factory=list)  # the archive query

    @property
    def valid(self) -> int:
        """Valid events written to the event store."""
        return sum(b.valid for b in self.archived)

    @property
    def invalid(self) -> int:
        """Invalid records sent to the dead-letter topic."""
        return sum(b.invalid for b in self.archived)


def kafka_source(
    spark: SparkSession, cfg: Config, min_partitions: int = 0, starting: str | None = None
) -> DataFrame:
    """The events topic; ``min_partitions`` > 0 splits each micro-batch's offset ranges into at
    least that many Spark partitions (the source's ``minPartitions``). ``starting`` is where a
    new checkpoint begins (Spark's startingOffsets; default ``streaming.starting_offsets``)."""
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(cfg.kafka))
        .option("subscribe", cfg.kafka.events_topic)
        .option("startingOffsets", starting or cfg.streaming.starting_offsets)
        .option("maxOffsetsPerTrigger", str(cfg.streaming.max_offsets_per_trigger))
    )
    if min_partitions > 0:
        reader = reader.option("minPartitions", str(min_partitions))
    return reader.load()


def check_services(cfg: Config) -> None:
    """Kafka answers and has the topics, Redis answers: or a ServiceUnavailable that says how
    to start them."""
    ensure_topics(cfg.kafka)
    connect(cfg.redis, patient=False).close()


@dataclass
class StreamQueries:
    """The stream's two queries over the same topic, each with its own checkpoint: ``lists``
    keeps lists fresh (micro-batches back to back, one Spark job each), ``archive`` keeps the
    event store and the dead letters (bigger, less frequent micro-batches). Each is exactly
    once for its own sinks, and neither waits for the other."""

    lists: StreamingQuery
    archive: StreamingQuery

    @property
    def all(self) -> tuple[StreamingQuery, StreamingQuery]:
        return self.lists, self.archive

    def await_termination(self, timeout_s: float | None) -> None:
        """Until both end (available-now), one fails (its exception raised), or the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while any(q.isActive for q in self.all):
            for query in self.all:
                if query.exception() is not None:
                    query.awaitTermination()  # raises the query's failure
            if deadline is not None and time.monotonic() >= deadline:
                return
            for query in self.all:
                if query.isActive:
                    query.awaitTermination(1)
                    break
        for query in self.all:
            query.awaitTermination()  # both ended: raises a failure of either

    def stop_gracefully(self) -> None:
        for query in self.all:
            stop_gracefully(query)


def starting_after_event_store(spark: SparkSession, cfg: Config) -> str | None:
    """Spark's startingOffsets JSON for a new checkpoint: after the newest offset the event
    store holds in each partition (streaming/runs.py ``resume_offsets``); None when the store
    holds nothing, so ``streaming.starting_offsets`` applies."""
    root = storage.absolute(cfg.paths.event_store)
    if not storage.filesystem(root).exists(root):
        return None
    try:
        stored = spark.read.parquet(root)
    except AnalysisException:  # a folder with no Parquet in it yet
        return None
    if SOURCE_PARTITION not in stored.columns:
        return None
    rows = stored.groupBy(SOURCE_PARTITION).agg(F.max(SOURCE_OFFSET).alias("newest")).collect()
    if not rows:
        return None
    stored_next = {int(r[SOURCE_PARTITION]): int(r["newest"]) + 1 for r in rows}
    offsets = resume_offsets(
        stored_next,
        partition_bounds(cfg.kafka, cfg.kafka.events_topic),
        cfg.streaming.starting_offsets,
    )
    log.info(
        "stream: a new checkpoint: starting after the event store's newest events %s",
        {p: o for p, o in offsets.items()},
    )
    topic = cfg.kafka.events_topic
    return json.dumps({topic: {str(p): o for p, o in offsets.items()}})


def check_run(client: RedisClient, cfg: Config, new_run: bool) -> None:
    """Refuse to start on a new checkpoint while Redis holds the states of an earlier run,
    unless told: the new run would read the topic from ``streaming.starting_offsets`` again
    and count in the states what they already hold."""
    earlier = decoded(client.get(L.stream_run_key(cfg.redis.key_prefix)))
    if not earlier or not is_new_checkpoint(cfg, LISTS) or new_run:
        return
    raise StreamrecError(
        f"the stream's checkpoint {storage.absolute(cfg.paths.stream_checkpoint)} is new, but "
        f"Redis holds the per-user states of an earlier run ({earlier}): was the checkpoint "
        "deleted or moved? Put it back to continue where that run stopped. To start a new run "
        "anyway, pass --new-run: it starts after the newest events the event store holds, and "
        "its micro-batches are fenced apart from the earlier run's; then run `streamrec state "
        "rebuild` for users whose states missed events the earlier run stored."
    )


def start_stream(
    spark: SparkSession,
    cfg: Config,
    available_now: bool,
    report: StreamReport,
    new_run: bool = False,
) -> StreamQueries:
    check_services(cfg)
    client = connect(cfg.redis)
    prefix, keep = cfg.redis.key_prefix, cfg.streaming.metrics_kept
    check_run(client, cfg, new_run)
    models = ModelHolder(spark, cfg.paths.model_store, client, prefix, cfg.feedback)
    progress, archive_rate = ListsProgress(spark.sparkContext.accumulator(0)), Rate()
    epochs: dict[str, int] = {}

    def fence(query: str, batch_id: int) -> int:
        if query not in epochs:  # the checkpoint's run: known once Spark has started the query
            epochs[query] = run_epoch(cfg, query)
            if query == LISTS:
                client.set(L.stream_run_key(prefix), spark_query_id(cfg, LISTS) or "")
        return fence_id(epochs[query], batch_id)

    def on_lists(batch: DataFrame, batch_id: int) -> None:
        metrics = process_lists_batch(
            batch, batch_id, cfg, models, progress, fence(LISTS, batch_id)
        )
        report.batches.append(metrics)
        record(client, prefix, keep, metrics)

    def on_archive(batch: DataFrame, batch_id: int) -> None:
        metrics = process_archive_batch(
            batch, batch_id, cfg, archive_rate, fence(ARCHIVE, batch_id)
        )
        report.archived.append(metrics)
        record(client, prefix, keep, metrics)

    def query(
        name: str, on_batch: Callable[[DataFrame, int], None], every_s: float, partitions: int = 0
    ) -> StreamingQuery:
        starting = starting_after_event_store(spark, cfg) if is_new_checkpoint(cfg, name) else None
        writer = (
            kafka_source(spark, cfg, partitions, starting)
            .writeStream.foreachBatch(on_batch)
            .option(
                "checkpointLocation",
                storage.join(storage.absolute(cfg.paths.stream_checkpoint), name),
            )
            .queryName(f"{cfg.spark.app_name}-{cfg.kafka.events_topic}-{name}")
        )
        if available_now:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{every_s} seconds")
        return writer.start()

    return StreamQueries(
        # The per-user step runs in the source's own tasks (no shuffle): list_partitions > 0
        # splits the Kafka partitions' ranges for more of them.
        lists=query(LISTS, on_lists, cfg.streaming.trigger_seconds, cfg.streaming.list_partitions),
        archive=query(ARCHIVE, on_archive, cfg.streaming.archive_trigger_seconds),
    )


def run_stream(
    cfg: Config,
    available_now: bool = False,
    timeout_s: float | None = None,
    spark: SparkSession | None = None,
    new_run: bool = False,
) -> StreamReport:
    """Run the stream until it ends (available-now), the timeout passes, or Ctrl-C."""
    check_services(cfg)  # before the seconds a SparkSession takes to start
    spark = spark or build_spark(cfg, "stream")
    report = StreamReport()
    queries = start_stream(spark, cfg, available_now, report, new_run)
    try:
        # A failed batch surfaces here as StreamingQueryException, with Spark's cause.
        queries.await_termination(timeout_s)
    finally:
        queries.stop_gracefully()
    return report


def stop_gracefully(query: StreamingQuery, wait_s: float = 10.0) -> None:
    """Stop between micro-batches when possible: stopping mid-batch interrupts its Spark jobs
    (harmless, the batch is replayed on restart, but noisy)."""
    deadline = time.monotonic() + wait_s
    while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
        time.sleep(0.05)
    if query.isActive:
        query.stop()
