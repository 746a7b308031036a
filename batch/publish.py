"""The batch job's Redis side: every user's top-N list (ranked by batch/scoring.py, encoded and
written on the executors, one Redis pipeline per partition), the segment, popular and similar
items' lists, the switch of readers to the new version, and the removal of versions nobody
follows. Key names come from schemas/redis_layout.py; version removal from
streamrec/redis_lists.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from streamrec.batch.interactions import RATING
from streamrec.batch.scoring import ITEMS, SCORES
from streamrec.model.similar import similar_items
from streamrec.model.store import ItemModel
from streamrec.redis_lists import (
    RedisClient,
    Switch,
    connect,
    delete_version,
    switch_version,
    versions_with_keys,
    write_lists,
    write_publish,
)
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

log = logging.getLogger(__name__)

SEGMENT = "segment"
NEWEST_MS = "newest_ms"
PROBABILITIES = "probabilities"

# A batch publish's rows: the user's key in the new version, their list, and their segment (""
# when segmentation is off) and its probabilities ("" unless GMM).
PUBLISH_ROWS = T.StructType(
    [
        T.StructField("key", T.StringType(), False),
        T.StructField("payload", T.BinaryType(), False),
        T.StructField("fence", T.LongType(), False),
        T.StructField("segment", T.StringType(), False),
        T.StructField("segment_p", T.StringType(), False),
    ]
)


@dataclass(frozen=True)
class ListStamp:
    """What every list of one publish carries besides its items."""

    source: str
    model_version: str
    generated_ms: int
    watermark_ms: int


def write_list_rows(rows: DataFrame, cfg: Config) -> tuple[int, int]:
    """Write a publish's PUBLISH_ROWS (through the publish script) from the executors, one
    pipeline per partition; returns the (written, kept because newer) totals."""
    redis_cfg, ttl = cfg.redis, cfg.lists.ttl_seconds
    sc = rows.sparkSession.sparkContext
    written_acc, kept_acc = sc.accumulator(0), sc.accumulator(0)

    def write_partition(it: Iterator[Row]) -> None:
        client = connect(redis_cfg)
        try:
            w, k = write_publish(
                client, ((r.key, r.payload, r.fence, r.segment, r.segment_p) for r in it), ttl
            )
        finally:
            client.close()
        written_acc.add(w)
        kept_acc.add(k)

    rows.foreachPartition(write_partition)
    return written_acc.value, kept_acc.value


def user_lists(ranked: DataFrame, cfg: Config, stamp: ListStamp) -> DataFrame:
    """PUBLISH_ROWS from ``rank_users`` output, which may carry each user's ``segment`` (int,
    null when unassigned), membership ``probabilities`` (array of doubles) and ``newest_ms``,
    the user's newest trained event: their list's fence and watermark (the stamp's data cut
    for a user without one). Fences are per user: one user's clock cannot fence the others'."""
    prefix, version = cfg.redis.key_prefix, stamp.model_version
    has_segment, has_probabilities = SEGMENT in ranked.columns, PROBABILITIES in ranked.columns
    has_newest = NEWEST_MS in ranked.columns

    def fences(pdf: pd.DataFrame) -> np.ndarray:
        if not has_newest:
            return np.full(len(pdf), stamp.watermark_ms, dtype=np.int64)
        newest = pdf[NEWEST_MS].fillna(stamp.watermark_ms)
        return newest.to_numpy(dtype=np.int64)

    def segment_fields(pdf: pd.DataFrame) -> tuple[list[str], list[str]]:
        n = len(pdf)
        segments = (
            [""] * n
            if not has_segment
            else ["" if pd.isna(s) else str(int(s)) for s in pdf[SEGMENT]]
        )
        probabilities = (
            [""] * n
            if not has_probabilities
            else [
                L.encode_segment_probabilities(None if p is None else list(p))
                for p in pdf[PROBABILITIES]
            ]
        )
        return segments, probabilities

    def encode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            fence = fences(pdf)
            payloads = [
                L.encode_list(
                    L.RecList(
                        items=tuple(zip(items, (float(s) for s in scores), strict=True)),
                        source=stamp.source,
                        model_version=stamp.model_version,
                        generated_ms=stamp.generated_ms,
                        watermark_ms=int(watermark),
                    )
                )
                for items, scores, watermark in zip(pdf[ITEMS], pdf[SCORES], fence, strict=True)
            ]
            segments, probabilities = segment_fields(pdf)
            yield pd.DataFrame(
                {
                    "key": [L.user_list_key(prefix, version, u) for u in pdf[E.USER_ID]],
                    "payload": payloads,
                    "fence": fence,
                    "segment": segments,
                    "segment_p": probabilities,
                }
            )

    return ranked.mapInPandas(encode, schema=PUBLISH_ROWS)


def popular_items(ratings: DataFrame, n: int) -> list[tuple[str, float]]:
    """The n items with the most users who like them (positive rating), as (item, users)."""
    top = (
        ratings.where(F.col(RATING) > 0)
        .groupBy(E.ITEM_ID)
        .agg(F.countDistinct(E.USER_ID).alias("users"))
        .orderBy(F.desc("users"), F.asc(E.ITEM_ID))
        .limit(n)
        .collect()
    )
    return [(r[E.ITEM_ID], float(r["users"])) for r in top]


def _encoded(stamp: ListStamp, source: str, items: Sequence[tuple[str, float]]) -> bytes:
    rec = L.RecList(
        tuple(items), source, stamp.model_version, stamp.generated_ms, stamp.watermark_ms
    )
    return L.encode_list(rec)


def write_popular_list(
    client: RedisClient, cfg: Config, stamp: ListStamp, items: Sequence[tuple[str, float]]
) -> None:
    """The version's popular list: what a user nobody knows gets."""
    key = L.popular_list_key(cfg.redis.key_prefix, stamp.model_version)
    payload = _encoded(stamp, L.SOURCE_POPULAR, items)
    write_lists(client, [(key, payload, stamp.watermark_ms)], cfg.lists.ttl_seconds)


