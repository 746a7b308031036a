"""Events -> one implicit rating per (user, item). Pure DataFrame -> DataFrame transforms."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec.model.feedback import event_weight_column
from streamrec.schemas import events as E
from streamrec.schemas.config import FeedbackConfig

RATING = "rating"


def dedupe_events(events: DataFrame) -> DataFrame:
    """Each event_id counts once, whatever replays or producer retries did."""
    return events.dropDuplicates([E.EVENT_ID])


def to_interactions(
    events: DataFrame, feedback: FeedbackConfig, reference_ms: int | None = None
) -> DataFrame:
    """(user_id, item_id, rating): the sum of the user's event weights on the item, decayed by
    age relative to ``reference_ms`` (the data cut) when the config asks for decay."""
    weight = event_weight_column(feedback, E.EVENT_TYPE, E.VALUE, E.EVENT_TIME, reference_ms)
    return (
        events.withColumn("_w", weight)
        .groupBy(E.USER_ID, E.ITEM_ID)
        .agg(F.sum("_w").alias(RATING))
        .where(F.col(RATING) != 0)
    )
