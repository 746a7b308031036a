"""The batch job's models: implicit-feedback ALS with Spark ML, and EASE on the driver."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

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
    return als.fit(ratings)


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
