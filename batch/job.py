"""`streamrec batch run`: event store -> implicit ALS -> model store -> Redis lists."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, index_ids
from streamrec.batch.interactions import RATING, dedupe_events, to_interactions
from streamrec.batch.publish import FEATURES, SEEN, popular_items, user_lists
from streamrec.batch.train import train_als
from streamrec.errors import InputError
from streamrec.model import store
from streamrec.redis_lists import ListStamp, connect, write_list_rows, write_lists
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.spark import build_spark

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    version: str
    events: int
    users: int
    items: int
    interactions: int
    lists_written: int
    lists_kept_newer: int
    data_cut_ms: int
    durations_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.durations_s.items())
        return (
            f"model {self.version}: {self.events} events, {self.users} users, {self.items} items, "
            f"{self.interactions} interactions; {self.lists_written} lists written, "
            f"{self.lists_kept_newer} kept (stream lists newer than the data cut); {steps}"
        )


def read_event_store(spark: SparkSession, path: str) -> DataFrame:
    root = Path(path).resolve()
    if not root.exists() or not any(root.glob("*/*.parquet")):
        raise InputError(
            f"the event store {root} holds no events yet: run the streaming job first "
            "(`streamrec stream --available-now`)"
        )
    return spark.read.parquet(str(root))


def run_batch(cfg: Config, spark: SparkSession | None = None) -> BatchResult:
    spark = spark or build_spark(cfg, "batch")
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    events = dedupe_events(read_event_store(spark, cfg.paths.event_store)).cache()
    n_events = events.count()
    data_cut_ms = int(events.agg(F.max(E.EVENT_TIME)).collect()[0][0])
    ratings = to_interactions(events, cfg.feedback)
    users = index_ids(ratings, E.USER_ID, USER_INDEX)
    items = index_ids(ratings, E.ITEM_ID, ITEM_INDEX)
    indexed = ratings.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    n_interactions = indexed.count()
    timings["prepare"] = time.monotonic() - t0
    log.info(
        "batch: %d events -> %d interactions, data cut %d", n_events, n_interactions, data_cut_ms
    )

    t = time.monotonic()
    als = train_als(indexed, cfg.batch, cfg.spark.shuffle_partitions)
    timings["train"] = time.monotonic() - t

    t = time.monotonic()
    version = store.new_version_name()
    item_rows = (
        als.itemFactors.join(items, als.itemFactors.id == items[ITEM_INDEX])
        .select(ITEM_INDEX, E.ITEM_ID, "features")
        .orderBy(ITEM_INDEX)
        .collect()
    )
    import numpy as np

    item_ids = [r[E.ITEM_ID] for r in item_rows]
    factors = np.array([r["features"] for r in item_rows], dtype=np.float32)
    n_users = users.count()
    meta = {
        "version": version,
        "events": n_events,
        "interactions": n_interactions,
        "users": n_users,
        "items": len(item_ids),
        "data_cut_ms": data_cut_ms,
        "params": {
            "rank": cfg.batch.rank,
            "reg_param": cfg.batch.reg_param,
            "alpha": cfg.batch.alpha,
            "max_iter": cfg.batch.max_iter,
            "implicit": True,
        },
    }
    store.write_item_model(cfg.paths.model_store, version, item_ids, factors, meta)
    als.write().overwrite().save(str(store.version_dir(cfg.paths.model_store, version) / "als"))
    store.promote(cfg.paths.model_store, version)
    model = store.load_item_model(cfg.paths.model_store, version)
    timings["save"] = time.monotonic() - t

    t = time.monotonic()
    seen = (
        indexed.where(F.col(RATING) != 0)
        .groupBy(E.USER_ID)
        .agg(F.collect_list(ITEM_INDEX).alias(SEEN))
    )
    user_vectors = (
        als.userFactors.join(users, als.userFactors.id == users[USER_INDEX])
        .select(E.USER_ID, F.col("features").alias(FEATURES))
        .join(seen, E.USER_ID)
    )
    stamp = ListStamp(L.SOURCE_BATCH, version, int(time.time() * 1000), data_cut_ms)
    written, kept = write_list_rows(user_lists(spark, user_vectors, model, cfg, stamp), cfg)
    client = connect(cfg.redis)
    try:
        popular = L.RecList(
            tuple(popular_items(ratings, cfg.batch.top_n)),
            L.SOURCE_POPULAR,
            version,
            stamp.generated_ms,
            data_cut_ms,
        )
        write_lists(
            client,
            [(L.popular_list_key(cfg.redis.key_prefix), L.encode_list(popular), data_cut_ms)],
            cfg.lists.ttl_seconds,
        )
        client.set(L.current_model_key(cfg.redis.key_prefix), version)
    finally:
        client.close()
    timings["publish"] = time.monotonic() - t
    events.unpersist()
    indexed.unpersist()
    result = BatchResult(
        version,
        n_events,
        n_users,
        len(item_ids),
        n_interactions,
        written,
        kept,
        data_cut_ms,
        timings,
    )
    log.info("batch: %s", result.summary())
    return result
