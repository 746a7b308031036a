"""Both jobs and every reader on a real Redis Cluster of three masters (stack/redis_cluster.py):
a batch run publishes a version whose keys spread over the masters, a stream micro-batch from
Kafka writes fresh lists, the sync and asyncio lookup clients answer from every fallback step,
`streamrec state rebuild` restores states, a second batch run switches versions and the
previous version's keys are gone from every master, and `streamrec serve` answers from the
cluster."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from pyspark.sql import SparkSession
from redis.cluster import RedisCluster

from streamrec.batch.job import run_batch
from streamrec.bench.server_process import ServerProcess
from streamrec.cluster_reads import PLANS, Command, drive
from streamrec.lookup import AsyncLookupClient, LookupClient
from streamrec.producer.run import publish_events
from streamrec.redis_lists import connect, switch_version, versions_with_keys, write_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.stack.redis_cluster import LocalCluster
from streamrec.streaming.event_store import write_batch
from streamrec.streaming.job import run_stream
from streamrec.streaming.state_rebuild import rebuild_states

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
LATER = T + 3_600_000  # the stream's events: after every trained one


@pytest.fixture
def cluster_cfg(isolated_cfg: Config, redis_cluster: LocalCluster) -> Iterator[Config]:
    """This test's config on the cluster; its keys there are removed afterwards."""
    cfg = with_overrides(
        isolated_cfg,
        redis=dict(port=redis_cluster.first_port, cluster=True),
        batch=dict(holdout_share=0.0, rank=4, tune_every=0, top_n=5),
    )
    yield cfg
    client = connect(cfg.redis)
    keys = list(client.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


def keys_per_master(client: RedisCluster, pattern: str) -> dict[str, int]:
    """How many keys match ``pattern`` on each master, asked of each master itself."""
    return {
        node.name: sum(
            1 for _ in client.get_redis_connection(node).scan_iter(match=pattern, count=1000)
        )
        for node in client.get_primaries()
    }


def _events(spark: SparkSession, cfg: Config) -> None:
    """Two taste groups: u0-u19 play a0-a9, u20-u39 play b0-b9 (some pairs left out)."""
    rows = [
        (f"e{u}-{i}", f"u{u}", f"{'a' if u < 20 else 'b'}{i}", "play", T + u * 100 + i, 60.0)
        for u in range(40)
        for i in range(10)
        if (u + i) % 3 != 0
    ]
    write_batch(spark.createDataFrame(rows, E.spark_event_schema()), cfg.paths.event_store, 0)


def _stream_events(users: list[str]) -> list[dict[str, Any]]:
    return [
        {
            E.EVENT_ID: f"s-{user}-{i}",
            E.USER_ID: user,
            E.ITEM_ID: f"b{i}",
            E.EVENT_TYPE: "play",
            E.EVENT_TIME: LATER + i,
            E.VALUE: 60.0,
        }
        for user in users
        for i in range(3)
    ]


def _check_lookups(cfg: Config, version: str) -> None:
    """The sync client on the cluster: every fallback step, many users, similar and popular."""
    prefix = cfg.redis.key_prefix
    with LookupClient.open(cfg.redis) as lookups:
        assert isinstance(lookups.client, RedisCluster)
        own = lookups.lookup("u3", n=3)
        assert (own.source, own.model_version, len(own.items)) == ("batch", version, 3)
        # The items the user played are not recommended back; excluding the first moves on.
        assert lookups.lookup("u3", n=3, exclude=[own.items[0][0]]).items[0] == own.items[1]
        stranger = lookups.lookup("nobody")
        assert (stranger.source, stranger.model_version) == ("popular", version)
        # A user with only a segment under the live version falls back to its list.
        segment_list = L.RecList((("a1", 3.0),), L.SOURCE_SEGMENT, version, T, T)
        write_lists(
            lookups.client,
            [(L.segment_list_key(prefix, version, 1), L.encode_list(segment_list), T)],
            600,
        )
        lookups.client.hset(L.user_list_key(prefix, version, "seg-only"), "segment", "1")
        by_segment = lookups.lookup("seg-only")
        assert (by_segment.source, by_segment.segment, by_segment.items) == (
            "segment",
            1,
            (("a1", 3.0),),
        )
        assert lookups.segment("seg-only").segment == 1
        many = lookups.lookup_many(["u3", "nobody", "seg-only", "u25"], n=3)
        assert {u: r.source for u, r in many.items()} == {
            "u3": "batch",
            "nobody": "popular",
            "seg-only": "segment",
            "u25": "batch",
        }
        assert many["u3"] == own
        near = lookups.similar("a0", n=3)
        assert (near.source, near.model_version, len(near.items)) == ("similar", version, 3)
        assert sum(item.startswith("a") for item, _ in near.items) >= 2
        assert lookups.similar("unknown-item").source is None
        assert lookups.popular(n=2).source == "popular"
        assert lookups.model_version() == version and lookups.has_lists(version)


async def _check_async_lookups(cfg: Config, version: str) -> None:
    lookups = await AsyncLookupClient.open(cfg.redis, timeout_s=5.0)
    try:
        with LookupClient.open(cfg.redis) as sync:
            for user in ["u3", "nobody", "seg-only", "u25"]:
                assert await lookups.lookup(user, n=4) == sync.lookup(user, n=4)
            assert await lookups.similar("b2") == sync.similar("b2")
            assert await lookups.popular() == sync.popular()
            assert await lookups.segment("seg-only") == sync.segment("seg-only")
        assert await lookups.model_version() == version
        assert await lookups.has_lists(version)
    finally:
        await lookups.close()


def test_jobs_and_lookups_on_a_redis_cluster(spark: SparkSession, cluster_cfg: Config) -> None:
    cfg, prefix = cluster_cfg, cluster_cfg.redis.key_prefix
    client = connect(cfg.redis)
    assert isinstance(client, RedisCluster) and len(client.get_primaries()) == 3
    _events(spark, cfg)

    # 1. A batch run publishes V1; its keys are on every master.
    first = run_batch(cfg, spark=spark).version
    spread = keys_per_master(client, L.version_keys_pattern(prefix, first))
    assert len(spread) == 3 and all(n > 0 for n in spread.values()), spread
    assert sum(spread.values()) == 40 + 20 + 1  # users, items' similar lists, popular

    _check_lookups(cfg, first)
    asyncio.run(_check_async_lookups(cfg, first))

    # 2. A stream micro-batch from Kafka: fresh lists under V1, states and metrics written.
    fresh_users = ["u3", "newcomer"]
    sent = publish_events(cfg, _stream_events(fresh_users))
    assert sent.sent == 6
    run_stream(cfg, available_now=True, spark=spark)
    with LookupClient.open(cfg.redis) as lookups:
        for user in fresh_users:
            fresh = lookups.lookup(user)
            assert (fresh.source, fresh.model_version) == ("stream", first), user
            assert fresh.watermark_ms == LATER + 2
            assert not {"b0", "b1", "b2"} & {item for item, _ in fresh.items}
    states = keys_per_master(client, f"{prefix}:st:u:*")
    assert sum(states.values()) == 2
    assert client.xlen(L.stream_metrics_key(prefix)) >= 1
    # `streamrec state rebuild`: the users the stream has not seen get a state from the store.
    report = rebuild_states(spark, cfg)
    assert (report.users, report.missing, report.behind, report.version) == (41, 39, 1, first)
    assert sum(keys_per_master(client, f"{prefix}:st:u:*").values()) == 41

    # 3. A second run switches to V2: V1's keys are gone from every master.
    second = run_batch(cfg, spark=spark).version
    assert second > first
    assert set(keys_per_master(client, L.version_keys_pattern(prefix, first)).values()) == {0}
    assert versions_with_keys(client, prefix) == {second}
    assert sum(keys_per_master(client, L.version_keys_pattern(prefix, second)).values()) > 40
    client.close()

    # 4. `streamrec serve` reads the cluster.
    with ServerProcess(cfg) as server:
        with urllib.request.urlopen(f"{server.url}/recommendations/newcomer?n=3") as r:
            body = json.loads(r.read())
        assert body["model_version"] == second and body["source"] in ("batch", "stream")
        assert len(body["items"]) == 3
        with urllib.request.urlopen(f"{server.url}/similar/a0?n=2") as r:
            assert json.loads(r.read())["model_version"] == second
        with urllib.request.urlopen(f"{server.url}/health") as r:
            assert json.loads(r.read())["status"] == "ok"
        # The model-side answers read the user's state from its own slot.
        with urllib.request.urlopen(f"{server.url}/recommendations/newcomer?n=3&explain=true") as r:
            explained = json.loads(r.read())
        assert explained["model_version"] == second
        assert any(item["because"] for item in explained["items"])
        session = urllib.request.Request(
            f"{server.url}/recommendations",
            json.dumps({"items": ["a0", "a1"], "n": 3, "diversity": 0.5}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(session) as r:
            anonymous = json.loads(r.read())
        assert (anonymous["source"], anonymous["model_version"]) == ("session", second)
        assert len(anonymous["items"]) == 3


def test_plans_reply_as_the_lua_scripts_do(isolated_cfg: Config, redis_client: redis.Redis) -> None:
    """On one node, each cluster plan (run as plain commands) and its Lua script give the same
    reply for the same keys: the lookup clients decode both the same way."""
    prefix, version = isolated_cfg.redis.key_prefix, "v20260101T000000Z-abcd"
    pointer = L.current_model_key(prefix)

    def stored(source: str, *items: str) -> bytes:
        return L.encode_list(L.RecList(tuple((i, 1.0) for i in items), source, version, T, T))

    def run(commands: Sequence[Command]) -> list[Any]:
        pipe = redis_client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())

    def same(lua: str, args: list[str]) -> None:
        by_script = redis_client.eval(lua, 1, pointer, *args)
        assert drive(PLANS[lua](pointer, args), run) == by_script, (lua[:40], args)

    for lua, args in [(LUA.LOOKUP_LUA, [prefix, "0", "a"]), (LUA.READ_POPULAR_LUA, [prefix])]:
        same(lua, args)  # before the first publish

    def user(user_id: str) -> str:
        return L.user_list_key(prefix, version, user_id)

    write_lists(
        redis_client,
        [
            (user("a"), stored("batch", "a1"), T),
            (user("a b:{c}"), stored("stream", "z"), T),
            (L.segment_list_key(prefix, version, 0), stored("segment", "s1"), T),
            (L.popular_list_key(prefix, version), stored("popular", "p1"), T),
            (L.similar_list_key(prefix, version, "x/1"), stored("similar", "y"), T),
        ],
        600,
    )
    redis_client.hset(user("a"), mapping={"segment": "0", "segment_p": "[1.0]"})
    redis_client.hset(user("b"), "segment", "0")
    redis_client.hset(user("c"), "segment", "7")
    switch_version(redis_client, prefix, version)
    users = ["a", "b", "c", "nobody", "a b:{c}"]
    for every in ("0", "1"):
        for some in (users, ["a"], ["b"], ["nobody"]):
            same(LUA.LOOKUP_LUA, [prefix, every, *some])
    for who in ("a", "b", "nobody"):
        same(LUA.READ_SEGMENT_LUA, [prefix, who])
    for item in ("x/1", "unknown"):
        same(LUA.READ_SIMILAR_LUA, [prefix, item])
    same(LUA.READ_POPULAR_LUA, [prefix])
    same(LUA.READ_LISTS_LUA, [prefix, *users])
    same(LUA.READ_LISTS_LUA, [prefix])
