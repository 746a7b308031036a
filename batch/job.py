"""`streamrec batch run`: event store -> implicit ALS -> model store -> Redis lists."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.batch.holdout import holdout_metrics, promotion_decision
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, check_index_range, extend_index
from streamrec.batch.interactions import RATING, dedupe_events, to_interactions
from streamrec.batch.publish import popular_items, user_lists
from streamrec.batch.scoring import FEATURES, SEEN, rank_users
from streamrec.batch.train import train_als
from streamrec.errors import InputError
from streamrec.model import store
from streamrec.model.store import ItemModel
from streamrec.redis_lists import (
    ListStamp,
    connect,
    switch_version,
    write_list_rows,
    write_lists,
)  # fmt: skip
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.spark import build_spark
from streamrec.streaming.event_store import BATCH_ID

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
    promoted: bool = True
    decision: str = ""
    holdout: dict[str, Any] | None = None

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.durations_s.items())
        quality = ""
        if self.holdout:
            als, pop = self.holdout["als"], self.holdout["popularity"]
            quality = (f"; holdout NDCG@{als['k']} {als['ndcg']:.4f} "
                       f"(popularity {pop['ndcg']:.4f})")  # fmt: skip
        return (
            f"model {self.version}: {self.events} events, {self.users} users, {self.items} items, "
            f"{self.interactions} interactions; {self.lists_written} lists written, "
            f"{self.lists_kept_newer} kept (stream lists newer than the data cut){quality}; "
            f"{self.decision}; {steps}"
        )


def read_event_store(spark: SparkSession, path: str) -> DataFrame:
    root = storage.absolute(path)
    if not storage.filesystem(root).matches_any(root, f"{BATCH_ID}=*/*.parquet"):
        raise InputError(
            f"the event store {root} holds no events yet: run the streaming job first "
            "(`streamrec stream --available-now`)"
        )
    return spark.read.parquet(root)


@dataclass(frozen=True)
class Prepared:
    """The training input: deduplicated events, their ratings, and the id maps."""

    events: DataFrame
    ratings: DataFrame
    users: DataFrame
    items: DataFrame
    indexed: DataFrame
    n_events: int
    n_users: int
    n_interactions: int
    data_cut_ms: int


def prepare(spark: SparkSession, cfg: Config) -> Prepared:
    events = dedupe_events(read_event_store(spark, cfg.paths.event_store)).cache()
    n_events = events.count()
    data_cut_ms = int(events.agg(F.max(E.EVENT_TIME)).collect()[0][0])
    ratings = to_interactions(events, cfg.feedback, data_cut_ms)
    # The previous model's id maps, extended append-only (cached: used by several joins).
    previous = store.current_version(cfg.paths.model_store)
    users = extend_index(_previous_map(spark, cfg, previous, "users"), ratings, E.USER_ID,
                         USER_INDEX).cache()  # fmt: skip
    items = extend_index(_previous_map(spark, cfg, previous, "items"), ratings, E.ITEM_ID,
                         ITEM_INDEX).cache()  # fmt: skip
    check_index_range(users, USER_INDEX, "user")
    check_index_range(items, ITEM_INDEX, "item")
    indexed = ratings.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    n_users = indexed.select(E.USER_ID).distinct().count()
    return Prepared(events, ratings, users, items, indexed, n_events, n_users,
                    indexed.count(), data_cut_ms)  # fmt: skip


def _previous_map(spark: SparkSession, cfg: Config, version: str | None,
                  kind: str) -> DataFrame | None:  # fmt: skip
    if version is None:
        return None
    path = store.id_map_dir(cfg.paths.model_store, version, kind)
    if not storage.filesystem(path).exists(path):
        log.warning("model %s has no %s id map; ids are numbered afresh", version, kind)
        return None
    # Read into memory: the next version's map is written over the same store, and a lazy
    # reader must not see a folder that pruning removes.
    return spark.read.parquet(path).cache()


def save_model(
    cfg: Config, als: ALSModel, data: Prepared, version: str, holdout: dict[str, Any] | None
) -> ItemModel:
    """Write the version's folder (item factors in index order, YᵀY, ALS model, id maps,
    metrics); promotion is the caller's decision."""
    item_rows = (
        als.itemFactors.join(data.items, als.itemFactors.id == data.items[ITEM_INDEX])
        .select(ITEM_INDEX, E.ITEM_ID, "features")
        .orderBy(ITEM_INDEX)
        .collect()
    )
    # The item model is compact: only trained items, in ALS-id order (ids may have gaps).
    item_ids = [r[E.ITEM_ID] for r in item_rows]
    factors = np.array([r["features"] for r in item_rows], dtype=np.float32)
    meta = {
        "version": version,
        "events": data.n_events,
        "interactions": data.n_interactions,
        "users": data.n_users,
        "items": len(item_ids),
        "data_cut_ms": data.data_cut_ms,
        "holdout": holdout,
        "params": {
            "rank": cfg.batch.rank,
            "reg_param": cfg.batch.reg_param,
            "alpha": cfg.batch.alpha,
            "max_iter": cfg.batch.max_iter,
            "implicit": cfg.batch.implicit,
        },
    }
    store.write_item_model(cfg.paths.model_store, version, item_ids, factors, meta)
    for kind, mapping in (("users", data.users), ("items", data.items)):
        mapping.write.mode("overwrite").parquet(
            store.id_map_dir(cfg.paths.model_store, version, kind)
        )
    als.write().overwrite().save(
        storage.join(store.version_dir(cfg.paths.model_store, version), "als")
    )
    return store.load_item_model(cfg.paths.model_store, version)


