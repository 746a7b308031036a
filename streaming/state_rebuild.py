"""`streamrec state rebuild`: the stream's per-user states rebuilt from the event store, for
users whose state Redis no longer has whole (Redis restarted empty, a key deleted).

Each user's stored events (each event id once) are merged into a fresh state exactly as the
stream merges them (model/user_state.py). It is written where no state exists, and over a
state that is behind the event store (``behind``), only if the stream has not changed that
state since it was read (its revision), so a state the stream writes meanwhile is never lost.
A rebuilt state carries no micro-batch fence but does carry the user's newest event ids: if the
stream replays a micro-batch whose events are already in it, they are dropped as duplicates.

Then every user whose state was written gets their list rebuilt from it under the live version
(the stream's own rescoring, streaming/fresh_lists.py), so a list the stream folded from the
events after a restart alone gives way to one folded from the user's whole history.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.errors import InputError, ModelStoreError
from streamrec.model import store
from streamrec.model.user_state import NO_BATCH, UserState, encode_state, merge
from streamrec.redis_lists import connect, decoded, pipelined_script
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import OUTCOME as LIST_OUTCOME
from streamrec.streaming.fresh_lists import WRITTEN, read_revisions, rescored_list_rows

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
    lists: int = 0  # rebuilt users' lists written under the live version
    version: str | None = None  # the live version they were written under (None: no model)

    @property
    def written(self) -> int:
        return self.missing + self.behind

    def summary(self) -> str:
        return (
            f"{self.users} users in the event store: {self.missing} missing states written, "
            f"{self.behind} states behind the event store replaced, {self.kept} kept; "
            + (
                f"{self.lists} of their lists rebuilt under {self.version}"
                if self.version
                else "no live model, so no lists rebuilt"
            )
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
            script = pipelined_script(client, LUA.STATE_REBUILD_LUA)
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
    per_user = (
        events.select(*columns)
        .repartition(partitions, E.USER_ID)
        .mapInPandas(per_partition, schema=f"{E.USER_ID} string, {OUTCOME} string")
        .cache()
    )
    try:
        counts = {
            row[OUTCOME]: int(row["n"])
            for row in per_user.groupBy(OUTCOME).agg(F.count(F.lit(1)).alias("n")).collect()
        }
        rebuilt_users = per_user.where(F.col(OUTCOME).isin(MISSING, BEHIND)).select(E.USER_ID)
        lists, version = 0, None
        if counts.get(MISSING, 0) + counts.get(BEHIND, 0):
            newest = events.agg(F.max(E.EVENT_TIME)).collect()[0][0] or 0
            lists, version = rescore_lists(spark, cfg, rebuilt_users, int(newest))
    finally:
        per_user.unpersist()
    report = RebuildReport(
        sum(counts.values()),
        counts.get(MISSING, 0),
        counts.get(BEHIND, 0),
        counts.get(PRESENT, 0) + counts.get(CHANGED, 0),
        lists,
        version,
    )
    log.info("state rebuild: %s", report.summary())
    return report


def rescore_lists(
    spark: SparkSession, cfg: Config, users: DataFrame, reference_ms: int
) -> tuple[int, str | None]:
    """``users``' lists rebuilt from their states under the live version (Redis's pointer, else
    the model store's); (lists written, that version), or (0, None) with no usable model."""
    client = connect(cfg.redis)
    try:
        version = decoded(client.get(L.current_model_key(cfg.redis.key_prefix)))
    finally:
        client.close()
    version = version or store.current_version(cfg.paths.model_store)
    if version is None:
        return 0, None
    try:
        model = store.load_item_model(cfg.paths.model_store, version)
        store.check_foldable(model, asdict(cfg.feedback))
    except ModelStoreError as exc:
        log.warning("state rebuild: lists not rebuilt: %s", exc)
        return 0, None
    bc = spark.sparkContext.broadcast(model)
    try:
        rows = rescored_list_rows(users, bc, cfg, reference_ms).collect()
    finally:
        bc.unpersist()
    return sum(1 for r in rows if r[LIST_OUTCOME] == WRITTEN), version
