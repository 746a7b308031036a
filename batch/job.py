"""`streamrec batch run`: event store -> implicit ALS (or EASE) -> model store -> Redis lists.

The steps live beside it: batch/prepare.py (input), batch/tuning.py and batch/holdout.py (the
setting and the promotion gate), batch/segment_version.py (segments), batch/publish.py (every
Redis write). This module runs them in order, under the run lock, and decides what is live."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.batch.holdout import SUPERSEDED, Decision, holdout_metrics, promotion_decision
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.interactions import RATING
from streamrec.batch.prepare import Prepared, prepare
from streamrec.batch.publish import (
    NEWEST_MS,
    ListStamp,
    popular_items,
    remove_unfollowed_versions,
    switch_to,
    user_lists,
    write_list_rows,
    write_popular_list,
    write_segment_lists,
    write_similar_lists,
)
from streamrec.batch.run_lock import exclusive_run
from streamrec.batch.scoring import FEATURES, RATINGS, SEEN, rank_histories, rank_users
from streamrec.batch.segment_version import Segmentation, segment_users
from streamrec.batch.segmentation import (
    ITEMS,
    SCORES,
    SEGMENT,
    segment_top_items,
)
from streamrec.batch.train import train_als, train_ease
from streamrec.batch.tuning import choose_parameters
from streamrec.errors import ModelStoreError
from streamrec.model import store
from streamrec.model.describe import write_promotion
from streamrec.model.store import ItemModel
from streamrec.redis_lists import (
    RedisClient,
    Switch,
    connect,
    decoded,
)
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
    promoted: bool = True
    decision: str = ""
    refusal: str = ""  # why not promoted: batch/holdout.py BELOW_POPULARITY or BELOW_CURRENT
    holdout: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.durations_s.items())
        quality = ""
        if self.holdout:
            als, pop = self.holdout["als"], self.holdout["popularity"]
            current = self.holdout.get("current")
            against = f", current {current['ndcg']:.4f}" if current else ""
            quality = (
                f"; holdout NDCG@{als['k']} {als['ndcg']:.4f} "
                f"(popularity {pop['ndcg']:.4f}{against})"
            )
        setting = ""
        if self.params:
            p = self.params
            how = "tuned" if (self.tuning or {}).get("tuned") else "kept"
            family = (
                f"EASE l2 {p['ease_l2']:g}{' binarised' if p['ease_binary'] else ''}, ALS"
                if p.get("family") == "ease"
                else "ALS"
            )
            setting = (
                f"; {family} rank {p['rank']} regParam {p['reg_param']:g} alpha {p['alpha']:g} "
                f"({how})"
            )
        return (
            f"model {self.version}: {self.events} events, {self.users} users, {self.items} items, "
            f"{self.interactions} interactions; {self.lists_written} lists written, "
            f"{self.lists_kept_newer} kept (stream lists newer than the data cut){quality}"
            f"{setting}; {self.decision}; {steps}"
        )


def save_model(
    cfg: Config,
    als: ALSModel,
    data: Prepared,
    version: str,
    holdout: dict[str, Any] | None,
    segments: Segmentation | None = None,
    tuning: dict[str, Any] | None = None,
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
        "segments": segments.summary if segments else None,
        # ALS's parameters and the events -> ratings transform: the stream folds users in
        # with exactly these (model/store.py check_foldable).
        **store.training_record(cfg.batch, cfg.feedback),
        # How the setting was chosen: the search's trials and validation scores, or why not.
        "tuning": tuning,
    }
    # An EASE version ranks lists with its item-item matrix over the same items, in the same order.
    matrix = train_ease(data.indexed, item_ids, cfg.batch) if cfg.batch.family == "ease" else None
    store.write_item_model(cfg.paths.model_store, version, item_ids, factors, meta, matrix)
    for kind, mapping in (("users", data.users), ("items", data.items)):
        mapping.write.mode("overwrite").parquet(
            store.id_map_dir(cfg.paths.model_store, version, kind)
        )
    als.write().overwrite().save(
        storage.join(store.version_dir(cfg.paths.model_store, version), "als")
    )
    return store.load_item_model(cfg.paths.model_store, version)


def publish(
    spark: SparkSession,
    cfg: Config,
    als: ALSModel,
    data: Prepared,
    model: ItemModel,
    segments: Segmentation | None = None,
) -> tuple[int, int, Switch]:
    """Every user's list and segment (from the executors), the segment lists, the popular list,
    then the version pointer, forward only: a newer live version refuses the switch, and this
    version's keys go again."""
    # Seen items as positions in the compact item model, which is what scoring indexes.
    positions = spark.createDataFrame(
        [(item, pos) for pos, item in enumerate(model.item_ids)], f"{E.ITEM_ID} string, pos int"
    )
    history = (
        data.indexed.where(F.col(RATING) != 0)
        .join(positions, E.ITEM_ID)
        .groupBy(E.USER_ID)
        .agg(F.collect_list(F.struct("pos", RATING)).alias("history"))
        .select(
            E.USER_ID, F.col("history.pos").alias(SEEN), F.col(f"history.{RATING}").alias(RATINGS)
        )
    )
    user_vectors = (
        als.userFactors.join(data.users, als.userFactors.id == data.users[USER_INDEX])
        .select(E.USER_ID, F.col("features").alias(FEATURES))
        .join(history.drop(RATINGS), E.USER_ID)
    )
    stamp = ListStamp(L.SOURCE_BATCH, model.version, int(time.time() * 1000), data.data_cut_ms)
    client = connect(cfg.redis)
    try:
        if model.item_matrix is not None:
            params = store.fold_in_params(model)
            ranked = rank_histories(
                history, model.item_ids, model.item_matrix, cfg.batch.top_n, params.ease_binary
            )
        else:
            ranked = rank_users(user_vectors, model.item_ids, model.item_factors, cfg.batch.top_n)
        if segments is not None:
            ranked = ranked.join(segments.assignments, E.USER_ID, "left")
        newest = data.events.groupBy(E.USER_ID).agg(F.max(E.EVENT_TIME).alias(NEWEST_MS))
        rows = user_lists(ranked.join(newest, E.USER_ID, "left"), cfg, stamp)
        written, kept = write_list_rows(rows, cfg)
        if segments is not None:
            top = segment_top_items(data.ratings, segments.assignments, cfg.segments.top_n)
            segment_lists = [
                (r[SEGMENT], list(zip(r[ITEMS], r[SCORES], strict=True))) for r in top.collect()
            ]
            write_segment_lists(client, cfg, stamp, segment_lists)
        write_popular_list(client, cfg, stamp, popular_items(data.ratings, cfg.batch.top_n))
        write_similar_lists(client, cfg, stamp, model)
        switch = switch_to(client, cfg.redis.key_prefix, model.version)
    finally:
        client.close()
    if switch.switched:
        log.info(
            "batch: published %s (previous %s): %d lists, %d newer stream lists kept",
            model.version,
            switch.previous,
            written,
            kept,
        )
    else:
        log.warning("batch: %s not published: the newer %s is live", model.version, switch.newer)
    return written, kept, switch


