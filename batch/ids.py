"""String ids -> the dense integer ids Spark's ALS needs (0..n-1, in id order)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
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


# Spark's ALS takes 32-bit ids.
MAX_INDEX = 2**31 - 1


def extend_index(
    previous: DataFrame | None, df: DataFrame, id_col: str, index_col: str
) -> DataFrame:
    """The previous model's (id, index) map, extended append-only with the ids of ``df`` it does
    not hold yet: an id keeps its index across retrains, and a new id never takes an old one's.
    Ids that left the data keep their entry (a map only grows)."""
    if previous is None:
        return index_ids(df, id_col, index_col)
    new_ids = df.select(id_col).distinct().join(previous, id_col, "left_anti")
    top = previous.agg(F.max(index_col)).collect()[0][0]
    offset = -1 if top is None else int(top)
    added = index_ids(new_ids, id_col, index_col).withColumn(
        index_col, (F.col(index_col) + F.lit(offset + 1)).cast("int")
    )
    return previous.select(id_col, index_col).unionByName(added)


def check_index_range(mapping: DataFrame, index_col: str, what: str) -> int:
    """The largest index; raises when the map outgrew Spark ALS's 32-bit ids."""
    top = mapping.agg(F.max(F.col(index_col).cast("long"))).collect()[0][0]
    if top is not None and int(top) > MAX_INDEX:
        raise ValueError(f"{what} id map reached index {top}, beyond ALS's 32-bit ids")
    return -1 if top is None else int(top)
