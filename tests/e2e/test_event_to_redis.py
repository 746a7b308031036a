"""The whole path on real services: producer -> Kafka -> streaming job -> dead-letter topic,
event store and Redis; batch job -> model store and Redis; and again on the same checkpoint."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec import storage
from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.model.user_state import decode_state
from streamrec.producer.invalid import KINDS, malformed
from streamrec.producer.run import publish_events
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.redis_lists import read_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.dead_letter import (
    H_OFFSET,
    H_PARTITION,
    H_REASON,
    H_TOPIC,
    H_TRUNCATED,
    H_VALUE_BYTES,
    H_VALUE_SHA256,
    MAX_DEAD_LETTER_VALUE_BYTES,
)
from streamrec.streaming.job import run_stream
from streamrec.streaming.metrics import ARCHIVE, LISTS
from tests.conftest import read_topic, source_digest
from tests.support import read_recent, update_user

pytestmark = pytest.mark.e2e


def _event_store_ids(spark: SparkSession, cfg: Config) -> list[str]:
    rows = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    return sorted(r[E.EVENT_ID] for r in rows)


def _user_list(client: redis.Redis, cfg: Config, user: str) -> L.RecList | None:
    return read_lists(client, cfg.redis.key_prefix, [user])[2][user]


def _valid_users_by_batch(cfg: Config) -> dict[int, set[str]]:
    """Distinct users of the valid events in each of the lists query's micro-batches, from the
    end offsets its checkpoint logged for every batch (a batch starts where the previous ended)."""
    folder = Path(storage.absolute(cfg.paths.stream_checkpoint)) / LISTS / "offsets"
    ends: dict[int, dict[int, int]] = {}
    for entry in folder.iterdir():
        if entry.name.isdigit():  # skip Hadoop's .crc files
            offsets = json.loads(entry.read_text().splitlines()[-1])[cfg.kafka.events_topic]
            ends[int(entry.name)] = {int(p): int(o) for p, o in offsets.items()}
    users: dict[int, set[str]] = {batch: set() for batch in ends}
    for record in read_topic(cfg, cfg.kafka.events_topic):
        event, _ = E.parse_event(record.value)
        if event is None:
            continue
        batch = min(b for b, end in ends.items() if record.offset < end.get(record.partition, 0))
        users[batch].add(event[E.USER_ID])
    return users


def test_events_reach_redis_and_bad_ones_the_dead_letter_topic(
    isolated_cfg: Config, spark: SparkSession, redis_client: redis.Redis
) -> None:
    # Micro-batches of at most 700 records: the 2,088 records take several of each query.
    cfg = with_overrides(
        isolated_cfg, segments=dict(enabled=True), streaming=dict(max_offsets_per_trigger=700)
    )
    world = SyntheticWorld(users=80, items=60, segments=3, seed=5, new_user_share=0.0)
    events = list(world.events(2000))
    # Two records of every malformed kind, spread through the valid ones.
    invalid = [malformed(kind, events[i * 22], i) for i, kind in enumerate(KINDS * 2)]
    records: list[object] = list(events)
    for i, bad in enumerate(invalid):
        records.insert(i * 23 + 7, bad)
    sent = publish_events(cfg, records)  # type: ignore[arg-type]
    assert (sent.sent, sent.injected_invalid, sent.rejected) == (len(events), len(invalid), 0)

    # 1. The stream, with no model yet: dead letters and the event store.
    first = run_stream(cfg, available_now=True, spark=spark)
    assert (first.valid, first.invalid) == (len(events), len(invalid))
    assert _event_store_ids(spark, cfg) == sorted(e[E.EVENT_ID] for e in events)
    # Both queries saw every record, and kept one metrics entry per micro-batch in Redis.
    assert sum(b.valid for b in first.batches) == len(events)
    assert sum(b.invalid for b in first.batches) == len(invalid)
    kept = read_recent(redis_client, cfg.redis.key_prefix)
    assert len(kept) == len(first.batches) + len(first.archived)
    lists = [m for m in kept if m["query"] == LISTS]
    assert sum(int(m["valid"]) for m in lists) == len(events)
    # Each micro-batch counted exactly the distinct users of its own offset range.
    users_by_batch = _valid_users_by_batch(cfg)
    assert len(lists) == len(users_by_batch) >= 3
    assert {int(m["batch"]): int(m["users"]) for m in lists} == {
        batch: len(users) for batch, users in users_by_batch.items()
    }
    assert all(float(m["lag_p50_ms"]) <= float(m["lag_p99_ms"]) for m in lists)
    archive = [m for m in kept if m["query"] == ARCHIVE]
    assert sum(int(m["invalid"]) for m in archive) == len(invalid)

    # Every malformed record dead-lettered once: whole, or cut with its size and digest.
    dead = read_topic(cfg, cfg.kafka.dead_letter_topic)
    originals = {source_digest(b.value): b.value for b in invalid}
    letters = [(record, {k: v.decode() for k, v in record.headers}) for record in dead]
    assert Counter(h[H_VALUE_SHA256] for _, h in letters) == Counter(
        source_digest(b.value) for b in invalid
    )
    for record, headers in letters:
        original = originals[headers[H_VALUE_SHA256]]
        assert headers[H_REASON] == E.parse_event(original)[1]
        assert headers[H_TOPIC] == cfg.kafka.events_topic
        assert record.key.decode() == (
            f"{headers[H_TOPIC]}/{headers[H_PARTITION]}/{headers[H_OFFSET]}"
        )
        size = -1 if original is None else len(original)
        assert headers[H_VALUE_BYTES] == str(size)
        assert record.value == (original or b"")[:MAX_DEAD_LETTER_VALUE_BYTES]
        assert headers[H_TRUNCATED] == str(size > MAX_DEAD_LETTER_VALUE_BYTES).lower()
    assert sum(h[H_TRUNCATED] == "true" for _, h in letters) == 2  # the two giant records

    # 2. The batch job: a model, and a list for every user, without items they already had.
    result = run_batch(cfg, spark=spark)
    users = {e[E.USER_ID] for e in events}
    assert result.users == len(users) and result.lists_written == len(users)
    seen: dict[str, set[str]] = {}
    for e in events:
        seen.setdefault(e[E.USER_ID], set()).add(e[E.ITEM_ID])
    for user in users:
        rec = _user_list(redis_client, cfg, user)
        assert rec is not None and rec.source == L.SOURCE_BATCH
        assert rec.model_version == result.version
        assert len(rec.items) == cfg.batch.top_n
        assert not {item for item, _ in rec.items} & seen[user]
    version, popular, _ = read_lists(redis_client, cfg.redis.key_prefix, [])
    assert version == result.version
    assert popular is not None and len(popular.items) == cfg.batch.top_n
    # ... and segments: every user has one, every segment a list.
    prefix, k = (
        cfg.redis.key_prefix,
        store.read_meta(cfg.paths.model_store, version)["segments"]["k"],
    )
    for user in users:
        segment = redis_client.hget(L.user_list_key(prefix, version, user), L.FIELD_SEGMENT)
        assert segment is not None and 0 <= int(segment) < k
    for segment in range(k):
        assert redis_client.hget(L.segment_list_key(prefix, version, segment), L.FIELD_LIST)

    # The stream kept every user's history from the first event on (before any model existed):
    # folding a user in from that state gives the batch model's list for them.
    model = store.load_item_model(cfg.paths.model_store)
    batch_cfg = with_overrides(cfg, streaming=dict(top_n=cfg.batch.top_n))
    no_events = pd.DataFrame(columns=[E.EVENT_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE])
    agree = []
    for user in sorted(users)[:10]:
        raw = redis_client.hget(L.user_state_key(prefix, user), "state")
        state = decode_state(raw)
        assert state.events == sum(1 for e in events if e[E.USER_ID] == user)
        update = update_user(
            state,
            no_events,
            state.batch + 1,
            model,
            model.index_of(),
            batch_cfg,
            result.data_cut_ms,
        )
        assert update is not None
        streamed = [item for item, _ in L.decode_list(update.payload).items]
        batched = [item for item, _ in _user_list(redis_client, cfg, user).items]  # type: ignore[union-attr]
        agree.append(len(set(streamed) & set(batched)) / len(batched))
    # The fold-in solves the batch's own equation (cosine >= 0.99, test_foldin_matches_spark);
    # near-ties at the tail of a 10-item list may swap.
    assert min(agree) >= 0.8 and sum(agree) / len(agree) >= 0.9, agree

    # 3. New events for three users: the stream replaces their lists with fresh ones.
    later = max(e[E.EVENT_TIME] for e in events) + 60_000
    active = sorted(users)[:3]
    fresh = [
        {
            E.EVENT_ID: f"fresh-{u}-{n}",
            E.USER_ID: u,
            E.ITEM_ID: world.item_ids[n * 7 % 60],
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: later + n,
            E.VALUE: 120.0,
        }
        for u in active
        for n in range(3)
    ]
    assert publish_events(cfg, fresh).sent == len(fresh)
    second = run_stream(cfg, available_now=True, spark=spark)
    assert (second.valid, second.invalid) == (len(fresh), 0)
    # Its metrics count what happened to them: three users, three fresh lists, none kept.
    assert sum(b.users for b in second.batches) == len(active)
    assert sum(b.lists_written for b in second.batches) == len(active)
    assert sum(b.lists_kept for b in second.batches) == 0
    for user in active:
        rec = _user_list(redis_client, cfg, user)
        assert rec is not None and rec.source == L.SOURCE_STREAM
        assert rec.watermark_ms == later + 2 and rec.model_version == result.version
        touched = {f[E.ITEM_ID] for f in fresh if f[E.USER_ID] == user}
        assert not {item for item, _ in rec.items} & touched
    untouched = sorted(users)[-1]
    assert _user_list(redis_client, cfg, untouched).source == L.SOURCE_BATCH  # type: ignore[union-attr]

    # 4. A rerun on the same checkpoint adds nothing anywhere.
    third = run_stream(cfg, available_now=True, spark=spark)
    assert (third.valid, third.invalid) == (0, 0)
    all_ids = sorted([e[E.EVENT_ID] for e in events] + [f[E.EVENT_ID] for f in fresh])
    assert _event_store_ids(spark, cfg) == all_ids
    assert len(read_topic(cfg, cfg.kafka.dead_letter_topic)) == len(invalid)
