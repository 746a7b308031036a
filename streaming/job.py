"""`streamrec stream`: Kafka events -> dead letters, the event store, and fresh lists in Redis.

One query, one ``foreachBatch``: each micro-batch is parsed once and then
1. invalid records go to the dead-letter topic (raw bytes + reason headers);
2. valid events replace the batch's folder in the event store (exactly once under replays);
3. active users get a fresh list from the current model, written with a fence so that a replay
   never puts an older list over a newer one.
Any failure fails the batch and so the query: Spark replays it from the checkpoint on restart.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamrec import storage
from streamrec.errors import ModelStoreError
from streamrec.kafka_topics import ensure_topics
from streamrec.model import store
from streamrec.model.store import ItemModel
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.spark import build_spark
from streamrec.streaming.dead_letter import dead_letter_rows, write_dead_letters
from streamrec.streaming.event_store import valid_events, write_batch
from streamrec.streaming.fresh_lists import KEPT, OUTCOME, WRITTEN, fresh_list_rows
from streamrec.streaming.parse import REASON, parse_records

log = logging.getLogger(__name__)


class ModelHolder:
    """The current model and its broadcast, renewed when the batch job promotes a new version
    (checked before every micro-batch: one small file read)."""

    def __init__(self, spark: SparkSession, model_store: str) -> None:
        self.spark = spark
        self.model_store = model_store
        self.model: ItemModel | None = None
        self.broadcast: Broadcast[ItemModel] | None = None

    def current(self) -> tuple[ItemModel, Broadcast[ItemModel]] | None:
        version = store.current_version(self.model_store)
        if version is not None and (self.model is None or self.model.version != version):
            try:
                model = store.load_item_model(self.model_store, version)
            except ModelStoreError:
                log.exception("stream: model %s cannot be loaded; keeping %s", version,
                              self.model.version if self.model else "none")  # fmt: skip
            else:
                old = self.broadcast
                self.model = model
                self.broadcast = self.spark.sparkContext.broadcast(model)
                if old is not None:
                    old.unpersist()  # executors drop the previous version's factors
                log.info("stream: loaded model %s (%d items)", version, len(model.item_ids))
        if self.model is None or self.broadcast is None:
            return None
        return self.model, self.broadcast


@dataclass
class BatchMetrics:
    batch_id: int
    valid: int
    invalid: int
    users: int
    lists_written: int
    lists_kept: int
    model_version: str | None
    duration_s: float
    # Seconds per step (parse: read, validate and count; store: the event store write;
    # lists: state, fold-in and Redis writes on the executors).
    steps_s: dict[str, float] = field(default_factory=dict)


@dataclass
class StreamReport:
    batches: list[BatchMetrics] = field(default_factory=list)

    @property
    def valid(self) -> int:
        return sum(b.valid for b in self.batches)

    @property
    def invalid(self) -> int:
        return sum(b.invalid for b in self.batches)


def kafka_source(spark: SparkSession, cfg: Config) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", cfg.kafka.bootstrap_servers)
        .option("subscribe", cfg.kafka.events_topic)
        .option("startingOffsets", cfg.streaming.starting_offsets)
        .option("maxOffsetsPerTrigger", str(cfg.streaming.max_offsets_per_trigger))
        .load()
    )


def process_batch(
    batch: DataFrame,
    batch_id: int,
    cfg: Config,
    models: ModelHolder,
) -> BatchMetrics:
    started = time.monotonic()
    steps: dict[str, float] = {}
    parsed = parse_records(batch).persist()
    try:
        counts = parsed.agg(
            F.count(F.when(F.col(REASON).isNull(), 1)).alias("valid"),
            F.count(F.col(REASON)).alias("invalid"),
            F.max(F.when(F.col(REASON).isNull(), F.col(E.EVENT_TIME))).alias("newest"),
        ).collect()[0]  # an aggregate without grouping always has exactly one row
        valid, invalid, users = int(counts["valid"]), int(counts["invalid"]), 0
        steps["parse"] = time.monotonic() - started
        if invalid:
            write_dead_letters(
                dead_letter_rows(parsed), cfg.kafka.bootstrap_servers, cfg.kafka.dead_letter_topic
            )
        written = kept = 0
        current = models.current()
        model = current[0] if current else None
        if valid:
            events = valid_events(parsed)
            t = time.monotonic()
            write_batch(events, cfg.paths.event_store, batch_id)
            steps["store"] = time.monotonic() - t
            t = time.monotonic()
            # State, lists and segments: written on the executors; the driver gets the tally.
            rows = fresh_list_rows(events, current[1] if current else None, cfg, batch_id,
                                   int(counts["newest"]))  # fmt: skip
            # One row per active user: collected as is (a second shuffle to count them would
            # cost more than the rows).
            outcomes = [r[OUTCOME] for r in rows.collect()]
            users = len(outcomes)  # counted here: a distinct count in parse costs a shuffle
            written, kept = outcomes.count(WRITTEN), outcomes.count(KEPT)
            steps["lists"] = time.monotonic() - t
    finally:
        parsed.unpersist()
    metrics = BatchMetrics(
        batch_id,
        valid,
        invalid,
        users,
        written,
        kept,
        model.version if model else None,
        time.monotonic() - started,
        steps,
    )
    log.info(
        "stream batch %d: %d valid, %d dead-lettered, %d users, %d lists written, %d kept "
        "(newer), model %s, %.2fs (%s)",
        batch_id,
        valid,
        invalid,
        users,
        written,
        kept,
        metrics.model_version,
        metrics.duration_s,
        ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()),
    )
    if valid and model is None:
        log.warning(
            "stream batch %d: no model yet, so only user state grows, no per-user lists; run "
            "`streamrec batch run` once the event store has data",
            batch_id,
        )
    return metrics


def check_services(cfg: Config) -> None:
    """Kafka answers and has the topics, Redis answers: or a ServiceUnavailable that says how
    to start them."""
    ensure_topics(cfg.kafka)
    connect(cfg.redis).close()


def start_stream(
    spark: SparkSession,
    cfg: Config,
    available_now: bool,
    report: StreamReport,
) -> StreamingQuery:
    check_services(cfg)
    models = ModelHolder(spark, cfg.paths.model_store)

    def on_batch(batch: DataFrame, batch_id: int) -> None:
        report.batches.append(process_batch(batch, batch_id, cfg, models))

    writer = (
        kafka_source(spark, cfg)
        .writeStream.foreachBatch(on_batch)
        .option("checkpointLocation", storage.absolute(cfg.paths.stream_checkpoint))
        .queryName(f"{cfg.spark.app_name}-stream")
    )
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{cfg.streaming.trigger_seconds} seconds")
    return writer.start()


def run_stream(
    cfg: Config,
    available_now: bool = False,
    timeout_s: float | None = None,
    spark: SparkSession | None = None,
) -> StreamReport:
    """Run the stream until it ends (available-now), the timeout passes, or Ctrl-C."""
    check_services(cfg)  # before the seconds a SparkSession takes to start
    spark = spark or build_spark(cfg, "stream")
    report = StreamReport()
    query = start_stream(spark, cfg, available_now, report)
    try:
        # A failed batch surfaces here as StreamingQueryException, with Spark's cause.
        query.awaitTermination(None if timeout_s is None else max(1, math.ceil(timeout_s)))
    finally:
        stop_gracefully(query)
    return report


def stop_gracefully(query: StreamingQuery, wait_s: float = 10.0) -> None:
    """Stop between micro-batches when possible: stopping mid-batch interrupts its Spark jobs
    (harmless, the batch is replayed on restart, but noisy)."""
    deadline = time.monotonic() + wait_s
    while query.isActive and query.status["isTriggerActive"] and time.monotonic() < deadline:
        time.sleep(0.05)
    if query.isActive:
        query.stop()
