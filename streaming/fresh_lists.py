"""Fresh lists and segments for the users active in a micro-batch, computed on the executors.

For every active user (model/user_state.py has the state itself):

1. read their state from Redis (one pipelined round trip per partition) and merge the
   micro-batch's events into it; a micro-batch already applied is skipped;
2. fold the user in from their whole history, the exact implicit-ALS solve against the current
   item factors (model/foldin.py, Spark's conventions), so a user the model has never seen gets
   a personal list from their first event on a known item;
3. score every item, leave out the ones the user already has, keep the top N;
4. assign their segment with the version's segment assigner (model/segments.py), from the same
   features the batch job computes;
5. write state, list and segment in one atomic Lua step (``STREAM_WRITE_LUA``), fenced on the
   micro-batch id (a replay changes nothing) and the user's newest event time (an older list
   never replaces a newer one).

A user with nothing usable yet (only items the model does not know) still gets their state and
segment; apps fall back to the segment's list, then the popular one. Items the model does not
know stay in the state and count once a retrain knows them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import redis
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from streamrec.model.foldin import fold_in
from streamrec.model.scoring import top_n
from streamrec.model.segments import summary_features
from streamrec.model.store import ItemModel
from streamrec.model.user_state import (
    UserState,
    decode_state,
    encode_state,
    merge,
    merge_rows,
    weighed_rows,
)
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

# One row per active user: what happened to them in this micro-batch.
OUTCOME = "outcome"
# Milliseconds from each of the user's events (event time) to their list's write in Redis.
LAGS = "lags_ms"
# The user's newest event time (their list's fence), 0 when they have no state.
NEWEST = "newest_ms"
WRITTEN, KEPT, NO_LIST, REPLAYED = "written", "kept", "no_list", "replayed"
OUTCOME_ROWS = T.StructType([
    T.StructField(E.USER_ID, T.StringType(), False),
    T.StructField(OUTCOME, T.StringType(), False),
    T.StructField(LAGS, T.ArrayType(T.LongType(), False), False),
    T.StructField(NEWEST, T.LongType(), False),
])  # fmt: skip


@dataclass(frozen=True)
class UserUpdate:
    """What one user's micro-batch produces for Redis."""

    state: UserState
    payload: bytes  # b"" when there is no list
    fence: int
    segment: str  # "" when the version has no segments
    segment_p: str


def update_user(
    state: UserState,
    events: pd.DataFrame,
    batch_id: int,
    model: ItemModel | None,
    index: dict[str, int],
    cfg: Config,
    reference_ms: int,
) -> UserUpdate | None:
    """One user's state, list and segment after a micro-batch; None when the micro-batch was
    applied already. Without a model yet only the state grows. Pure: what the executors do for
    every user of a partition at once."""
    merged = merge(state, events, batch_id, cfg.feedback, cfg.streaming.state_max_items,
                   cfg.streaming.state_max_ids)  # fmt: skip
    return None if merged is None else finish_users([merged], model, index, cfg, reference_ms)[0]


