"""`streamrec state rebuild`: the stream's per-user states rebuilt from the event store, for
users whose state Redis no longer has whole (Redis restarted empty, a key deleted).

Each user's stored events (each event id once) are merged into a fresh state exactly as the
stream merges them (model/user_state.py). It is written where no state exists, and over a
state that is behind the event store (``behind``), only if the stream has not changed that
state since it was read (its revision), so a state the stream writes meanwhile is never lost.
A rebuilt state carries no micro-batch fence but does carry the user's newest event ids: if the
stream replays a micro-batch whose events are already in it, they are dropped as duplicates.
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
from streamrec.streaming.fresh_lists import read_revisions

log = logging.getLogger(__name__)

# What the rebuild did for a user: wrote a missing state, replaced one behind the event store,
# found the state changed by the stream meanwhile (kept), or found it complete (kept).
MISSING, BEHIND, CHANGED, PRESENT = "missing", "behind", "changed", "present"
OUTCOME = "outcome"


@dataclass(frozen=True)
class RebuildReport:
    users: int
    missing: int  # states Redis had none of, written
    behind: int  # states missing events the event store has, replaced
    kept: int  # complete states, or ones the stream changed during the rebuild

    @property
    def written(self) -> int:
        return self.missing + self.behind

    def summary(self) -> str:
        return (
            f"{self.users} users in the event store: {self.missing} missing states written, "
            f"{self.behind} states behind the event store replaced, {self.kept} kept"
        )


def behind(state: UserState, rebuilt: UserState, stored_ids: set[str]) -> bool:
    """Whether ``state`` should give way to ``rebuilt``: it is missing, or it counts fewer events
    and every event id it remembers is in the event store (so the rebuilt one has them all: a
    state Redis lost and the stream began again after a restart, say). A state with events the
    event store does not have yet is kept."""
    if state.events == 0:
        return True
    return state.events < rebuilt.events and set(state.ids) <= stored_ids


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
        groups = [(str(user), rows) for user, rows in events.groupby(E.USER_ID, sort=True)]
        client = connect(redis_cfg)
        try:
            stored = read_revisions(client, prefix, [user for user, _ in groups])
            script = client.register_script(L.STATE_REBUILD_LUA)
            pipe = client.pipeline(transaction=False)
            users, wanted = [], []
            for (user, rows), (state, rev) in zip(groups, stored, strict=True):
                rebuilt = rebuilt_state(rows, cfg)
                if rebuilt is None or not behind(state, rebuilt, set(rows[E.EVENT_ID])):
                    continue
                key = L.user_state_key(prefix, user)
                script(keys=[key], args=[encode_state(rebuilt), rev], client=pipe)
                users.append(user)
                wanted.append(state.events == 0)
            results = [int(r) for r in pipe.execute()]
        finally:
            client.close()
        outcomes = [
            (MISSING if was_missing else BEHIND) if written else CHANGED
            for written, was_missing in zip(results, wanted, strict=True)
        ]
        kept = [user for user, _ in groups if user not in set(users)]
        yield pd.DataFrame({E.USER_ID: users + kept, OUTCOME: outcomes + [PRESENT] * len(kept)})

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
    report = RebuildReport(
        sum(counts.values()),
        counts.get(MISSING, 0),
        counts.get(BEHIND, 0),
        counts.get(PRESENT, 0) + counts.get(CHANGED, 0),
    )
    log.info("state rebuild: %s", report.summary())
    return report
