"""Stream-side lists on Spark executors: personal lists for usable events, no row otherwise."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import SparkSession

from streamrec.model.store import ItemModel
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.streaming.fresh_lists import fresh_list_rows

pytestmark = pytest.mark.integration


def _model() -> ItemModel:
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(20, 4)).astype(np.float32)
    f64 = factors.astype(np.float64)
    ids = [f"i{n}" for n in range(20)]
    return ItemModel("v-test", ids, factors, f64.T @ f64, {})


def test_lists_only_for_users_with_usable_events(spark: SparkSession, stack_cfg: Config) -> None:
    t = 1_700_000_000_000
    rows = [
        ("e1", "known", "i1", "play", t, 30.0),
        ("e2", "known", "i2", "like", t + 5, None),
        ("e3", "only-new-items", "brand-new", "play", t, 10.0),
        ("e4", "only-skips", "i3", "skip", t, None),
    ]
    events = spark.createDataFrame(rows, E.spark_event_schema())
    got = {
        r.key: r
        for r in fresh_list_rows(
            events, spark.sparkContext.broadcast(_model()), stack_cfg
        ).collect()
    }
    key = L.user_list_key(stack_cfg.redis.key_prefix, "v-test", "known")
    assert set(got) == {key}
    rec = L.decode_list(bytes(got[key].payload))
    assert got[key].fence == t + 5 == rec.watermark_ms
    assert rec.source == L.SOURCE_STREAM and rec.model_version == "v-test"
    assert len(rec.items) == stack_cfg.streaming.top_n
    assert not {"i1", "i2"} & {item for item, _ in rec.items}


def test_a_batch_where_no_user_gets_a_list(spark: SparkSession, stack_cfg: Config) -> None:
    rows = [("e1", "u", "unknown", "play", 1_700_000_000_000, 1.0)]
    events = spark.createDataFrame(rows, E.spark_event_schema())
    assert (
        fresh_list_rows(events, spark.sparkContext.broadcast(_model()), stack_cfg).collect() == []
    )
