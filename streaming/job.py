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
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc
from pyspark import Accumulator, Broadcast
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from streamrec import storage
from streamrec.errors import ModelStoreError, StreamrecError
from streamrec.kafka_topics import ensure_topics, partition_bounds, spark_options
from streamrec.model import store
from streamrec.model.store import ItemModel
from streamrec.redis_lists import RedisClient, connect, decoded, delete_version
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config, FeedbackConfig
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION
from streamrec.spark import build_spark
from streamrec.streaming.dead_letter import dead_letter_rows, write_dead_letters
from streamrec.streaming.event_store import valid_events, write_batch
from streamrec.streaming.fresh_lists import (
    EVENTS,
    KEPT,
    LAGS,
    NEWEST,
    OUTCOME,
    WRITTEN,
    fresh_list_rows,
    rescored_list_rows,
)
from streamrec.streaming.metrics import (
    ARCHIVE,
    LISTS,
    BatchMetrics,
    lag_percentiles,
    record,
)
from streamrec.streaming.parse import (
    REASON,
    max_ahead_ms,
    parse_records,
)
from streamrec.streaming.runs import (
    fence_id,
    is_new_checkpoint,
    resume_offsets,
    run_epoch,
    spark_query_id,
)

log = logging.getLogger(__name__)


class ModelHolder:
    """The live model and its broadcast, renewed when the batch job publishes a new version
    (checked before every micro-batch: one Redis GET)."""

    def __init__(
        self,
        spark: SparkSession,
        model_store: str,
        client: RedisClient,
        prefix: str,
        feedback: FeedbackConfig,
    ) -> None:
        self.spark = spark
        self.model_store = model_store
        self.feedback = asdict(feedback)  # what the stream weighs events with
        self.client, self.prefix = client, prefix
        self.model: ItemModel | None = None
        self.broadcast: Broadcast[ItemModel] | None = None
        # True from loading a new version until the lists query has rescored its recent users.
        self.switched = False

    def live_version(self) -> str | None:
        """The version readers follow: Redis's pointer, so the stream's lists land where apps
        read them even when a batch run died between switching Redis and the model store. The
        store's ``current`` only when Redis has no pointer (restarted empty)."""
        pointer = decoded(self.client.get(L.current_model_key(self.prefix)))
        return pointer or store.current_version(self.model_store)

    def current(self) -> tuple[ItemModel, Broadcast[ItemModel]] | None:
        version = self.live_version()
        if version is not None and (self.model is None or self.model.version != version):
            try:
                model = store.load_item_model(self.model_store, version)
                params = store.check_foldable(model, self.feedback)
            except ModelStoreError:
                log.exception(
                    "stream: model %s cannot be loaded; keeping %s",
                    version,
                    self.model.version if self.model else "none",
                )
            else:
                old, previous = self.broadcast, self.model
                self.model = model
                self.broadcast = self.spark.sparkContext.broadcast(model)
                if old is not None:
                    old.unpersist()  # executors drop the previous version's factors
                log.info(
                    "stream: loaded model %s (%d items), folding in with regParam %g alpha %g",
                    version,
                    len(model.item_ids),
                    params.reg_param,
                    params.alpha,
                )
                self.switched = True
                if previous is not None:
                    self._drop_stale_lists(previous.version)
        if self.model is None or self.broadcast is None:
            return None
        return self.model, self.broadcast

    def _drop_stale_lists(self, version: str) -> None:
        """A micro-batch that ran while the batch job switched versions wrote its lists under
        the previous version after the switch had removed that version's keys: nobody reads
        them (readers follow the pointer), so they are removed here, one micro-batch later."""
        pointer = self.client.get(L.current_model_key(self.prefix))
        if pointer is not None and decoded(pointer) != version:
            removed = delete_version(self.client, self.prefix, version)
            if removed:
                log.info(
                    "stream: removed %d keys written under %s after the switch", removed, version
                )


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


class _Rate:
    """Records per second since the previous micro-batch of one query started."""

    def __init__(self) -> None:
        self.previous: float | None = None

    def tick(self, started: float, rows: int) -> float:
        elapsed = None if self.previous is None else started - self.previous
        self.previous = started
        return rows / elapsed if elapsed else 0.0


# A retrain's data cut trails the stream by the archive interval plus the batch run; users
# active within this much event time before the newest event are the ones whose newer events a
# new version's batch lists can miss.
RECENT_WINDOW_MS = 3_600_000


class ListsProgress:
    """What the lists query carries from one micro-batch to the next."""

    def __init__(self, records: Accumulator[int]) -> None:
        self.reference = 0  # the newest event time seen (recency features)
        # Every Kafka record the lists query's tasks read, valid or not: one accumulator for the
        # query's life, read before and after each micro-batch (they run one at a time).
        self.records = records
        self.rate = _Rate()
        self.recent: dict[str, int] = {}  # user -> newest event time, within RECENT_WINDOW_MS
        self._pruned_at = 1024

    def saw(self, users: list[str], newest_ms: list[int]) -> None:
        """The micro-batch's users and their lists' fences (0: no state)."""
        if newest_ms:
            self.reference = max(self.reference, max(newest_ms))
        recent = self.recent
        for user, newest in zip(users, newest_ms, strict=True):
            if newest > recent.get(user, 0):
                recent[user] = newest
        if len(recent) >= 2 * self._pruned_at:  # amortised: prune when it has doubled
            horizon = self.reference - RECENT_WINDOW_MS
            self.recent = {u: t for u, t in recent.items() if t >= horizon}
            self._pruned_at = max(1024, len(self.recent))

    def after(self, cut_ms: int) -> list[str]:
        return [user for user, newest in self.recent.items() if newest > cut_ms]


