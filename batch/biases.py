"""Baseline biases for explicit ratings: r̂ = μ + b_u + b_i + x_uᵀy_i.

ALS then fits the residual r - μ - b_u - b_i, which is what lets a factor model beat plain
ALS on star ratings (users rate on different scales, items differ in quality). The biases are
damped means (Koren 2008): b_i = Σ(r - μ) / (n_i + λ_i), b_u = Σ(r - μ - b_i) / (n_u + λ_u).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.batch.ids import ITEM_INDEX, USER_INDEX

ITEM_BIAS = "item_bias"
USER_BIAS = "user_bias"
DAMP_ITEM = 10.0
DAMP_USER = 5.0


@dataclass(frozen=True)
class Biases:
    mean: float
    users: DataFrame  # (user_index, user_bias)
    items: DataFrame  # (item_index, item_bias)

    def residuals(self, ratings: DataFrame, rating: str) -> DataFrame:
        """``ratings`` with ``rating`` replaced by what the biases leave unexplained."""
        return self.attach(ratings).withColumn(
            rating, F.col(rating) - F.lit(self.mean) - F.col(ITEM_BIAS) - F.col(USER_BIAS)
        )

    def attach(self, df: DataFrame) -> DataFrame:
        """Join the user and item biases (0 for ids the biases do not know)."""
        return (
            df.join(self.users, USER_INDEX, "left")
            .join(self.items, ITEM_INDEX, "left")
            .fillna(0.0, subset=[USER_BIAS, ITEM_BIAS])
        )


def fit_biases(ratings: DataFrame, rating: str) -> Biases:
    mean = float(ratings.agg(F.avg(rating)).collect()[0][0])
    items = (
        ratings.groupBy(ITEM_INDEX)
        .agg((F.sum(F.col(rating) - mean) / (F.count("*") + DAMP_ITEM)).alias(ITEM_BIAS))
        .cache()
    )
    users = (
        ratings.join(items, ITEM_INDEX)
        .groupBy(USER_INDEX)
        .agg(
            (F.sum(F.col(rating) - mean - F.col(ITEM_BIAS)) / (F.count("*") + DAMP_USER)).alias(
                USER_BIAS
            )
        )
        .cache()
    )
    return Biases(mean, users, items)
