"""Redis faults on a real redis-server of the test's own: a frozen Redis bounds every lookup and
/health by the socket timeout, a job's client rides out a restart, /health says "degraded"
when the live lists are gone, and the stream's states come back from the event store."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.bench.faults import OwnRedis
from streamrec.errors import ServiceUnavailable
from streamrec.lookup import LookupClient
from streamrec.model.user_state import NO_BATCH, UserState, decode_state, encode_state, merge
from streamrec.redis_lists import connect
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.serve_ops import health_of
from streamrec.streaming.event_store import write_batch
from streamrec.streaming.state_rebuild import rebuild_states

pytestmark = pytest.mark.integration


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def _cfg(base: Config, server: OwnRedis, **redis_keys: object) -> Config:
    return with_overrides(base, redis=dict(port=server.port, **redis_keys))


def test_a_frozen_redis_bounds_lookups_and_health_by_the_timeout(
    stack_cfg: Config, own_redis: OwnRedis
) -> None:
    cfg = _cfg(stack_cfg, own_redis, socket_timeout_s=0.5)
    lookup = LookupClient.open(cfg.redis)
    own_redis.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="does not answer"):
            lookup.lookup("alice")
        status, body = health_of(lookup, "")
        waited = time.monotonic() - started
    finally:
        own_redis.signal(signal.SIGCONT)
    assert status == 503 and body["status"] == "unavailable"
    # Two tries of at most 0.5 s each, for the lookup and for /health: never the 26 s of old.
    assert waited < 4.0, waited
    assert lookup.model_version() is None  # answers again once Redis does
    lookup.close()


def test_a_jobs_client_rides_out_a_redis_restart(stack_cfg: Config, own_redis: OwnRedis) -> None:
    cfg = _cfg(stack_cfg, own_redis, socket_timeout_s=0.5, retry_window_s=30.0)
    client = connect(cfg.redis)
    client.set("before", "1")
    own_redis.kill()
    restarter = threading.Timer(2.0, own_redis.start)
    restarter.start()
    started = time.monotonic()
    client.set("during", "1")  # retried with backoff until Redis is back
    restarter.join()
    assert 1.5 < time.monotonic() - started < 30
    assert client.get("during") == b"1" and client.get("before") is None  # restarted empty
    impatient = connect(cfg.redis, patient=False)
    own_redis.kill()
    with pytest.raises(redis.ConnectionError):
        impatient.get("during")
    client.close()
    impatient.close()


def test_health_is_degraded_when_the_live_lists_are_gone(
    isolated_cfg: Config, redis_client: redis.Redis, tmp_path: Path
) -> None:
    prefix = isolated_cfg.redis.key_prefix
    lookup = LookupClient.open(isolated_cfg.redis)
    assert health_of(lookup, str(tmp_path / "no-store")) == (
        200,
        {"status": "no_model", "redis": "ok", "model_version": None},
    )
    redis_client.set(L.current_model_key(prefix), "v1")
    status, body = health_of(lookup, "")
    assert status == 503 and body["status"] == "degraded" and "batch run" in body["reason"]
    redis_client.hset(L.popular_list_key(prefix, "v1"), "fence", 0)
    assert health_of(lookup, "")[0] == 200
    # Redis lost everything, but the model store says a model is live: degraded, not "no_model".
    redis_client.delete(L.current_model_key(prefix), L.popular_list_key(prefix, "v1"))
    models = tmp_path / "models"
    models.mkdir()
    (models / "current").write_text("v7")
    status, body = health_of(lookup, str(models))
    assert status == 503 and body["status"] == "degraded" and "v7" in body["reason"]
    lookup.close()


def test_state_rebuild_restores_lost_states_and_keeps_live_ones(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = isolated_cfg
    t = 1_700_000_000_000
    rows = [
        (f"e{n}", f"u{n % 4}", f"i{n % 5}", "play" if n % 4 else "skip", t + n, 30.0)
        for n in range(40)
    ]
    rows.append(("e1", "u1", "i1", "play", t + 1, 30.0))  # a duplicate id: counted once
    write_batch(spark.createDataFrame(rows, E.spark_event_schema()), cfg.paths.event_store, 0)
    prefix = cfg.redis.key_prefix

    def stream_state(user: str, events: list, rev: int) -> bytes:  # type: ignore[type-arg]
        state = merge(UserState(), _frame(events), 5, cfg.feedback)
        assert state is not None
        encoded = encode_state(state)
        redis_client.hset(L.user_state_key(prefix, user), mapping={"state": encoded, "rev": rev})
        return encoded

    # u0: begun again after a restart, with events the event store has: behind, replaced.
    stream_state("u0", [rows[36]], 3)
    # u3: has an event the event store has not taken yet: kept whole.
    fresh = stream_state("u3", [rows[39], ("zz", "u3", "i2", "play", t + 99, 30.0)], 9)

    report = rebuild_states(spark, cfg)
    assert (report.users, report.missing, report.behind, report.kept) == (4, 2, 1, 1)
    assert (report.lists, report.version) == (0, None)  # no model yet: states only
    assert redis_client.hget(L.user_state_key(prefix, "u3"), "state") == fresh
    for user in ("u0", "u1", "u2"):
        raw = redis_client.hget(L.user_state_key(prefix, user), "state")
        state = decode_state(raw)
        mine = [r for r in rows[:40] if r[1] == user]
        expected = merge(UserState(), _frame(mine), 0, cfg.feedback)
        assert expected is not None
        assert state.events == len(mine) and state.batch == NO_BATCH
        assert state.weights == pytest.approx(expected.weights)
        assert redis_client.ttl(L.user_state_key(prefix, user)) == -1  # no TTL
    assert redis_client.hget(L.user_state_key(prefix, "u0"), "rev") == b"4"
    # Run again: everything is whole now.
    assert rebuild_states(spark, cfg).written == 0


def test_state_rebuild_rewrites_rebuilt_users_lists_from_their_whole_history(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    from streamrec.batch.job import run_batch

    cfg = with_overrides(isolated_cfg, batch=dict(holdout_share=0.0, rank=4, tune_every=0))
    t = 1_700_000_000_000
    rows = [
        (f"e{u}-{i}", f"u{u}", f"i{i}", "play", t + u * 100 + i, 30.0)
        for u in range(30)
        for i in range(24)
        if (u * 7 + i) % 3 == 0
    ]
    write_batch(spark.createDataFrame(rows, E.spark_event_schema()), cfg.paths.event_store, 0)
    live = run_batch(cfg, spark=spark).version
    prefix = cfg.redis.key_prefix
    # As after a restart without persistence: u1's state holds only their newest event, and
    # the list the stream folded from it, which still offers items u1 saw before.
    mine = [r for r in rows if r[1] == "u1"]
    partial = merge(UserState(), _frame(mine[-1:]), 5, cfg.feedback)
    assert partial is not None
    redis_client.hset(L.user_state_key(prefix, "u1"), mapping={"state": encode_state(partial)})

    report = rebuild_states(spark, cfg)
    # The batch job writes no states: every user's is rebuilt, and so is every user's list.
    assert (report.users, report.written, report.version) == (30, 30, live)
    assert report.lists == 30
    for user in ("u1", "u7"):
        history = {r[2] for r in rows if r[1] == user}
        raw = redis_client.hget(L.user_list_key(prefix, live, user), "list")
        rec = L.decode_list(raw)
        assert rec.source == "stream" and rec.model_version == live
        assert rec.watermark_ms == max(r[4] for r in rows if r[1] == user)
        assert rec.items and not history & {item for item, _ in rec.items}


def _frame(rows: list) -> pd.DataFrame:  # type: ignore[type-arg]
    return pd.DataFrame(
        rows, columns=[E.EVENT_ID, E.USER_ID, E.ITEM_ID, E.EVENT_TYPE, E.EVENT_TIME, E.VALUE]
    )


def test_the_stream_survives_a_redis_restart_and_states_come_back(
    spark: SparkSession, isolated_cfg: Config, own_redis: OwnRedis
) -> None:
    from streamrec.producer.run import publish_events
    from streamrec.streaming.fresh_lists import read_states
    from streamrec.streaming.job import StreamReport, run_stream, start_stream

    cfg = _cfg(isolated_cfg, own_redis, socket_timeout_s=1.0, retry_window_s=60.0)
    t = 1_700_000_000_000

    def events(first: int, users: list[str]) -> list[dict[str, object]]:
        return [
            {
                E.EVENT_ID: f"r{first + n}",
                E.USER_ID: user,
                E.ITEM_ID: f"i{n % 4}",
                E.EVENT_TYPE: "play",
                E.EVENT_TIME: t + first + n,
                E.VALUE: 10.0,
            }
            for n, user in enumerate(users)
        ]

    def wait_for_states(users: list[str], timeout_s: float = 90) -> None:
        client = connect(cfg.redis)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if all(s.events > 0 for s in read_states(client, cfg.redis.key_prefix, users)):
                    return
                assert time.monotonic() < deadline, f"no state for {users}"
                assert all(q.isActive for q in queries.all), "the stream stopped"
                time.sleep(0.2)
        finally:
            client.close()

    before = [f"b{n}" for n in range(5)]
    after = [f"a{n}" for n in range(5)]
    queries = start_stream(spark, cfg, available_now=False, report=StreamReport())
    try:
        publish_events(cfg, events(0, before))
        wait_for_states(before)
        own_redis.kill()
        publish_events(cfg, events(100, after))  # arrive while Redis is down
        time.sleep(3.0)
        own_redis.start()  # empty: no persistence
        wait_for_states(after)
        assert all(q.isActive for q in queries.all)
    finally:
        queries.stop_gracefully()
    client = connect(cfg.redis)
    assert not any(s.events for s in read_states(client, cfg.redis.key_prefix, before))
    run_stream(cfg, available_now=True, spark=spark)  # the archive query catches up
    report = rebuild_states(spark, cfg)  # the event store has the lost users' events
    assert (report.written, report.kept) == (len(before), len(after))
    assert all(s.events == 1 for s in read_states(client, cfg.redis.key_prefix, before))
    client.close()