def finish_users(
    merged: list[UserState],
    model: ItemModel | None,
    index: dict[str, int],
    cfg: Config,
    reference_ms: int,
) -> list[UserUpdate]:
    """Merged states' lists (fold-in, score, seen items left out) and segments. The fold-in is
    one small solve per user; scoring and segment assignment run on all users at once (one
    matrix product instead of one per user)."""
    fences = [int(state.last_ms or 0) for state in merged]
    if model is None:
        return [
            UserUpdate(state, b"", fence, "", "")
            for state, fence in zip(merged, fences, strict=True)
        ]
    seen: list[np.ndarray] = []
    vectors: list[np.ndarray | None] = []
    for state in merged:
        items, ratings = state.interactions(index)
        seen.append(items)
        vector: np.ndarray | None = None
        if len(items):
            vector = fold_in(model.item_factors, model.gram, items, ratings, cfg.batch.reg_param,
                             cfg.batch.alpha)  # fmt: skip
        vectors.append(vector)
    personal = [(row, vector) for row, vector in enumerate(vectors) if vector is not None]
    payloads = [b""] * len(merged)
    if personal:
        matrix = np.stack([vector for _, vector in personal]).astype(np.float32)
        ranked = top_n(matrix, model.item_factors, [seen[row].tolist() for row, _ in personal],
                       cfg.streaming.top_n)  # fmt: skip
        generated_ms = int(time.time() * 1000)
        for (row, _), (best, scores) in zip(personal, ranked, strict=True):
            payloads[row] = L.encode_list(L.RecList(
                items=tuple((model.item_ids[i], float(s))
                            for i, s in zip(best, scores, strict=True)),
                source=L.SOURCE_STREAM, model_version=model.version,
                generated_ms=generated_ms, watermark_ms=fences[row],
            ))  # fmt: skip
    segments = [("", "")] * len(merged)
    assigner = model.segments
    if assigner is not None and assigner.spec is not None and merged:
        spec = assigner.spec
        features = np.stack([summary_features(state.behaviour, vector, reference_ms, spec)
                             for state, vector in zip(merged, vectors, strict=True)])  # fmt: skip
        assigned, probabilities = assigner.assign(features)
        segments = [
            (str(int(segment)), "" if probabilities is None
             else L.encode_segment_probabilities(list(probabilities[row])))
            for row, segment in enumerate(assigned)
        ]  # fmt: skip
    return [
        UserUpdate(state, payload, fence, segment, segment_p)
        for state, payload, fence, (segment, segment_p)
        in zip(merged, payloads, fences, segments, strict=True)
    ]  # fmt: skip


def fresh_list_rows(
    events: DataFrame,
    bc: Broadcast[ItemModel] | None,
    cfg: Config,
    batch_id: int,
    reference_ms: int,
) -> DataFrame:
    """OUTCOME_ROWS for every user with events in ``events``; the Redis writes happen on the
    executors as the rows are computed. ``bc`` is the model's broadcast, made once per model
    version (not once per micro-batch), or None before the first model; ``reference_ms`` the
    newest event time the stream saw before this micro-batch (recency features)."""
    redis_cfg, ttl, prefix = cfg.redis, cfg.lists.ttl_seconds, cfg.redis.key_prefix

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [pdf for pdf in batches if not pdf.empty]
        if not frames:
            return
        # A user's rows may span Arrow batches: group the whole partition (hash-partitioned by
        # user, so every user is in exactly one partition).
        pdf = pd.concat(frames, ignore_index=True)
        model: ItemModel | None = bc.value if bc is not None else None
        index = _index_of(model) if model is not None else {}
        # Weigh the whole partition at once, then merge each user's plain rows.
        partition_ref, by_user = weighed_rows(pdf, cfg.feedback)
        groups = sorted(by_user.items())
        client = connect(redis_cfg)
        try:
            states = read_states(client, prefix, [str(user) for user, _ in groups])
            merged = [
                merge_rows(state, rows, partition_ref, batch_id, cfg.feedback,
                           cfg.streaming.state_max_items, cfg.streaming.state_max_ids)
                for (_, rows), state in zip(groups, states, strict=True)
            ]  # fmt: skip
            # Recency features are measured from the newest event the stream has seen.
            reference = max(reference_ms, partition_ref)
            applied = [state for state in merged if state is not None]
            finished = iter(finish_users(applied, model, index, cfg, reference))
            updates = [None if state is None else next(finished) for state in merged]
            script = client.register_script(L.STREAM_WRITE_LUA)
            pipe = client.pipeline(transaction=False)
            for (user, _), update in zip(groups, updates, strict=True):
                if update is None:
                    continue
                state_key = L.user_state_key(prefix, str(user))
                # Without a model the script touches the state key only.
                list_key = (state_key if model is None
                            else L.user_list_key(prefix, model.version, str(user)))  # fmt: skip
                script(
                    keys=[list_key, state_key],
                    args=[update.payload, update.fence, ttl, batch_id,
                          encode_state(update.state), update.segment, update.segment_p],
                    client=pipe,
                )  # fmt: skip
            results = iter(pipe.execute())
            written_ms = int(time.time() * 1000)
        finally:
            client.close()
        outcomes: list[str] = []
        lags: list[list[int]] = []
        for (_, rows), update in zip(groups, updates, strict=True):
            result = -1 if update is None else int(next(results))
            if update is None or result < 0:
                outcomes.append(REPLAYED)
                lags.append([])
                continue
            outcomes.append((WRITTEN if result == 1 else KEPT) if update.payload else NO_LIST)
            lags.append([written_ms - row[3] for row in rows])
        yield pd.DataFrame({
            E.USER_ID: [str(user) for user, _ in groups], OUTCOME: outcomes, LAGS: lags,
            NEWEST: [0 if u is None else u.fence for u in updates],
        })  # fmt: skip

    cols = [E.EVENT_ID, E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.VALUE, E.EVENT_TIME]
    return (
        events.select(*cols)
        .repartition(list_partitions(cfg), E.USER_ID)
        .mapInPandas(per_partition, schema=OUTCOME_ROWS)
    )