def _current_model(cfg: Config, version: str | None) -> ItemModel | None:
    """The promoted version: where tuning starts, and what the candidate is compared with."""
    if version is None:
        return None
    try:
        return store.load_item_model(cfg.paths.model_store, version)
    except ModelStoreError as exc:
        log.warning("batch: the current model %s cannot be loaded: %s", version, exc)
        return None


def run_batch(cfg: Config, spark: SparkSession | None = None) -> BatchResult:
    """Train on the whole event store, save a new model version, publish its lists; one run at
    a time (batch/run_lock.py), after cleaning up what killed runs left."""
    connect(cfg.redis, patient=False).close()  # fail fast, not after minutes of training
    # The session first: a store given as a Hadoop URI is reached through it.
    spark = spark or build_spark(cfg, "batch")
    client = connect(cfg.redis)
    try:
        with exclusive_run(client, cfg.redis.key_prefix):
            recover(client, cfg)
            return _run_locked(cfg, spark)
    finally:
        client.close()


def recover(client: RedisClient, cfg: Config) -> None:
    """Before a run (under the lock): the model store follows the version Redis serves, and
    what killed runs left goes: keys of versions readers do not follow, folders of versions
    never saved whole. Readers and the stream follow Redis's pointer, which moves first; a run
    killed before the store's pointer moved too is finished here."""
    prefix, model_store = cfg.redis.key_prefix, cfg.paths.model_store
    live = decoded(client.get(L.current_model_key(prefix)))
    if live and live != store.current_version(model_store) and live in store.versions(model_store):
        store.promote(model_store, live)
        log.warning("batch: the model store's current is now %s, the version Redis serves", live)
    remove_unfollowed_versions(client, prefix, live)
    for folder in store.remove_incomplete(model_store):
        log.warning("batch: removed %s, a version a killed run left half-written", folder)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    timings[step] = time.monotonic() - started


