"""`streamrec batch run`: event store -> implicit ALS -> model store -> Redis lists."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.batch.holdout import SUPERSEDED, Decision, holdout_metrics, promotion_decision
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, check_index_range, extend_index
from streamrec.batch.interactions import RATING, dedupe_events, to_interactions
from streamrec.batch.publish import (
    NEWEST_MS,
    ListStamp,
    popular_items,
    user_lists,
    write_list_rows,
)
from streamrec.batch.run_lock import exclusive_run
from streamrec.batch.scoring import FEATURES, RATINGS, SEEN, rank_histories, rank_users
from streamrec.batch.segment_report import write_report
from streamrec.batch.segmentation import FEATURES as SEG_FEATURES
from streamrec.batch.segmentation import (
    ITEMS,
    SCORES,
    SEGMENT,
    save_pipeline,
    segment_top_items,
    train_segments,
    user_feature_frame,
)
from streamrec.batch.train import train_als, train_ease
from streamrec.batch.tuning import choose_parameters
from streamrec.errors import InputError, ModelStoreError
from streamrec.model import store
from streamrec.model.describe import write_promotion
from streamrec.model.segments import feature_spec
from streamrec.model.similar import similar_items
from streamrec.model.store import SEGMENT_ASSIGNER, ItemModel
from streamrec.redis_lists import (
    RedisClient,
    Switch,
    connect,
    decoded,
    delete_version,
    switch_version,
    versions_with_keys,
    write_lists,
)
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config
from streamrec.schemas.event_store import DATA_FILES
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


def read_event_store(spark: SparkSession, path: str) -> DataFrame:
    root = storage.absolute(path)
    if not storage.filesystem(root).matches_any(root, DATA_FILES):
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
    users = extend_index(
        _previous_map(spark, cfg, previous, "users"), ratings, E.USER_ID, USER_INDEX
    ).cache()
    items = extend_index(
        _previous_map(spark, cfg, previous, "items"), ratings, E.ITEM_ID, ITEM_INDEX
    ).cache()
    check_index_range(users, USER_INDEX, "user")
    check_index_range(items, ITEM_INDEX, "item")
    indexed = ratings.join(users, E.USER_ID).join(items, E.ITEM_ID).cache()
    n_users = indexed.select(E.USER_ID).distinct().count()
    return Prepared(
        events, ratings, users, items, indexed, n_events, n_users, indexed.count(), data_cut_ms
    )


def _previous_map(
    spark: SparkSession, cfg: Config, version: str | None, kind: str
) -> DataFrame | None:
    if version is None:
        return None
    path = store.id_map_dir(cfg.paths.model_store, version, kind)
    if not storage.filesystem(path).exists(path):
        log.warning("model %s has no %s id map; ids are numbered afresh", version, kind)
        return None
    # Read into memory: the next version's map is written over the same store, and a lazy
    # reader must not see a folder that pruning removes.
    return spark.read.parquet(path).cache()


@dataclass
class Segmentation:
    """A version's segments: the assignments to publish and the summary kept in meta.json."""

    assignments: DataFrame  # user_id, segment[, probabilities]
    summary: dict[str, Any]


def segment_users(
    spark: SparkSession, cfg: Config, als: ALSModel, data: Prepared, version: str
) -> Segmentation | None:
    """Fit the segment pipeline on every user's features (ALS factor and behaviour), save it
    and its plain-array assigner into the version's folder, and write the validation report
    beside them (``segments/report/``)."""
    if not cfg.segments.enabled:
        return None
    factors = als.userFactors.join(data.users, als.userFactors.id == data.users[USER_INDEX])
    factors = factors.select(E.USER_ID, F.col("features").alias(SEG_FEATURES))
    spec = feature_spec(cfg.segments, cfg.batch.rank)
    features = user_feature_frame(spark, data.events, factors, data.data_cut_ms, spec, None).cache()
    try:
        result = train_segments(features, cfg.segments, spec)
    except InputError as exc:  # too few users to segment: lists still publish
        log.warning("batch: no segments for %s: %s", version, exc)
        features.unpersist()
        return None
    folder = store.version_dir(cfg.paths.model_store, version)
    save_pipeline(result, storage.join(folder, "segments", "pipeline"))
    store.write_version_file(
        cfg.paths.model_store, version, SEGMENT_ASSIGNER, result.assigner.to_bytes()
    )
    with tempfile.TemporaryDirectory(prefix="streamrec-segments-") as tmp:
        # matplotlib writes local files; they are then copied to the store, wherever it is.
        metrics = write_report(result, features, data.ratings, tmp)
        for report_file in sorted(Path(tmp).iterdir()):
            store.write_version_file(
                cfg.paths.model_store,
                version,
                f"segments/report/{report_file.name}",
                report_file.read_bytes(),
            )
    features.unpersist()
    summary = {
        key: metrics[key]
        for key in (
            "method",
            "k",
            "silhouette",
            "n_components",
            "classifier_agreement",
            "segment_sizes",
        )
    }
    summary["features"] = list(spec.names())
    return Segmentation(result.assignments, summary)


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
            _publish_segment_lists(client, cfg, data, segments, stamp)
        _publish_popular(client, cfg, data, model, stamp)
        _publish_similar(client, cfg, data, model, stamp)
        # The switch: one atomic step; then the previous version's keys go.
        switch = switch_version(client, cfg.redis.key_prefix, model.version)
        if not switch.switched:
            delete_version(client, cfg.redis.key_prefix, model.version)
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


