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
WRITTEN, KEPT, NO_LIST, REPLAYED = "written", "kept", "no_list", "replayed"
OUTCOME_ROWS = T.StructType([
    T.StructField(E.USER_ID, T.StringType(), False),
    T.StructField(OUTCOME, T.StringType(), False),
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
    applied already. Without a model yet only the state grows. Pure: the unit the executors
    run per user."""
    merged = merge(state, events, batch_id, cfg.feedback, cfg.streaming.state_max_items,
                   cfg.streaming.state_max_ids)  # fmt: skip
    return None if merged is None else finish_user(merged, model, index, cfg, reference_ms)


def finish_user(
    merged: UserState,
    model: ItemModel | None,
    index: dict[str, int],
    cfg: Config,
    reference_ms: int,
) -> UserUpdate:
    """A merged state's list (fold-in, score, seen items left out) and segment."""
    fence = int(merged.last_ms or 0)
    if model is None:
        return UserUpdate(merged, b"", fence, "", "")
    items, ratings = merged.interactions(index)
    vector = None
    if len(items):
        vector = fold_in(model.item_factors, model.gram, items, ratings, cfg.batch.reg_param,
                         cfg.batch.alpha)  # fmt: skip
    payload = b""
    if vector is not None:
        ((best, scores),) = top_n(vector[None, :].astype(np.float32), model.item_factors,
                                  [items.tolist()], cfg.streaming.top_n)  # fmt: skip
        payload = L.encode_list(L.RecList(
            items=tuple((model.item_ids[i], float(s)) for i, s in zip(best, scores, strict=True)),
            source=L.SOURCE_STREAM, model_version=model.version,
            generated_ms=int(time.time() * 1000), watermark_ms=fence,
        ))  # fmt: skip
    segment = segment_p = ""
    assigner = model.segments
    if assigner is not None and assigner.spec is not None:
        features = summary_features(merged.behaviour, vector, reference_ms, assigner.spec)
        segments, probabilities = assigner.assign(features[None, :])
        segment = str(int(segments[0]))
        if probabilities is not None:
            segment_p = L.encode_segment_probabilities(list(probabilities[0]))
    return UserUpdate(merged, payload, fence, segment, segment_p)


def fresh_list_rows(
    events: DataFrame,
    bc: Broadcast[ItemModel] | None,
    cfg: Config,
    batch_id: int,
    reference_ms: int,
) -> DataFrame:
    """OUTCOME_ROWS for every user with events in ``events``; the Redis writes happen on the
    executors as the rows are computed. ``bc`` is the model's broadcast, made once per model
    version (not once per micro-batch), or None before the first model."""
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
            pipe = client.pipeline(transaction=False)
            for user, _ in groups:
                pipe.hget(L.user_state_key(prefix, str(user)), "state")
            states = pipe.execute()
            script = client.register_script(L.STREAM_WRITE_LUA)
            pipe = client.pipeline(transaction=False)
            updates: list[tuple[str, UserUpdate | None]] = []
            for (user, rows), raw in zip(groups, states, strict=True):
                merged = merge_rows(decode_state(raw), rows, partition_ref, batch_id,
                                    cfg.feedback, cfg.streaming.state_max_items,
                                    cfg.streaming.state_max_ids)  # fmt: skip
                update = (None if merged is None
                          else finish_user(merged, model, index, cfg, reference_ms))  # fmt: skip
                updates.append((str(user), update))
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
        finally:
            client.close()
        outcomes = []
        for _, update in updates:
            if update is None:
                outcomes.append(REPLAYED)
                continue
            result = int(next(results))
            outcome = REPLAYED if result < 0 else WRITTEN if result == 1 else KEPT
            outcomes.append(outcome if update.payload or result < 0 else NO_LIST)
        yield pd.DataFrame({E.USER_ID: [user for user, _ in updates], OUTCOME: outcomes})

    cols = [E.EVENT_ID, E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.VALUE, E.EVENT_TIME]
    return (
        events.select(*cols)
        .repartition(cfg.spark.shuffle_partitions, E.USER_ID)
        .mapInPandas(per_partition, schema=OUTCOME_ROWS)
    )


_INDEX_CACHE: dict[str, dict[str, int]] = {}


def _index_of(model: ItemModel) -> dict[str, int]:
    # Built once per model version per Python worker, not once per user.
    if model.version not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[model.version] = model.index_of()
    return _INDEX_CACHE[model.version]