def _run_locked(cfg: Config, spark: SparkSession) -> BatchResult:
    timings: dict[str, float] = {}
    with _timed(timings, "prepare"):
        data = prepare(spark, cfg)
    log.info(
        "batch: %d events -> %d interactions of %d users, data cut %d",
        data.n_events,
        data.n_interactions,
        data.n_users,
        data.data_cut_ms,
    )
    current = _current_model(cfg, store.current_version(cfg.paths.model_store))
    with _timed(timings, "tune"):
        tuning = choose_parameters(data.events, cfg, None if current is None else current.meta)
    # From here on, the run's own setting: chosen, or kept from the current model.
    run_cfg = replace(cfg, batch=tuning.chosen)
    with _timed(timings, "evaluate"):
        holdout = holdout_metrics(data.events, run_cfg, current)
    with _timed(timings, "train"):
        als = train_als(data.indexed, run_cfg.batch, cfg.spark.shuffle_partitions)
    version = store.new_version_name()
    with _timed(timings, "segments"):
        segments = segment_users(spark, run_cfg, als, data, version)
    with _timed(timings, "save"):
        model = save_model(run_cfg, als, data, version, holdout, segments, tuning.record)

    decision = promotion_decision(holdout, cfg.batch.promote_margin)
    write_promotion(cfg.paths.model_store, model.version, asdict(decision))
    written = kept = 0
    if decision.promote:
        with _timed(timings, "publish"):
            written, kept, decision = _publish_promoted(
                spark, run_cfg, als, data, model, segments, decision
            )
    else:
        live = None if current is None else current.version
        log.warning("batch: model %s %s; %s stays current", model.version, decision.reason, live)

    for df in (data.events, data.users, data.items, data.indexed):
        df.unpersist()
    if segments is not None:
        segments.assignments.unpersist()
    result = BatchResult(
        model.version,
        data.n_events,
        data.n_users,
        len(model.item_ids),
        data.n_interactions,
        written,
        kept,
        data.data_cut_ms,
        timings,
        decision.promote,
        decision.reason,
        decision.refusal,
        holdout,
        tuning.record,
        model.meta["params"],
    )
    log.info("batch: %s", result.summary())
    return result


def _publish_promoted(
    spark: SparkSession,
    cfg: Config,
    als: ALSModel,
    data: Prepared,
    model: ItemModel,
    segments: Segmentation | None,
    decision: Decision,
) -> tuple[int, int, Decision]:
    """Lists first, then Redis's pointer (readers and the stream follow it), then the store's:
    a run killed in between leaves one version live, which recover() finishes. Returns the
    lists written and kept, and ``decision``, refused when a newer version is live."""
    written, kept, switch = publish(spark, cfg, als, data, model, segments)
    if not switch.switched:
        decision = Decision(False, f"not published: the newer {switch.newer} is live", SUPERSEDED)
        write_promotion(cfg.paths.model_store, model.version, asdict(decision))
        return written, kept, decision
    store.promote(cfg.paths.model_store, model.version)
    pruned = store.prune(cfg.paths.model_store, cfg.batch.keep_versions)
    if pruned:
        log.info("batch: removed old model versions %s", ", ".join(pruned))
    return written, kept, decision
