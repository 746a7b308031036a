"""Valid events -> the Parquet event store, exactly once.

Each micro-batch writes the folder ``batch_id=<id>`` whole, replacing what was there: Spark
replays a failed batch with the same offsets, so a replay rewrites the same events instead of
appending them twice. The stream's ids carry its checkpoint's run (streaming/runs.py), so a
reset checkpoint writes new folders instead of overwriting old ones. Readers see ``batch_id`` as
a partition column; Spark ignores the ``_temporary`` folders a crash leaves behind.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from streamrec import storage
from streamrec.schemas import events as E
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION, batch_folder_name
from streamrec.streaming.parse import REASON


def valid_events(parsed: DataFrame) -> DataFrame:
    """The valid rows, with their event fields and the Kafka coordinates they came from."""
    return parsed.where(F.col(REASON).isNull()).select(
        *E.event_contract().field_names,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
    )


def write_batch(events: DataFrame, store_path: str, batch_id: int) -> None:
    events.write.mode("overwrite").parquet(storage.join(store_path, batch_folder_name(batch_id)))
