"""Time that clients cannot poison: an event dated ahead of the broker becomes a dead letter,
late events and backfills are kept, and one user's far-future event fences no one else's list."""

from __future__ import annotations

import time

import pytest
import redis
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec.batch.job import run_batch
from streamrec.model import store
from streamrec.producer.run import publish_events
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.streaming.dead_letter import H_REASON
from streamrec.streaming.event_store import write_batch
from streamrec.streaming.fresh_lists import OUTCOME, WRITTEN, fresh_list_rows
from streamrec.streaming.job import run_stream
from tests.conftest import read_topic

pytestmark = pytest.mark.integration

T = 1_700_000_000_000
YEAR_2099 = 4_070_908_800_000
DAY_MS = 86_400_000


def _event(n: int, user: str, item: str, when: int) -> dict:  # type: ignore[type-arg]
    return {
        E.EVENT_ID: f"c{n}",
        E.USER_ID: user,
        E.ITEM_ID: item,
        E.EVENT_TYPE: "play",
        E.EVENT_TIME: when,
        E.VALUE: 30.0,
    }


def test_the_stream_dead_letters_events_dated_ahead_of_the_broker(
    spark: SparkSession, isolated_cfg: Config
) -> None:
    now = int(time.time() * 1000)
    events = [_event(n, f"u{n % 5}", f"i{n % 7}", T + n) for n in range(40)]
    behind = _event(40, "u1", "i3", now - DAY_MS)  # a client clock a day behind: accepted
    ahead = _event(41, "u2", "i4", YEAR_2099)  # valid by the contract, not by the broker
    publish_events(isolated_cfg, [*events, behind, ahead])
    report = run_stream(isolated_cfg, available_now=True, spark=spark)
    assert (report.valid, report.invalid) == (41, 1)
    letters = read_topic(isolated_cfg, isolated_cfg.kafka.dead_letter_topic)
    assert len(letters) == 1
    reason = dict(letters[0].headers)[H_REASON].decode()
    assert "max_event_time_ahead_s" in reason and str(YEAR_2099) in reason
    stored = spark.read.parquet(isolated_cfg.paths.event_store).select(E.EVENT_ID).collect()
    assert {r[E.EVENT_ID] for r in stored} == {e[E.EVENT_ID] for e in [*events, behind]}


def test_one_users_far_future_event_fences_only_that_users_list(
    spark: SparkSession, isolated_cfg: Config, redis_client: redis.Redis
) -> None:
    # Written straight to the event store, as an event store from before the stream's check.
    rows = [
        (f"e{n}", f"u{n % 6}", f"i{(n * 5) % 11}", "play", T + n * 1000, 30.0) for n in range(60)
    ]
    rows.append(("far", "ahead", "i1", "play", YEAR_2099, 30.0))
    write_batch(
        spark.createDataFrame(rows, E.spark_event_schema()), isolated_cfg.paths.event_store, 0
    )
    cfg = with_overrides(isolated_cfg, batch=dict(holdout_share=0.0, rank=4))
    result = run_batch(cfg, spark=spark)
    prefix = cfg.redis.key_prefix

    def fence(user: str) -> int:
        return int(redis_client.hget(L.user_list_key(prefix, result.version, user), "fence"))

    newest_u1 = max(when for _, user, _, _, when, _ in rows if user == "u1")
    assert fence("u1") == newest_u1 and fence("ahead") == YEAR_2099
    raw = redis_client.hget(L.user_list_key(prefix, result.version, "u1"), L.FIELD_LIST)
    assert L.decode_list(raw).watermark_ms == newest_u1

    # u1's next event gets a fresh list at once: its fence is u1's own, not 2099.
    names = E.event_contract().field_names
    fresh = ("n1", "u1", "i2", "play", newest_u1 + 5_000, 30.0)
    values = [(E.encode_event(dict(zip(names, fresh, strict=True))),)]
    frame = spark.createDataFrame(values, "value binary").withColumn(
        "timestamp", F.current_timestamp()
    )
    bc = spark.sparkContext.broadcast(store.load_item_model(cfg.paths.model_store))
    outcomes = fresh_list_rows(frame, bc, cfg, 1, newest_u1 + 5_000).collect()
    assert {r[E.USER_ID]: r[OUTCOME] for r in outcomes} == {"u1": WRITTEN}
    rec = L.decode_list(
        redis_client.hget(L.user_list_key(prefix, result.version, "u1"), L.FIELD_LIST)
    )
    assert rec.source == L.SOURCE_STREAM and rec.watermark_ms == newest_u1 + 5_000