def write_segment_lists(
    client: RedisClient,
    cfg: Config,
    stamp: ListStamp,
    lists: Sequence[tuple[int, Sequence[tuple[str, float]]]],
) -> None:
    """Each segment's most popular items: the list of a user the model cannot personalise."""
    rows = [
        (
            L.segment_list_key(cfg.redis.key_prefix, stamp.model_version, segment),
            _encoded(stamp, L.SOURCE_SEGMENT, items),
            stamp.watermark_ms,
        )
        for segment, items in lists
    ]
    write_lists(client, rows, cfg.lists.ttl_seconds)
    log.info("batch: %d segment lists published", len(rows))


def write_similar_lists(
    client: RedisClient, cfg: Config, stamp: ListStamp, model: ItemModel
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
        ranked = [
            (model.item_ids[i], float(v)) for i, v in zip(near[found], values[found], strict=True)
        ]
        key = L.similar_list_key(cfg.redis.key_prefix, stamp.model_version, item)
        rows.append((key, _encoded(stamp, L.SOURCE_SIMILAR, ranked), stamp.watermark_ms))
    write_lists(client, rows, cfg.lists.ttl_seconds)
    log.info("batch: %d items' similar items published", len(rows))


def switch_to(client: RedisClient, prefix: str, version: str) -> Switch:
    """Readers follow ``version`` from now on, in one atomic step, and the previous version's
    keys go; a newer live version refuses the switch, and then this version's keys go."""
    switch = switch_version(client, prefix, version)
    if not switch.switched:
        delete_version(client, prefix, version)
    return switch


def remove_unfollowed_versions(client: RedisClient, prefix: str, live: str | None) -> None:
    """The keys of every version but the live one: what runs killed mid-publish left."""
    for version in sorted(versions_with_keys(client, prefix) - {live}):
        removed = delete_version(client, prefix, version)
        log.warning(
            "batch: removed %d keys of %s, a version readers do not follow", removed, version
        )
