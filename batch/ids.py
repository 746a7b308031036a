"""String ids -> the dense integer ids Spark's ALS needs (0..n-1, in id order)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

USER_INDEX = "user_index"
ITEM_INDEX = "item_index"


def index_ids(df: DataFrame, id_col: str, index_col: str) -> DataFrame:
    """(id, index) for the distinct ids of ``df[id_col]``, computed distributed (a sort and
    ``zipWithIndex``, no single-partition window). Spark's ALS takes 32-bit ints."""
    ordered = df.select(id_col).distinct().orderBy(id_col)
    schema = T.StructType(
        [
            T.StructField(id_col, T.StringType(), False),
            T.StructField(index_col, T.IntegerType(), False),
        ]
    )
    indexed = ordered.rdd.zipWithIndex().map(lambda pair: (pair[0][0], int(pair[1])))
    return df.sparkSession.createDataFrame(indexed, schema)
