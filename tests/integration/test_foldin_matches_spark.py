"""Folding a user in from their full history gives Spark ALS's own vector for that user."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from streamrec.model.foldin import fold_in

pytestmark = pytest.mark.integration


def test_fold_in_reproduces_spark_user_factors(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for u in range(60):
        group = u % 3  # three planted tastes over 45 items
        for i in rng.choice(15, size=6, replace=False):
            rows.append((u, int(group * 15 + i), float(rng.integers(1, 6))))
        rows.append((u, int(rng.integers(45)), -1.0))  # some negative feedback
    df = spark.createDataFrame(rows, "user int, item int, rating double")
    reg, alpha = 0.1, 5.0
    als = ALS(
        rank=6,
        maxIter=15,
        regParam=reg,
        alpha=alpha,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="rating",
        seed=1,
        numUserBlocks=2,
        numItemBlocks=2,
    )
    model = als.fit(df)
    item_rows = sorted(model.itemFactors.collect(), key=lambda r: r.id)
    item_ids = [r.id for r in item_rows]
    y = np.zeros((max(item_ids) + 1, 6))
    for r in item_rows:
        y[r.id] = r.features
    users = {r.id: np.array(r.features) for r in model.userFactors.collect()}
    for u in (0, 1, 2, 17, 59):
        hist = [(i, r) for uu, i, r in rows if uu == u]
        idx = np.array([i for i, _ in hist])
        x = fold_in(y, y.T @ y, idx, np.array([r for _, r in hist]), reg, alpha)
        assert x is not None
        cosine = float(x @ users[u] / (np.linalg.norm(x) * np.linalg.norm(users[u])))
        assert cosine >= 0.99, (u, cosine)
        # and the same top-10 among items the user has not rated
        seen = set(idx.tolist())
        rank_f = [i for i in np.argsort(-(y @ x)) if i not in seen][:10]
        rank_s = [i for i in np.argsort(-(y @ users[u])) if i not in seen][:10]
        assert rank_f == rank_s
