"""Ratings or interactions files -> (user_id, item_id, rating, event_time) DataFrames, for
evaluation and offline training. Ids stay strings; times are milliseconds (or null)."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from streamrec.batch.interactions import RATING, to_interactions
from streamrec.errors import InputError
from streamrec.schemas import events as E
from streamrec.schemas.config import FeedbackConfig

FORMATS = ("movielens", "delimited")
# The event type a file's rows stand for unless told otherwise: MovieLens rates, other files
# count plays (hours, listens).
DEFAULT_EVENT_TYPES = {"movielens": "rating", "delimited": "play"}


def read_ratings(
    spark: SparkSession, path: str, fmt: str = "movielens", sep: str = ",", header: bool = False
) -> DataFrame:
    """MovieLens ``u.data``-style files (tab: user item rating unix-seconds), or a delimited file
    of user, item, weight[, timestamp in seconds or milliseconds]. Lines that do not parse make
    the read fail with the file named, rather than silently shrink the data."""
    if fmt not in FORMATS:
        raise InputError(f"unknown ratings format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not Path(path).exists():
        raise InputError(f"ratings file {path} does not exist")
    if fmt == "movielens":
        sep, header = "\t", False
    raw = spark.read.option("sep", sep).option("header", str(header).lower()).csv(path)
    cols = raw.columns
    if len(cols) < 3:
        raise InputError(f"{path}: expected user, item, rating[, time] columns, got {len(cols)}")
    ts = F.col(cols[3]).cast("double") if len(cols) > 3 else F.lit(None).cast("double")
    df = raw.select(
        F.trim(F.col(cols[0])).alias(E.USER_ID),
        F.trim(F.col(cols[1])).alias(E.ITEM_ID),
        F.col(cols[2]).cast("double").alias(RATING),
        # seconds below 1e11 (before the year 5138), milliseconds above
        F.when(ts < 1e11, ts * 1000).otherwise(ts).cast("long").alias(E.EVENT_TIME),
    )
    bad = df.where(F.col(E.USER_ID).isNull() | F.col(E.ITEM_ID).isNull() | F.col(RATING).isNull())
    n_bad = bad.count()
    if n_bad:
        example = bad.limit(1).collect()[0]
        raise InputError(
            f"{path}: {n_bad} line(s) without a user, item and numeric rating, "
            f"e.g. {example.asDict()}"
        )
    return df


def file_interactions(ratings: DataFrame, event_type: str, feedback: FeedbackConfig) -> DataFrame:
    """A file's rows as the batch job would see them: each row an event of ``event_type`` whose
    value is the row's number, turned into one confidence per (user, item) by the job's own
    transform (type weight, value scaling, decay against the file's newest time). Rows without
    a time count as of that newest time."""
    if event_type not in E.event_contract().event_types:
        raise InputError(
            f"unknown event type {event_type!r}: use one of "
            f"{', '.join(E.event_contract().event_types)}"
        )
    newest = ratings.agg(F.max(E.EVENT_TIME)).collect()[0][0]
    reference = None if newest is None else int(newest)
    time = F.col(E.EVENT_TIME) if reference is None else F.coalesce(E.EVENT_TIME, F.lit(reference))
    events = ratings.select(
        E.USER_ID,
        E.ITEM_ID,
        F.lit(event_type).alias(E.EVENT_TYPE),
        time.cast("long").alias(E.EVENT_TIME),
        F.col(RATING).alias(E.VALUE),
    )
    return to_interactions(events, feedback, reference)
