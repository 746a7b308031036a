"""The batch job's input: the event store's events, deduplicated, turned into ratings by the
feedback transform (model/feedback.py), with user and item ids numbered for ALS, extending the
live version's numbering so an id keeps its number across versions."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.batch.ids import ITEM_INDEX, USER_INDEX, check_index_range, extend_index
from streamrec.batch.interactions import dedupe_events, to_interactions
from streamrec.errors import InputError
from streamrec.model import store
from streamrec.schemas import events as E
from streamrec.schemas.config import Config
from streamrec.schemas.event_store import DATA_FILES

log = logging.getLogger(__name__)


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