def publish(
    spark: SparkSession, cfg: Config, als: ALSModel, data: Prepared, model: ItemModel
) -> tuple[int, int]:
    """Every user's list (from the executors), the popular list, then the version pointer."""
    # Seen items as positions in the compact item model, which is what scoring indexes.
    positions = spark.createDataFrame(
        [(item, pos) for pos, item in enumerate(model.item_ids)], f"{E.ITEM_ID} string, pos int"
    )
    seen = (
        data.indexed.where(F.col(RATING) != 0)
        .join(positions, E.ITEM_ID)
        .groupBy(E.USER_ID)
        .agg(F.collect_list("pos").alias(SEEN))
    )
    user_vectors = (
        als.userFactors.join(data.users, als.userFactors.id == data.users[USER_INDEX])
        .select(E.USER_ID, F.col("features").alias(FEATURES))
        .join(seen, E.USER_ID)
    )
    stamp = ListStamp(L.SOURCE_BATCH, model.version, int(time.time() * 1000), data.data_cut_ms)
    client = connect(cfg.redis)
    try:
        previous = client.get(L.current_model_key(cfg.redis.key_prefix))
        previous_version = previous.decode() if isinstance(previous, bytes) else previous
        ranked = rank_users(user_vectors, model.item_ids, model.item_factors, cfg.batch.top_n)
        rows = user_lists(ranked, cfg, stamp, previous_version)
        written, kept = write_list_rows(rows, cfg)
        _publish_popular(client, cfg, data, model, stamp)
        # The switch: one SET; then the previous version's keys go.
        switch_version(client, cfg.redis.key_prefix, model.version)
    finally:
        client.close()
    log.info("batch: published %s (previous %s): %d lists, %d newer stream lists kept",
             model.version, previous_version, written, kept)  # fmt: skip
    return written, kept


def _publish_popular(
    client: redis.Redis, cfg: Config, data: Prepared, model: ItemModel, stamp: ListStamp
) -> None:
    popular = L.RecList(
        tuple(popular_items(data.ratings, cfg.batch.top_n)),
        L.SOURCE_POPULAR,
        model.version,
        stamp.generated_ms,
        data.data_cut_ms,
    )
    key = L.popular_list_key(cfg.redis.key_prefix, model.version)
    write_lists(client, [(key, L.encode_list(popular), data.data_cut_ms)], cfg.lists.ttl_seconds)


def run_batch(cfg: Config, spark: SparkSession | None = None) -> BatchResult:
    """Train on the whole event store, save a new model version, publish its lists."""
    connect(cfg.redis).close()  # fail fast, not after minutes of training
    spark = spark or build_spark(cfg, "batch")
    timings: dict[str, float] = {}

    t = time.monotonic()
    data = prepare(spark, cfg)
    timings["prepare"] = time.monotonic() - t
    log.info("batch: %d events -> %d interactions of %d users, data cut %d",
             data.n_events, data.n_interactions, data.n_users, data.data_cut_ms)  # fmt: skip

    t = time.monotonic()
    holdout = holdout_metrics(data.events, cfg)
    timings["evaluate"] = time.monotonic() - t

    t = time.monotonic()
    als = train_als(data.indexed, cfg.batch, cfg.spark.shuffle_partitions)
    timings["train"] = time.monotonic() - t

    t = time.monotonic()
    model = save_model(cfg, als, data, store.new_version_name(), holdout)
    timings["save"] = time.monotonic() - t

    current = store.current_version(cfg.paths.model_store)
    current_holdout = (
        store.read_meta(cfg.paths.model_store, current).get("holdout") if current else None
    )
    decision = promotion_decision(holdout, current_holdout, cfg.batch.promote_margin)
    written = kept = 0
    if decision.promote:
        store.promote(cfg.paths.model_store, model.version)
        t = time.monotonic()
        written, kept = publish(spark, cfg, als, data, model)
        timings["publish"] = time.monotonic() - t
        pruned = store.prune(cfg.paths.model_store, cfg.batch.keep_versions)
        if pruned:
            log.info("batch: removed old model versions %s", ", ".join(pruned))
    else:
        log.warning("batch: model %s %s; %s stays current", model.version, decision.reason,
                    current)  # fmt: skip

    for df in (data.events, data.users, data.items, data.indexed):
        df.unpersist()
    result = BatchResult(model.version, data.n_events, data.n_users, len(model.item_ids),
                         data.n_interactions, written, kept, data.data_cut_ms, timings,
                         decision.promote, decision.reason, holdout)  # fmt: skip
    log.info("batch: %s", result.summary())
    return result
