"""Publishing a new model version: readers switch atomically, fresher stream lists survive,
the old version's keys go."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.redis_lists import read_lists, write_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
USERS = [f"u{u}" for u in range(60)]


def _events(spark: SparkSession, tag: str, t0: int):  # type: ignore[no-untyped-def]
    rows = [
        (f"{tag}-{u}-{i}", f"u{u}", f"i{(u * 7 + i * 3) % 40}", "play", t0 + u * 10 + i, 60.0)
        for u in range(60)
        for i in range(8)
    ]
    return spark.createDataFrame(rows, E.spark_event_schema())


def test_readers_never_see_a_mixed_or_empty_result_during_a_publish(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    cfg = isolated_cfg
    prefix = cfg.redis.key_prefix
    write_batch(_events(spark, "a", T), cfg.paths.event_store, 0)
    first = run_batch(cfg, spark=spark)

    # The stream refreshed u0 under the first version after the coming model's data cut: it is
    # not carried into the new version (scored with the old model; the stream rescores u0 under
    # the new version itself), so every reader sees one version's lists only.
    fresh_cut = T + 10_000_000
    stream_list = L.RecList((("i1", 0.9),), L.SOURCE_STREAM, first.version, 1, fresh_cut)
    key = L.user_list_key(prefix, first.version, "u0")
    write_lists(redis_client, [(key, L.encode_list(stream_list), fresh_cut)], ttl_seconds=600)

    write_batch(_events(spark, "b", T + 5_000_000), cfg.paths.event_store, 1)
    watched = USERS
    problems: list[str] = []
    versions_seen: set[str] = set()
    polls = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal polls
        client = redis.Redis(host=cfg.redis.host, port=cfg.redis.port)
        while not stop.is_set():
            version, popular, lists = read_lists(client, prefix, watched)
            polls += 1
            if version is None or popular is None or popular.model_version != version:
                problems.append(f"poll {polls}: version {version}, popular {popular}")
            for user, rec in lists.items():
                if rec is None or rec.model_version != version:
                    problems.append(
                        f"poll {polls}: {user} -> {rec and rec.model_version} under {version}"
                    )
            versions_seen.add(str(version))
        client.close()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        second = run_batch(cfg, spark=spark)
        time.sleep(0.2)
    finally:
        stop.set()
        poller.join()
    assert problems == []
    assert polls > 10 and versions_seen == {first.version, second.version}

    version, _, lists = read_lists(redis_client, prefix, ["u0", "u1"])
    assert version == second.version
    for user in ("u0", "u1"):
        rec = lists[user]
        assert rec is not None and rec.source == L.SOURCE_BATCH
        assert rec.model_version == second.version
    assert second.lists_kept_newer == 0
    # The previous version's keys are gone; every new key has a TTL.
    assert list(redis_client.scan_iter(match=L.version_keys_pattern(prefix, first.version))) == []
    new_keys = list(redis_client.scan_iter(match=L.version_keys_pattern(prefix, second.version)))
    similar = [k for k in new_keys if b":i:{i:" in k]  # each item's similar items
    assert len(new_keys) - len(similar) == 61  # 60 users + the popular list
    assert len(similar) == 40  # every item of the catalogue (i0..i39) has its list
    assert all(0 < redis_client.ttl(k) <= cfg.lists.ttl_seconds for k in new_keys)
