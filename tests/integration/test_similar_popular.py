"""GET /similar/{item_id} and GET /popular end to end: the batch job publishes each item's most
similar items under the new version, and the client and the server read them (and the
popular list) atomically with the version pointer."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import quote

import pytest
import redis
from pyspark.sql import SparkSession

from streamrec.batch.job import run_batch
from streamrec.bench.server_process import ServerProcess
from streamrec.lookup import LookupClient
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.event_store import write_batch

pytestmark = pytest.mark.integration

T = 1_700_000_000_000


def test_similar_items_and_popular_from_a_batch_run(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    # Two taste groups: users 0-19 play items a0-a9 ("a/0" has a slash), 20-39 play b0-b9.
    rows = [
        (
            f"e{u}-{i}",
            f"u{u}",
            f"{'a' if u < 20 else 'b'}{'/' if i == 0 else ''}{i}",
            "play",
            T + u * 100 + i,
            60.0,
        )
        for u in range(40)
        for i in range(10)
        if (u + i) % 3 != 0
    ]
    write_batch(
        spark.createDataFrame(rows, E.spark_event_schema()), isolated_cfg.paths.event_store, 0
    )
    cfg = with_overrides(isolated_cfg, batch=dict(holdout_share=0.0, rank=4, tune_every=0, top_n=5))
    version = run_batch(cfg, spark=spark).version
    keys = list(
        redis_client.scan_iter(match=L.version_keys_pattern(cfg.redis.key_prefix, version) + "i:*")
    )
    assert len(keys) == 20  # every item of the version has its list

    with LookupClient.open(cfg.redis) as client:
        near = client.similar("a/0", n=4)
        assert (near.source, near.model_version) == ("similar", version)
        assert len(near.items) == 4 and "a/0" not in dict(near.items)
        # the group's own items come first: the factors carry the two tastes
        assert sum(item.startswith("a") for item, _ in near.items) >= 3
        scores = [score for _, score in near.items]
        assert scores == sorted(scores, reverse=True)
        assert client.similar("a/0", n=4, exclude=[near.items[0][0]]).items[0] == near.items[1]
        unknown = client.similar("nobody-played-this")
        assert (unknown.items, unknown.source, unknown.model_version) == ((), None, version)
        popular = client.popular(n=3)
        assert popular.source == "popular" and len(popular.items) == 3

    with ServerProcess(cfg) as server:
        with urllib.request.urlopen(f"{server.url}/similar/{quote('a/0', safe='')}?n=2") as r:
            body = json.loads(r.read())
        assert body["item_id"] == "a/0" and body["model_version"] == version
        assert [i["item_id"] for i in body["items"]] == [item for item, _ in near.items[:2]]
        with urllib.request.urlopen(f"{server.url}/popular?n=2") as r:
            body = json.loads(r.read())
        assert body["source"] == "popular" and len(body["items"]) == 2
