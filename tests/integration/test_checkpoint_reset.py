"""A deleted checkpoint cannot destroy data: the stream refuses to start on it while Redis holds
an earlier run's states, and when told to, its micro-batches neither overwrite the earlier
run's event-store folders nor look like replays to the users' state fences."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec import storage
from streamrec.errors import StreamrecError
from streamrec.producer.run import publish_events
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import read_states
from streamrec.streaming.job import StreamReport, run_stream, start_stream

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
USERS = [f"u{n}" for n in range(5)]


def _events(first: int, count: int) -> list[dict[str, object]]:
    return [
        {
            E.EVENT_ID: f"k{first + n}",
            E.USER_ID: USERS[n % 5],
            E.ITEM_ID: f"i{n % 7}",
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: T + first + n,
            E.VALUE: 10.0,
        }
        for n in range(count)
    ]


def _stored_ids(spark: SparkSession, cfg: Config) -> list[str]:
    rows = spark.read.parquet(cfg.paths.event_store).select(E.EVENT_ID).collect()
    return sorted(r[E.EVENT_ID] for r in rows)


def _state_events(cfg: Config) -> list[int]:
    client = connect(cfg.redis)
    try:
        return [s.events for s in read_states(client, cfg.redis.key_prefix, USERS)]
    finally:
        client.close()


def test_a_deleted_checkpoint_is_refused_then_fenced_apart(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = isolated_cfg
    publish_events(cfg, _events(0, 30))
    run_stream(cfg, available_now=True, spark=spark)
    assert _state_events(cfg) == [6] * 5
    first_folders = sorted(p.name for p in Path(cfg.paths.event_store).glob("batch_id=*"))
    assert _stored_ids(spark, cfg) == sorted(e[E.EVENT_ID] for e in _events(0, 30))
    assert redis_client.get(L.stream_run_key(cfg.redis.key_prefix))

    shutil.rmtree(storage.absolute(cfg.paths.stream_checkpoint))
    with pytest.raises(StreamrecError, match="--new-run"):
        run_stream(cfg, available_now=True, spark=spark)

    # Events sent while the stream is down, then told to start anew: the new run begins right
    # after the newest events the event store holds, so these are stored once and nothing of
    # the earlier run is read again (streaming.starting_offsets stays earliest).
    publish_events(cfg, _events(50, 10))
    queries = start_stream(spark, cfg, available_now=False, report=StreamReport(), new_run=True)
    try:
        deadline = time.monotonic() + 60
        while not all(q.lastProgress for q in queries.all):  # the queries hold their offsets
            assert time.monotonic() < deadline
            time.sleep(0.2)
        publish_events(cfg, _events(100, 10))
        while _state_events(cfg) != [10] * 5:  # new events counted, not taken for replays
            assert time.monotonic() < deadline, _state_events(cfg)
            assert all(q.isActive for q in queries.all)
            time.sleep(0.2)
        while len(_stored_ids(spark, cfg)) < 50:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(1.0)
        assert _state_events(cfg) == [10] * 5
    finally:
        queries.stop_gracefully()
    # The earlier run's folders are untouched, the new run's are new ones, and every event is
    # stored exactly once: 0 lost, 0 doubled.
    folders = sorted(p.name for p in Path(cfg.paths.event_store).glob("batch_id=*"))
    assert set(first_folders) < set(folders)
    assert _stored_ids(spark, cfg) == sorted(
        e[E.EVENT_ID] for e in _events(0, 30) + _events(50, 10) + _events(100, 10)
    )