def _publish_popular(
    client: RedisClient, cfg: Config, data: Prepared, model: ItemModel, stamp: ListStamp
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


def _publish_similar(
    client: RedisClient, cfg: Config, data: Prepared, model: ItemModel, stamp: ListStamp
) -> None:
    """Each item's most similar items (model/similar.py): ``GET /similar/{item_id}``. Skipped
    above ``batch.similar_max_items`` items, where the all-pairs pass would dominate the run."""
    items = len(model.item_ids)
    if items > cfg.batch.similar_max_items:
        log.info(
            "batch: similar items skipped: %d items > batch.similar_max_items %d",
            items,
            cfg.batch.similar_max_items,
        )
        return
    positions, scores = similar_items(model.item_factors, cfg.batch.top_n)
    rows = []
    for item, near, values in zip(model.item_ids, positions, scores, strict=True):
        found = near >= 0
        if not found.any():
            continue
        ranked = tuple(
            (model.item_ids[i], float(v)) for i, v in zip(near[found], values[found], strict=True)
        )
        rec = L.RecList(
            ranked, L.SOURCE_SIMILAR, stamp.model_version, stamp.generated_ms, data.data_cut_ms
        )
        key = L.similar_list_key(cfg.redis.key_prefix, stamp.model_version, item)
        rows.append((key, L.encode_list(rec), data.data_cut_ms))
    write_lists(client, rows, cfg.lists.ttl_seconds)
    log.info("batch: %d items' similar items published", len(rows))


def _publish_segment_lists(
    client: RedisClient, cfg: Config, data: Prepared, segments: Segmentation, stamp: ListStamp
) -> None:
    """Each segment's most popular items: the list of a user the model cannot personalise."""
    top = segment_top_items(data.ratings, segments.assignments, cfg.segments.top_n).collect()
    rows = [
        (
            L.segment_list_key(cfg.redis.key_prefix, stamp.model_version, r[SEGMENT]),
            L.encode_list(
                L.RecList(
                    tuple(zip(r[ITEMS], r[SCORES], strict=True)),
                    L.SOURCE_SEGMENT,
                    stamp.model_version,
                    stamp.generated_ms,
                    data.data_cut_ms,
                )
            ),
            data.data_cut_ms,
        )
        for r in top
    ]
    write_lists(client, rows, cfg.lists.ttl_seconds)
    log.info("batch: %d segment lists published", len(rows))


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
    for version in sorted(versions_with_keys(client, prefix) - {live}):
        removed = delete_version(client, prefix, version)
        log.warning(
            "batch: removed %d keys of %s, a version readers do not follow", removed, version
        )
    for folder in store.remove_incomplete(model_store):
        log.warning("batch: removed %s, a version a killed run left half-written", folder)


def _run_locked(cfg: Config, spark: SparkSession) -> BatchResult:
    timings: dict[str, float] = {}

    t = time.monotonic()
    data = prepare(spark, cfg)
    timings["prepare"] = time.monotonic() - t
    log.info(
        "batch: %d events -> %d interactions of %d users, data cut %d",
        data.n_events,
        data.n_interactions,
        data.n_users,
        data.data_cut_ms,
    )

    current = _current_model(cfg, store.current_version(cfg.paths.model_store))
    t = time.monotonic()
    tuning = choose_parameters(data.events, cfg, None if current is None else current.meta)
    timings["tune"] = time.monotonic() - t
    # From here on, the run's own setting: chosen, or kept from the current model.
    run_cfg = replace(cfg, batch=tuning.chosen)

    t = time.monotonic()
    holdout = holdout_metrics(data.events, run_cfg, current)
    timings["evaluate"] = time.monotonic() - t

    t = time.monotonic()
    als = train_als(data.indexed, run_cfg.batch, cfg.spark.shuffle_partitions)
    timings["train"] = time.monotonic() - t

    version = store.new_version_name()
    t = time.monotonic()
    segments = segment_users(spark, run_cfg, als, data, version)
    timings["segments"] = time.monotonic() - t

    t = time.monotonic()
    model = save_model(run_cfg, als, data, version, holdout, segments, tuning.record)
    timings["save"] = time.monotonic() - t

    decision = promotion_decision(holdout, cfg.batch.promote_margin)
    write_promotion(cfg.paths.model_store, model.version, asdict(decision))
    written = kept = 0
    if decision.promote:
        t = time.monotonic()
        # Lists first, then Redis's pointer (readers and the stream follow it), then the
        # store's: a run killed in between leaves one version live, which recover() finishes.
        written, kept, switch = publish(spark, run_cfg, als, data, model, segments)
        timings["publish"] = time.monotonic() - t
        if switch.switched:
            store.promote(cfg.paths.model_store, model.version)
            pruned = store.prune(cfg.paths.model_store, cfg.batch.keep_versions)
            if pruned:
                log.info("batch: removed old model versions %s", ", ".join(pruned))
        else:
            decision = Decision(
                False, f"not published: the newer {switch.newer} is live", SUPERSEDED
            )
            write_promotion(cfg.paths.model_store, model.version, asdict(decision))
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
