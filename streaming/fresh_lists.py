"""Fresh lists and segments for the users active in a micro-batch, computed on the executors.

For every active user (model/user_state.py has the state itself), in the task that read their
Kafka partition's share of the micro-batch (one Python stage, no shuffle):

1. read their state and its revision from Redis (one pipelined round trip per task) and merge
   the micro-batch's events into it; a share already applied (a replay, a retried task) is
   skipped, because the state records the micro-batch and the Spark partitions applied;
2. fold the user in from their whole history, the exact implicit-ALS solve against the current
   item factors (model/foldin.py, Spark's conventions), so a user the model has never seen gets
   a personal list from their first event on a known item;
3. score every item, leave out the ones the user already has, keep the top N;
4. assign their segment with the version's segment assigner (model/segments.py), from the same
   features the batch job computes;
5. write state, list and segment in one atomic Lua step (``STREAM_WRITE_LUA``), only if the
   state is still at the revision read (else the user is read and done again: their events
   came through two Kafka partitions) and fenced on the user's newest event time (an older
   list never replaces a newer one).

A user with nothing usable yet (only items the model does not know) still gets their state and
segment; apps fall back to the segment's list, then the popular one. Items the model does not
know stay in the state and count once a retrain knows them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark import Accumulator, Broadcast, TaskContext
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from streamrec.model.lists import als_vectors, rank_histories
from streamrec.model.segments import summary_features
from streamrec.model.store import ItemModel, fold_in_params
from streamrec.model.user_state import (
    Row,
    UserState,
    decode_state,
    encode_state,
    merge_rows,
    weighed_rows,
)
from streamrec.redis_lists import RedisClient, connect, decoded, pipelined_script
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import Config
from streamrec.streaming.parse import max_ahead_ms, record_millis, valid_event_frame

# One row per active user: what happened to them in this micro-batch.
OUTCOME = "outcome"
# Milliseconds from each of the user's events (event time) to their list's write in Redis.
LAGS = "lags_ms"
# The user's newest event time (their list's fence), 0 when they have no state.
NEWEST = "newest_ms"
# The user's valid records in the micro-batch (retried ids and replays included).
EVENTS = "events"
WRITTEN, KEPT, NO_LIST, REPLAYED = "written", "kept", "no_list", "replayed"
_ARROW_OUTCOMES = pa.schema(
    [
        pa.field(E.USER_ID, pa.string(), False),
        pa.field(OUTCOME, pa.string(), False),
        pa.field(LAGS, pa.list_(pa.field("element", pa.int64(), False)), False),
        pa.field(NEWEST, pa.int64(), False),
        pa.field(EVENTS, pa.int64(), False),
    ]
)
# The same rows as Spark sees them (the fresh path yields Arrow, the rescoring path pandas).
OUTCOME_ROWS = from_arrow_schema(_ARROW_OUTCOMES)
# STREAM_WRITE_LUA's answer when another writer changed the state since it was read.
LOST_RACE = -2


@dataclass(frozen=True)
class UserUpdate:
    """What one user's micro-batch produces for Redis."""

    state: UserState
    payload: bytes  # b"" when there is no list
    fence: int
    segment: str  # "" when the version has no segments
    segment_p: str


def finish_users(
    merged: list[UserState],
    model: ItemModel | None,
    index: dict[str, int],
    cfg: Config,
    reference_ms: int,
) -> list[UserUpdate]:
    """Merged states' lists (model/lists.py: ALS fold-in or EASE, seen items left out) and
    segments. The fold-in is one small solve per user; scoring and segment assignment run on
    all users at once (one matrix product instead of one per user)."""
    fences = [int(state.last_ms or 0) for state in merged]
    if model is None:
        return [
            UserUpdate(state, b"", fence, "", "")
            for state, fence in zip(merged, fences, strict=True)
        ]
    histories = [state.interactions(index) for state in merged]
    params = fold_in_params(model)  # the version's own, never this job's batch section
    assigner = model.segments
    segmented = assigner is not None and assigner.spec is not None
    # ALS vectors: what an ALS version ranks with, and what segments are assigned from.
    vectors = (
        als_vectors(model, params, histories)
        if segmented or model.item_matrix is None
        else [None] * len(merged)
    )
    ranked = rank_histories(model, params, histories, cfg.streaming.top_n, vectors)
    payloads = [b""] * len(merged)
    if any(best is not None for best in ranked):
        generated_ms = int(time.time() * 1000)
        encoder = _list_encoder(model)
        for row, best in enumerate(ranked):
            if best is not None:
                items, scores = best
                payloads[row] = encoder.encode(
                    items.tolist(), scores.tolist(), generated_ms, fences[row]
                )
    segments = [("", "")] * len(merged)
    if segmented and merged:
        assert assigner is not None and assigner.spec is not None
        spec = assigner.spec
        features = np.stack(
            [
                summary_features(state.behaviour, vector, reference_ms, spec)
                for state, vector in zip(merged, vectors, strict=True)
            ]
        )
        assigned, probabilities = assigner.assign(features)
        segments = [
            (
                str(int(segment)),
                ""
                if probabilities is None
                else L.encode_segment_probabilities(list(probabilities[row])),
            )
            for row, segment in enumerate(assigned)
        ]
    return [
        UserUpdate(state, payload, fence, segment, segment_p)
        for state, payload, fence, (segment, segment_p) in zip(
            merged, payloads, fences, segments, strict=True
        )
    ]