def rescore_recent_users(
    spark: SparkSession,
    model: ItemModel,
    bc: Broadcast[ItemModel],
    cfg: Config,
    progress: ListsProgress,
) -> int:
    """After a switch to ``model``: the users whose newest events came after its data cut get
    their list rebuilt under it from their state, so no reader of the new version has to wait
    for their next event to see them. Returns the lists written."""
    users = progress.after(int(model.meta.get("data_cut_ms", 0)))
    if not users:
        return 0
    frame = spark.createDataFrame([(u,) for u in users], f"{E.USER_ID} string")
    rows = rescored_list_rows(frame, bc, cfg, progress.reference).collect()
    written = sum(1 for r in rows if r[OUTCOME] == WRITTEN)
    log.info(
        "stream: %d users active after %s's data cut rescored under it, %d lists written",
        len(users),
        model.version,
        written,
    )
    return written


def process_lists_batch(
    batch: DataFrame,
    batch_id: int,
    cfg: Config,
    models: ModelHolder,
    progress: ListsProgress,
    fence: int | None = None,
) -> BatchMetrics:
    """The lists query's micro-batch (fenced in the states as ``fence``, streaming/runs.py;
    ``batch_id`` when None): ONE Spark job of one stage (per Kafka partition: parse,
    then per user: state, fold-in, list, segment, Redis write). Counts come from the job's own
    rows and an accumulator of the records read, so no extra pass.
    Right after a model switch, the recently active users are rescored under it first."""
    started = time.monotonic()
    steps: dict[str, float] = {}
    current = models.current()
    model = current[0] if current else None
    if current is not None and models.switched:
        rescore_recent_users(batch.sparkSession, current[0], current[1], cfg, progress)
        models.switched = False
        steps["rescore"] = time.monotonic() - started
    # The invalid records are the ones no user row accounts for (the archive query sends them
    # to the dead-letter topic). Counted by the tasks into an accumulator: an observation was
    # one more DataFrame step to analyse per micro-batch.
    records_before = progress.records.value
    fenced_as = batch_id if fence is None else fence
    lists = fresh_list_rows(
        batch, current[1] if current else None, cfg, fenced_as, progress.reference, progress.records
    )
    job_started = time.monotonic()
    steps["plan"] = job_started - started - steps.get("rescore", 0.0)
    # As Arrow, straight from the tasks' batches: pickling one Row per user cost the driver's
    # JVM about 0.15 of a core at 2,000 events/s.
    table = lists.toArrow()
    steps["job"] = time.monotonic() - job_started
    valid = int(pc.sum(table.column(EVENTS)).as_py() or 0)
    invalid = progress.records.value - records_before - valid
    users = table.column(E.USER_ID).to_pylist()
    progress.saw(users, table.column(NEWEST).to_pylist())
    outcomes = Counter(table.column(OUTCOME).to_pylist())
    lags = pc.list_flatten(table.column(LAGS)).to_numpy()
    duration = time.monotonic() - started
    if valid and model is None:
        log.warning(
            "stream batch %d: no model yet, so only user state grows, no per-user lists; run "
            "`streamrec batch run` once the event store has data",
            batch_id,
        )
    return BatchMetrics(
        LISTS,
        batch_id,
        valid,
        invalid,
        duration,
        progress.rate.tick(started, valid + invalid),
        users=len(set(users)),
        lists_written=outcomes[WRITTEN],
        lists_kept=outcomes[KEPT],
        model_version=model.version if model else None,
        lag_ms=lag_percentiles(lags),
        steps_s=steps,
    )


def process_archive_batch(
    batch: DataFrame, batch_id: int, cfg: Config, rate: _Rate, fence: int | None = None
) -> BatchMetrics:
    """The archive query's micro-batch: invalid records to the dead-letter topic, valid events to
    the event store (the batch's folder, named by ``fence``, replaced whole: exactly once under
    replays, and never another run's folder).

    One pass in the usual case: the counts are observed while the valid events are written.
    Only a micro-batch with invalid records is parsed a second time, for its dead letters
    (caching the parsed rows instead cost every micro-batch more CPU than that)."""
    started = time.monotonic()
    steps: dict[str, float] = {}
    observation = Observation(f"archive-{batch_id}")
    parsed = parse_records(batch, max_ahead_ms(cfg)).observe(
        observation,
        F.count(F.when(F.col(REASON).isNull(), 1)).alias("valid"),
        F.count(F.col(REASON)).alias("invalid"),
    )
    write_batch(valid_events(parsed), cfg.paths.event_store, batch_id if fence is None else fence)
    steps["store"] = time.monotonic() - started
    valid, invalid = int(observation.get["valid"]), int(observation.get["invalid"])
    if invalid:
        t = time.monotonic()
        rows = dead_letter_rows(parse_records(batch, max_ahead_ms(cfg)))
        write_dead_letters(rows, cfg.kafka)
        steps["dead_letters"] = time.monotonic() - t
    duration = time.monotonic() - started
    return BatchMetrics(
        ARCHIVE,
        batch_id,
        valid,
        invalid,
        duration,
        rate.tick(started, valid + invalid),
        steps_s=steps,
    )


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
    progress, archive_rate = ListsProgress(spark.sparkContext.accumulator(0)), _Rate()
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
