"""The stream's per-user step on Spark executors against real Redis: state, list and segment in
one atomic write; replays change nothing; history accumulates across micro-batches, before
and after the first model; a user whose events come through two Kafka partitions gets both."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from pyspark import Accumulator
from pyspark.sql import Row, SparkSession

from streamrec.model.store import ItemModel
from streamrec.model.user_state import decode_state
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import (
    EVENTS,
    KEPT,
    LOST_RACE,
    NO_LIST,
    OUTCOME,
    REPLAYED,
    WRITTEN,
)
from streamrec.streaming.fresh_lists import fresh_list_rows as rows_for
from tests.conftest import trained_with

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def _model() -> ItemModel:
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(20, 4)).astype(np.float32)
    f64 = factors.astype(np.float64)
    ids = [f"i{n}" for n in range(20)]
    return ItemModel("v-test", ids, factors, f64.T @ f64, trained_with())


def _values(rows: list[tuple]) -> list[bytes]:  # type: ignore[type-arg]
    """Kafka record values of (event id, user, item, type, time, value) rows."""
    names = E.event_contract().field_names
    return [
        E.encode_event({n: v for n, v in zip(names, row, strict=True) if v is not None})
        for row in rows
    ]


def _outcomes(
    spark: SparkSession,
    cfg: Config,
    partitions: list[list[bytes]],
    batch_id: int,
    model: ItemModel | None,
    records: Accumulator[int] | None = None,
) -> list[Row]:
    """The per-user step over Kafka-like rows, the values of ``partitions[p]`` in Spark
    partition p (as the Kafka source reads one Kafka partition per Spark partition)."""
    keyed = [(p, value) for p, part in enumerate(partitions) for value in part]
    rdd = (
        spark.sparkContext.parallelize(keyed, len(partitions))
        .partitionBy(len(partitions), lambda p: p)
        .map(lambda kv: (kv[1],))
    )
    frame = spark.createDataFrame(rdd, "value binary")
    bc = spark.sparkContext.broadcast(model) if model is not None else None
    return rows_for(frame, bc, cfg, batch_id, T, records).collect()


def _run(
    spark: SparkSession,
    cfg: Config,
    rows: list[tuple],
    batch_id: int,  # type: ignore[type-arg]
    model: ItemModel | None,
) -> dict[str, str]:
    return {
        r[E.USER_ID]: r[OUTCOME] for r in _outcomes(spark, cfg, [_values(rows)], batch_id, model)
    }


def _list(client: redis.Redis, cfg: Config, user: str) -> L.RecList | None:
    raw = client.hget(L.user_list_key(cfg.redis.key_prefix, "v-test", user), L.FIELD_LIST)
    return None if raw is None else L.decode_list(raw)


def test_state_lists_and_replays(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg, model = isolated_cfg, _model()
    # Before any model: only the state grows.
    first = [("e0", "known", "i1", "play", T, 30.0)]
    assert _run(spark, cfg, first, 0, None) == {"known": NO_LIST}
    state = decode_state(
        redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "known"), "state")
    )
    assert state.batch == 0 and set(state.weights) == {"i1"} and state.events == 1

    rows = [
        ("e1", "known", "i2", "like", T + 5, None),
        ("e0", "known", "i1", "play", T, 30.0),  # a producer's retry of e0: counted once
        ("e3", "only-new-items", "brand-new", "play", T, 10.0),
        ("e4", "only-skips", "i3", "skip", T, None),
    ]
    outcomes = _run(spark, cfg, rows, 1, model)
    assert outcomes == {"known": WRITTEN, "only-new-items": NO_LIST, "only-skips": NO_LIST}
    rec = _list(redis_client, cfg, "known")
    assert rec is not None and rec.source == L.SOURCE_STREAM and rec.model_version == "v-test"
    assert rec.watermark_ms == T + 5 and len(rec.items) == cfg.streaming.top_n
    # The whole history is left out of the list, not just this micro-batch's items.
    assert not {"i1", "i2"} & {item for item, _ in rec.items}
    state = decode_state(
        redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "known"), "state")
    )
    assert state.events == 2 and set(state.weights) == {"i1", "i2"}
    # Items the model does not know wait in the state for the next retrain.
    newcomer = decode_state(
        redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "only-new-items"), "state")
    )
    assert set(newcomer.weights) == {"brand-new"}
    assert _list(redis_client, cfg, "only-new-items") is None

    # A replay of micro-batch 1 (a retried task, a restart) changes nothing.
    before = redis_client.hgetall(L.user_state_key(cfg.redis.key_prefix, "known"))
    assert set(_run(spark, cfg, rows, 1, model).values()) == {REPLAYED}
    assert redis_client.hgetall(L.user_state_key(cfg.redis.key_prefix, "known")) == before

    # A late event (older than the list's fence) still joins the state; the list stays.
    late = [("e5", "known", "i7", "play", T - 1000, 60.0)]
    assert _run(spark, cfg, late, 2, model) == {"known": WRITTEN}  # fence is the newest time
    assert (
        "i7"
        in decode_state(
            redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "known"), "state")
        ).weights
    )
    assert _run(spark, cfg, [("e6", "known", "i8", "play", T + 9, 5.0)], 3, model) == {
        "known": WRITTEN
    }
    assert _list(redis_client, cfg, "known").watermark_ms == T + 9  # type: ignore[union-attr]


def test_invalid_records_are_left_out_and_counted_by_nobody(
    spark: SparkSession, isolated_cfg: Config
) -> None:
    values = [*_values([("e0", "u", "i1", "play", T, 30.0)]), b"not json", b'{"event_id":1}']
    records = spark.sparkContext.accumulator(0)
    rows = _outcomes(spark, isolated_cfg, [values[:2], values[2:]], 0, _model(), records)
    assert [(r[E.USER_ID], r[OUTCOME], r[EVENTS]) for r in rows] == [("u", WRITTEN, 1)]
    # Every record read is counted, in both tasks, the one with no valid event as well: the
    # stream's invalid count is what no user row accounts for.
    assert records.value == 3


def test_a_user_in_two_kafka_partitions_gets_both_shares_once(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg, model = isolated_cfg, _model()
    users = [f"u{n}" for n in range(200)]
    # Every user has one event in each partition: the two tasks run at once on two cores and
    # race for most users; the loser of each race redoes the user on top of the winner's state.
    share = [
        _values([(f"{u}-a", u, "i1", "play", T, 30.0) for u in users]),
        _values([(f"{u}-b", u, "i2", "like", T + 7, None) for u in users]),
    ]
    rows = _outcomes(spark, cfg, share, 3, model)
    assert sorted(r[E.USER_ID] for r in rows) == sorted(users * 2)
    assert {r[OUTCOME] for r in rows} <= {WRITTEN, KEPT}
    for user in users:
        state = decode_state(
            redis_client.hget(L.user_state_key(cfg.redis.key_prefix, user), "state")
        )
        assert (state.events, set(state.weights), state.batch) == (2, {"i1", "i2"}, 3)
        assert sorted(state.parts or ()) == [0, 1]
        listed = _list(redis_client, cfg, user)
        assert listed is not None and listed.watermark_ms == T + 7
        assert not {"i1", "i2"} & {item for item, _ in listed.items}
    # The micro-batch replayed whole (a restart) changes nothing; so does one partition of it.
    assert {r[OUTCOME] for r in _outcomes(spark, cfg, share, 3, model)} == {REPLAYED}
    assert {r[OUTCOME] for r in _outcomes(spark, cfg, share[:1], 3, model)} == {REPLAYED}
    # A later micro-batch starts a new partition record.
    later = _outcomes(spark, cfg, [[], _values([("c", "u0", "i3", "play", T + 9, 5.0)])], 4, model)
    assert [(r[E.USER_ID], r[OUTCOME]) for r in later] == [("u0", WRITTEN)]
    state = decode_state(redis_client.hget(L.user_state_key(cfg.redis.key_prefix, "u0"), "state"))
    assert (state.events, state.batch, state.parts) == (3, 4, (1,))


def test_the_stream_write_only_lands_on_the_revision_it_read(
    isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    # The compare-and-set the race above relies on, without depending on two tasks overlapping.
    prefix = isolated_cfg.redis.key_prefix
    state_key = L.user_state_key(prefix, "u")
    list_key = L.user_list_key(prefix, "v-test", "u")

    def write(rev: str, state: bytes) -> int:
        return int(
            redis_client.eval(
                LUA.STREAM_WRITE_LUA, 2, list_key, state_key, b"", 0, 60, rev, state, "", ""
            )
        )

    assert write("", b"first") == 0  # no list: the state alone, revision 1
    assert redis_client.hmget(state_key, "state", "rev") == [b"first", b"1"]
    assert write("", b"stale") == LOST_RACE  # read before the first write: nothing written
    assert write("1", b"second") == 0
    assert redis_client.hmget(state_key, "state", "rev") == [b"second", b"2"]
