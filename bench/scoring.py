"""`streamrec bench scoring`: top-k for every user at catalogue scale, the publishing path.

Random factors (scoring cost does not depend on how they were trained) for U users x I items at
rank R, each user with S already-seen items to leave out. Timed in the same run:
- streamrec: ``rank_users`` (Arrow batches of users scored with BLAS on the executors);
- the `implicit` library: ``recommend`` for all users at once (BLAS + its C++ top-k), the
  fastest single-machine baseline.
Reported as the ratio streamrec / implicit; the aim for publishing is 3x or less.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from streamrec.batch.scoring import FEATURES, SEEN, rank_users
from streamrec.schemas import events as E


def run_scoring(
    spark: SparkSession, users: int, items: int, rank: int, seen: int, k: int, seed: int = 1
) -> dict[str, Any]:
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(seed)
    user_f = rng.normal(size=(users, rank)).astype(np.float32)
    item_f = rng.normal(size=(items, rank)).astype(np.float32)
    seen_idx = rng.integers(0, items, size=(users, seen))
    item_ids = [f"i{i}" for i in range(items)]

    schema = T.StructType(
        [
            T.StructField(E.USER_ID, T.StringType()),
            T.StructField(FEATURES, T.ArrayType(T.FloatType())),
            T.StructField(SEEN, T.ArrayType(T.IntegerType())),
        ]
    )
    rows = [(f"u{u}", user_f[u].tolist(), seen_idx[u].tolist()) for u in range(users)]
    df = spark.createDataFrame(rows, schema).repartition(spark.sparkContext.defaultParallelism)
    df = df.cache()
    df.count()
    rank_users(df.limit(100), item_ids, item_f, k).count()  # start the Python workers
    t = time.monotonic()
    scored = rank_users(df, item_ids, item_f, k).count()
    ours_s = time.monotonic() - t
    df.unpersist()

    liked = sp.csr_matrix(
        (
            np.ones(users * seen, dtype=np.float32),
            (np.repeat(np.arange(users), seen), seen_idx.ravel()),
        ),
        shape=(users, items),
    )
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=rank, random_state=seed)
        model.user_factors, model.item_factors = user_f, item_f
        ids = np.arange(users)
        t = time.monotonic()
        model.recommend(ids, liked[ids], N=k, filter_already_liked_items=True)
        implicit_s = time.monotonic() - t
    return {
        "users": users,
        "items": items,
        "rank": rank,
        "seen_per_user": seen,
        "k": k,
        "users_scored": scored,
        "streamrec_topk_s": ours_s,
        "implicit_topk_s": implicit_s,
        "ratio_vs_implicit": ours_s / implicit_s,
        "streamrec_users_per_s": users / ours_s,
    }
