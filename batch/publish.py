"""Publish top-N lists for every user to Redis, computed and written on the executors.

Item factors travel once per executor as a broadcast; each task scores a block of users with one
matrix product (model/scoring.py) and writes its lists through one Redis pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.model.scoring import top_n
from streamrec.model.store import ItemModel
from streamrec.redis_lists import LIST_ROWS, ListStamp
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import Config

FEATURES = "features"
SEEN = "seen"


def user_lists(
    spark: SparkSession,
    users: DataFrame,
    model: ItemModel,
    cfg: Config,
    stamp: ListStamp,
) -> DataFrame:
    """(key, payload, fence) per user from (user_id, features, seen)."""
    bc = spark.sparkContext.broadcast((model.item_ids, model.item_factors))
    n, prefix = cfg.batch.top_n, cfg.redis.key_prefix

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        item_ids, item_factors = bc.value
        for pdf in batches:
            if pdf.empty:
                continue
            vectors = np.vstack(pdf[FEATURES].to_numpy()).astype(np.float32)
            seen = [list(s) for s in pdf[SEEN]]
            best = top_n(vectors, item_factors, seen, n)
            payloads = [
                L.encode_list(
                    L.RecList(
                        items=tuple((item_ids[i], float(s)) for i, s in zip(idx, sc, strict=True)),
                        source=stamp.source,
                        model_version=stamp.model_version,
                        generated_ms=stamp.generated_ms,
                        watermark_ms=stamp.watermark_ms,
                    )
                )
                for idx, sc in best
            ]
            yield pd.DataFrame(
                {
                    "key": [L.user_list_key(prefix, u) for u in pdf[E.USER_ID]],
                    "payload": payloads,
                    "fence": stamp.watermark_ms,
                }
            )

    return users.mapInPandas(score, schema=LIST_ROWS)


def popular_items(ratings: DataFrame, n: int) -> list[tuple[str, float]]:
    """The n items with the most users who like them (positive rating), as (item, users)."""
    top = (
        ratings.where(F.col("rating") > 0)
        .groupBy(E.ITEM_ID)
        .agg(F.countDistinct(E.USER_ID).alias("users"))
        .orderBy(F.desc("users"), F.asc(E.ITEM_ID))
        .limit(n)
        .collect()
    )
    return [(r[E.ITEM_ID], float(r["users"])) for r in top]
