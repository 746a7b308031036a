"""The event store's layout: the Parquet folders the streaming job writes and the batch job (and
`streamrec state rebuild`, and `evaluate --event-store`) read.

    <paths.event_store>/batch_id=<micro-batch id>/part-*.parquet

Columns: the event contract's fields (schemas/event.schema.json), and where each event came from
in Kafka, ``source_partition`` (int) and ``source_offset`` (long): a new stream checkpoint
resumes each partition after the newest offset stored. ``batch_id`` is the partition column;
the streaming job writes one folder per micro-batch whole (streaming/event_store.py).
"""

from __future__ import annotations

BATCH_ID = "batch_id"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
# Every data file of the store, relative to its root.
DATA_FILES = f"{BATCH_ID}=*/*.parquet"


def batch_folder_name(batch_id: int) -> str:
    """The folder of one micro-batch's events, under the store's root."""
    return f"{BATCH_ID}={batch_id}"
