"""What each micro-batch of the stream's two queries does: the lists query's per-user step
(streaming/fresh_lists.py) with its metrics and the rescoring of recent users after a version
switch, and the archive query's dead letters and event store folder."""

from __future__ import annotations

import logging
import time
from collections import Counter

import pyarrow.compute as pc
from pyspark import Accumulator, Broadcast
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from streamrec.model.store import ItemModel
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
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
)
from streamrec.streaming.model_holder import ModelHolder
from streamrec.streaming.parse import (
    REASON,
    max_ahead_ms,
    parse_records,
)

log = logging.getLogger(__name__)


class Rate:
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
        self.rate = Rate()
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
    # to the dead-letter topic). The tasks count them into an accumulator: an Observation would
    # add one more DataFrame step for the driver to analyse per micro-batch.
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
    batch: DataFrame, batch_id: int, cfg: Config, rate: Rate, fence: int | None = None
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
