"""Implicit-feedback ALS with Spark ML."""

from __future__ import annotations

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX
from streamrec.batch.interactions import RATING
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
    return als.fit(ratings)