def rescored_list_rows(
    users: DataFrame,
    bc: Broadcast[ItemModel],
    cfg: Config,
    reference_ms: int,
) -> DataFrame:
    """OUTCOME_ROWS for ``users`` (a ``user_id`` column), their lists rebuilt from their stored
    state under the broadcast model and written fenced (``FENCED_WRITE_LUA``; the state is not
    touched). For the users the stream refreshed after a new model's data cut: the batch job
    publishes those users' lists from older data, and only the stream has their newer events."""
    redis_cfg, ttl, prefix = cfg.redis, cfg.lists.ttl_seconds, cfg.redis.key_prefix

    def per_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        users = [str(u) for pdf in batches for u in pdf[E.USER_ID]]
        if not users:
            return
        model = bc.value
        client = connect(redis_cfg)
        try:
            states = read_states(client, prefix, users)
            updates = finish_users(states, model, _index_of(model), cfg, reference_ms)
            script = client.register_script(L.FENCED_WRITE_LUA)
            pipe = client.pipeline(transaction=False)
            for user, update in zip(users, updates, strict=True):
                if update.payload:
                    script(keys=[L.user_list_key(prefix, model.version, user)],
                           args=[update.payload, update.fence, ttl], client=pipe)  # fmt: skip
            results = iter(pipe.execute())
        finally:
            client.close()
        outcomes = [(WRITTEN if int(next(results)) == 1 else KEPT) if u.payload else NO_LIST
                    for u in updates]  # fmt: skip
        yield pd.DataFrame({E.USER_ID: users, OUTCOME: outcomes, LAGS: [[] for _ in users],
                            NEWEST: [u.fence for u in updates]})  # fmt: skip

    return users.repartition(list_partitions(cfg)).mapInPandas(per_partition, OUTCOME_ROWS)


def read_states(client: redis.Redis, prefix: str, users: list[str]) -> list[UserState]:
    """Every user's stored state (empty for a user the stream has not seen), one round trip."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hget(L.user_state_key(prefix, user), "state")
    return [decode_state(raw) for raw in pipe.execute()]


def list_partitions(cfg: Config) -> int:
    """Partitions of the per-user step: the config's, else one per Kafka partition (a micro-batch
    is small: more tasks than cores only adds scheduling)."""
    return cfg.streaming.list_partitions or cfg.kafka.partitions


_INDEX_CACHE: dict[str, dict[str, int]] = {}


def _index_of(model: ItemModel) -> dict[str, int]:
    # Built once per model version per Python worker, not once per user.
    if model.version not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[model.version] = model.index_of()
    return _INDEX_CACHE[model.version]