def fresh_list_rows(
    kafka_rows: DataFrame,
    bc: Broadcast[ItemModel] | None,
    cfg: Config,
    batch_id: int,
    reference_ms: int,
    records: Accumulator[int] | None = None,
) -> DataFrame:
    """OUTCOME_ROWS for every user with valid events among ``kafka_rows`` (a Kafka source's
    rows; the ``value`` column is read); the Redis writes happen on the executors as the rows
    are computed. ``bc`` is the model's broadcast, made once per model version (not once per
    micro-batch), or None before the first model; ``reference_ms`` the newest event time the
    stream saw before this micro-batch (recency features); ``records``, when given, gets every
    record read added (valid or not), once per task that succeeds.

    One Python stage and no shuffle: each task parses, groups and updates the users of one
    Kafka partition's share of the micro-batch (a shuffle by user cost a micro-batch about
    0.3 s here). Producers key events by user, so a user is normally in one partition; when
    not, the tasks holding their events race, ``STREAM_WRITE_LUA`` lets one win and the other
    redoes the user from the state the winner wrote."""
    redis_cfg, ahead_ms = cfg.redis, max_ahead_ms(cfg)

    def per_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        arrow = list(batches)
        values = [value for batch in arrow for value in batch.column("value").to_pylist()]
        if records is not None:
            records.add(len(values))
        stamps = [ms for batch in arrow for ms in record_millis(batch)]
        events = valid_event_frame(values, stamps, ahead_ms)
        if events.empty:
            return
        model: ItemModel | None = bc.value if bc is not None else None
        # The fence unit of a replay: the same micro-batch always splits into the same Spark
        # partitions (one per Kafka partition with new records, in a fixed order).
        part = TaskContext.get().partitionId()  # type: ignore[union-attr]
        partition_ref, by_user = weighed_rows(events, cfg.feedback)
        groups = sorted(by_user.items())
        client = connect(redis_cfg)
        try:
            done = update_users(
                client, groups, model, cfg, batch_id, part, max(reference_ms, partition_ref)
            )
        finally:
            client.close()
        yield pa.RecordBatch.from_pydict(
            {
                E.USER_ID: [user for user, _ in groups],
                OUTCOME: [outcome for outcome, _, _ in done],
                LAGS: [lags for _, lags, _ in done],
                NEWEST: [newest for _, _, newest in done],
                EVENTS: [len(rows) for _, rows in groups],
            },
            schema=_ARROW_OUTCOMES,
        )

    # Straight over the source's rows: the other columns cost the Arrow transfer little, and
    # each DataFrame step built per micro-batch costs the driver 10-20 ms of analysis.
    return kafka_rows.mapInArrow(per_partition, schema=OUTCOME_ROWS)


# A user whose write lost the race to another task of the same micro-batch is redone; past this
# many rounds the task fails (and Spark retries it) rather than loop.
MAX_WRITE_ROUNDS = 20


