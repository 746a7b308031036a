"""`streamrec state rebuild`: the stream's per-user states rebuilt from the event store, for
users whose state Redis no longer has (Redis restarted empty, a key deleted).

Each user's stored events (each event id once) are merged into a fresh state exactly as the
stream merges them (model/user_state.py), and written only where no state exists, so a state
the stream wrote meanwhile is never replaced. A rebuilt state carries no micro-batch fence but
does carry the user's newest event ids: if the stream replays a micro-batch whose events are
already in it, they are dropped as duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.errors import InputError
from streamrec.model.user_state import NO_BATCH, UserState, encode_state, merge
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)

WRITTEN, PRESENT = "written", "present"
OUTCOME = "outcome"


@dataclass(frozen=True)
class RebuildReport:
    users: int
    written: int
    present: int

    def summary(self) -> str:
        return (
            f"{self.users} users in the event store: {self.written} states rebuilt, "
            f"{self.present} kept (Redis had them)"
        )


def rebuilt_state(events: pd.DataFrame, cfg: Config) -> UserState | None:
    """One user's state from all their stored events, unfenced (``NO_BATCH``)."""
    merged = merge(
        UserState(),
        events,
        0,
        cfg.feedback,
        cfg.streaming.state_max_items,
        cfg.streaming.state_max_ids,
    )
    return None if merged is None else replace(merged, batch=NO_BATCH, parts=())


def rebuild_states(spark: SparkSession, cfg: Config) -> RebuildReport:
    root = storage.absolute(cfg.paths.event_store)
    if not storage.filesystem(root).exists(root):
        raise InputError(f"the event store {root} does not exist: nothing to rebuild from")
    events = spark.read.parquet(root).dropDuplicates([E.EVENT_ID])
    columns = [E.USER_ID, E.EVENT_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE]
    redis_cfg, prefix = cfg.redis, cfg.redis.key_prefix

    def per_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # A user's events are all in this partition, possibly over several Arrow batches.
        events = pd.concat(list(frames), ignore_index=True)
        if events.empty:
            return
        client = connect(redis_cfg)
        try:
            script = client.register_script(L.STATE_IF_ABSENT_LUA)
            users, outcomes = [], []
            pipe = client.pipeline(transaction=False)
            for user, rows in events.groupby(E.USER_ID, sort=True):
                state = rebuilt_state(rows, cfg)
                if state is None:
                    continue
                key = L.user_state_key(prefix, str(user))
                script(keys=[key], args=[encode_state(state)], client=pipe)
                users.append(str(user))
            outcomes = [WRITTEN if int(r) else PRESENT for r in pipe.execute()]
        finally:
            client.close()
        yield pd.DataFrame({E.USER_ID: users, OUTCOME: outcomes})

    partitions = max(1, cfg.spark.shuffle_partitions)
    outcomes = (
        events.select(*columns)
        .repartition(partitions, E.USER_ID)
        .mapInPandas(per_partition, schema=f"{E.USER_ID} string, {OUTCOME} string")
        .groupBy(OUTCOME)
        .agg(F.count(F.lit(1)).alias("n"))
        .collect()
    )
    counts = {row[OUTCOME]: int(row["n"]) for row in outcomes}
    report = RebuildReport(sum(counts.values()), counts.get(WRITTEN, 0), counts.get(PRESENT, 0))
    log.info("state rebuild: %s", report.summary())
    return report
