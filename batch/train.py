"""The batch job's models: implicit-feedback ALS with Spark ML, and EASE on the driver."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from py4j.protocol import Py4JJavaError
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.interactions import RATING
from streamrec.errors import InputError
from streamrec.model.ease import fit_ease, gram_matrix
from streamrec.schemas import events as E
from streamrec.schemas.config import BatchConfig


def train_als(ratings: DataFrame, cfg: BatchConfig, parallelism: int) -> ALSModel:
    """Implicit ALS by default; ``cfg.implicit = False`` fits explicit ratings (MovieLens)."""
    als = ALS(
        rank=cfg.rank,
        maxIter=cfg.max_iter,
        regParam=cfg.reg_param,
        alpha=cfg.alpha,
        implicitPrefs=cfg.implicit,
        userCol=USER_INDEX,
        itemCol=ITEM_INDEX,
        ratingCol=RATING,
        seed=cfg.seed,
        # Blocks follow the parallelism: the default 10 blocks is slow on few cores.
        numUserBlocks=parallelism,
        numItemBlocks=parallelism,
        checkpointInterval=5,
        coldStartStrategy="drop",
    )
    try:
        return als.fit(ratings)
    except Py4JJavaError as exc:
        if "SingularMatrixException" not in str(exc):
            raise
        raise InputError(too_small_message(ratings, cfg)) from None


def too_small_message(ratings: DataFrame, cfg: BatchConfig) -> str:
    """Why ALS found no solution: the data is too small for the rank. A user (or item) with no
    positive feedback, only skips say, is solved without regularisation, which needs at least
    ``rank`` items (users) to be determined."""
    counts = ratings.agg(
        F.countDistinct(USER_INDEX).alias("users"),
        F.countDistinct(ITEM_INDEX).alias("items"),
        F.countDistinct(F.when(F.col(RATING) > 0, F.col(USER_INDEX))).alias("positive_users"),
        F.countDistinct(F.when(F.col(RATING) > 0, F.col(ITEM_INDEX))).alias("positive_items"),
    ).collect()[0]
    return (
        f"too little data to train ALS at rank {cfg.rank}: {counts['users']} users and "
        f"{counts['items']} items, of which {counts['positive_users']} users and "
        f"{counts['positive_items']} items have positive feedback. Users or items with none "
        f"(only skips, say) need at least rank ({cfg.rank}) of the other side. Collect more "
        "events, or lower batch.rank (and batch.tune_ranks)."
    )


def train_ease(ratings: DataFrame, item_ids: Sequence[str], cfg: BatchConfig) -> np.ndarray:
    """EASE's item-item matrix (model/ease.py) over ``item_ids`` in their order, from the
    ratings (user index, item id, rating) of those items; fitted on the driver, whose memory
    holds the items x items matrix a few times over (``batch.ease_max_items`` bounds it)."""
    if len(item_ids) > cfg.ease_max_items:
        raise InputError(
            f"EASE over {len(item_ids)} items exceeds batch.ease_max_items "
            f"({cfg.ease_max_items}): use batch.family: als, or raise the cap if the driver "
            "has the memory for an items x items matrix"
        )
    position = pd.Series(np.arange(len(item_ids)), index=list(item_ids))
    rows: pd.DataFrame = ratings.select(USER_INDEX, E.ITEM_ID, RATING).toPandas()
    rows = rows.assign(at=rows[E.ITEM_ID].map(position)).dropna(subset=["at"])
    gram = gram_matrix(
        rows[USER_INDEX].to_numpy(dtype=np.int64),
        rows["at"].to_numpy(dtype=np.int64),
        rows[RATING].to_numpy(dtype=np.float64),
        len(item_ids),
        cfg.ease_binary,
    )
    return fit_ease(gram, cfg.ease_l2)