def update_users(
    client: RedisClient,
    groups: list[tuple[str, list[Row]]],
    model: ItemModel | None,
    cfg: Config,
    batch_id: int,
    part: int | None,
    features_ref_ms: int,
) -> list[tuple[str, list[int], int]]:
    """Merge each user's ``groups`` rows (as ``weighed_rows`` gives them) into their state, build
    list and segment, and write all three atomically (``STREAM_WRITE_LUA``); users whose state
    another writer changed since it was read are read and done again. Returns per user
    (outcome, event -> Redis lag per event in ms, list fence or 0)."""
    prefix = cfg.redis.key_prefix
    index = _index_of(model) if model is not None else {}
    script = pipelined_script(client, LUA.STREAM_WRITE_LUA)
    done: list[tuple[str, list[int], int] | None] = [None] * len(groups)
    pending = list(range(len(groups)))
    for _ in range(MAX_WRITE_ROUNDS):
        read = read_revisions(client, prefix, [groups[i][0] for i in pending])
        merged = [
            merge_rows(
                state,
                groups[i][1],
                batch_id,
                cfg.feedback,
                cfg.streaming.state_max_items,
                cfg.streaming.state_max_ids,
                part,
            )
            for i, (state, _) in zip(pending, read, strict=True)
        ]
        finished = iter(
            finish_users([m for m in merged if m is not None], model, index, cfg, features_ref_ms)
        )
        pipe = client.pipeline(transaction=False)
        writes: list[tuple[int, UserUpdate]] = []
        for i, (_, rev), state in zip(pending, read, merged, strict=True):
            if state is None:
                done[i] = (REPLAYED, [], 0)
                continue
            update = next(finished)
            _queue_write(script, pipe, cfg, model, groups[i][0], rev, update)
            writes.append((i, update))
        results = pipe.execute() if writes else []
        written_ms = int(time.time() * 1000)
        pending = []
        for (i, update), result in zip(writes, results, strict=True):
            if int(result) == LOST_RACE:
                pending.append(i)
                continue
            outcome = (WRITTEN if int(result) == 1 else KEPT) if update.payload else NO_LIST
            done[i] = (outcome, [written_ms - row[3] for row in groups[i][1]], update.fence)
        if not pending:
            return [d for d in done if d is not None]
    raise RuntimeError(
        f"micro-batch {batch_id}: {len(pending)} users' state kept changing under this task for "
        f"{MAX_WRITE_ROUNDS} rounds; failing the task so that Spark retries it"
    )


def _queue_write(
    script: Any,
    pipe: Any,
    cfg: Config,
    model: ItemModel | None,
    user: str,
    rev: str,
    update: UserUpdate,
) -> None:
    """One user's ``STREAM_WRITE_LUA`` call on ``pipe``: state, list and segment at once, if
    the state is still at revision ``rev``. Without a model it touches the state key only."""
    prefix = cfg.redis.key_prefix
    state_key = L.user_state_key(prefix, user)
    list_key = state_key if model is None else L.user_list_key(prefix, model.version, user)
    args = [
        update.payload,
        update.fence,
        cfg.lists.ttl_seconds,
        rev,
        encode_state(update.state),
        update.segment,
        update.segment_p,
    ]
    script(keys=[list_key, state_key], args=args, client=pipe)


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
            script = pipelined_script(client, LUA.FENCED_WRITE_LUA)
            pipe = client.pipeline(transaction=False)
            for user, update in zip(users, updates, strict=True):
                if update.payload:
                    script(
                        keys=[L.user_list_key(prefix, model.version, user)],
                        args=[update.payload, update.fence, ttl],
                        client=pipe,
                    )
            results = iter(pipe.execute())
        finally:
            client.close()
        outcomes = [
            (WRITTEN if int(next(results)) == 1 else KEPT) if u.payload else NO_LIST
            for u in updates
        ]
        yield pd.DataFrame(
            {
                E.USER_ID: users,
                OUTCOME: outcomes,
                LAGS: [[] for _ in users],
                NEWEST: [u.fence for u in updates],
                EVENTS: 0,
            }
        )

    return users.repartition(list_partitions(cfg)).mapInPandas(per_partition, OUTCOME_ROWS)


def read_states(client: RedisClient, prefix: str, users: list[str]) -> list[UserState]:
    """Every user's stored state (empty for a user the stream has not seen), one round trip."""
    return [state for state, _ in read_revisions(client, prefix, users)]


def read_revisions(
    client: RedisClient, prefix: str, users: list[str]
) -> list[tuple[UserState, str]]:
    """Every user's stored state and its revision ("" before the first write: what
    ``STREAM_WRITE_LUA`` compares), one round trip."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hmget(L.user_state_key(prefix, user), "state", "rev")
    return [(decode_state(raw), decoded(rev) or "") for raw, rev in pipe.execute()]


def list_partitions(cfg: Config) -> int:
    """Partitions of the per-user step: the config's, else one per Kafka partition (a micro-batch
    is small: more tasks than cores only adds scheduling)."""
    return cfg.streaming.list_partitions or cfg.kafka.partitions


# Built once per model per Python worker (the broadcast's value is one object in a worker),
# not once per user or task: keyed on the model object itself, since a version name alone
# could be reused by a caller building models by hand (bench/costs.py does).
_PER_MODEL: list[tuple[ItemModel, dict[str, int], L.ListEncoder]] = []


def _per_model(model: ItemModel) -> tuple[dict[str, int], L.ListEncoder]:
    if not _PER_MODEL or _PER_MODEL[0][0] is not model:
        encoder = L.ListEncoder(model.item_ids, L.SOURCE_STREAM, model.version)
        _PER_MODEL[:] = [(model, model.index_of(), encoder)]
    return _PER_MODEL[0][1], _PER_MODEL[0][2]


def _index_of(model: ItemModel) -> dict[str, int]:
    return _per_model(model)[0]


def _list_encoder(model: ItemModel) -> L.ListEncoder:
    return _per_model(model)[1]
