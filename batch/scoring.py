"""Top-k items for many users at once, on the executors.

Item factors travel once per executor as a broadcast; each Arrow batch of users is scored with
one matrix product and a partial sort (model/scoring.py), training items removed. Spark's own
``recommendForAllUsers`` cross-joins blocks of users and items and sorts each block, slow on
few cores, and cannot remove seen items before cutting the list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from streamrec.model.ease import history_vectors
from streamrec.model.scoring import top_n
from streamrec.schemas import events as E

FEATURES = "features"
SEEN = "seen"
RATINGS = "ratings"
ITEMS = "items"
SCORES = "scores"

RANKED = T.StructType(
    [
        T.StructField(E.USER_ID, T.StringType(), False),
        T.StructField(ITEMS, T.ArrayType(T.StringType()), False),
        T.StructField(SCORES, T.ArrayType(T.DoubleType()), False),
    ]
)


def dense_item_factors(model: ALSModel, n_items: int, extra: int = 0) -> np.ndarray:
    """ALS item factors as a matrix indexed by ALS item id (0..n_items-1), with ``extra`` zero
    columns after the factors for callers that append per-item terms (e.g. a bias)."""
    factors = np.zeros((n_items, model.rank + extra), dtype=np.float32)
    for r in model.itemFactors.collect():
        factors[r.id, : model.rank] = r.features
    return factors


def rank_users(
    users: DataFrame, item_ids: Sequence[str], item_factors: np.ndarray, k: int
) -> DataFrame:
    """(user_id, items, scores) from (user_id, features, seen item indexes)."""
    bc = users.sparkSession.sparkContext.broadcast((list(item_ids), item_factors))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, factors = bc.value
        for pdf in batches:
            if pdf.empty:
                continue
            vectors = np.vstack(pdf[FEATURES].to_numpy()).astype(np.float32)
            seen = [[] if s is None else list(s) for s in pdf[SEEN]]
            best = top_n(vectors, factors, seen, k)
            yield pd.DataFrame(
                {
                    E.USER_ID: pdf[E.USER_ID].to_numpy(),
                    ITEMS: [[ids[i] for i in idx] for idx, _ in best],
                    SCORES: [sc.astype(float).tolist() for _, sc in best],
                }
            )

    return users.mapInPandas(score, schema=RANKED)


def rank_histories(
    users: DataFrame, item_ids: Sequence[str], item_matrix: np.ndarray, k: int, binary: bool
) -> DataFrame:
    """(user_id, items, scores) from (user_id, seen item positions, their ratings) under an
    EASE version: each user's feedback row times the item-item matrix (model/ease.py), as the
    stream scores them."""
    bc = users.sparkSession.sparkContext.broadcast((list(item_ids), item_matrix))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, matrix = bc.value
        for pdf in batches:
            if pdf.empty:
                continue
            histories = [
                (np.asarray(seen, dtype=np.int64), np.asarray(ratings, dtype=np.float64))
                for seen, ratings in zip(pdf[SEEN], pdf[RATINGS], strict=True)
            ]
            vectors = history_vectors(histories, len(ids), binary)
            personal = [(row, vector) for row, vector in enumerate(vectors) if vector is not None]
            if not personal:
                continue
            rows = [row for row, _ in personal]
            stacked = np.stack([vector for _, vector in personal])
            best = top_n(stacked, matrix, [histories[row][0].tolist() for row in rows], k)
            yield pd.DataFrame(
                {
                    E.USER_ID: pdf[E.USER_ID].to_numpy()[rows],
                    ITEMS: [[ids[i] for i in idx] for idx, _ in best],
                    SCORES: [sc.astype(float).tolist() for _, sc in best],
                }
            )

    return users.mapInPandas(score, schema=RANKED)
