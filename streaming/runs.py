"""Which run of a checkpoint a micro-batch belongs to, so that a reset cannot destroy data.

Spark numbers micro-batches from 0 in each checkpoint. A deleted or moved checkpoint starts
again at 0, and the ids alone would then overwrite the event store's folders and make every
known user's next events look like replays to their state's fence. So the stream fences with
``run_epoch * BATCHES_PER_RUN + batch_id`` instead: the epoch is when the checkpoint's run
began (a file beside it, tied to the query id Spark keeps in the checkpoint), so a new run's
ids are larger than any earlier run's, and a restart from the same checkpoint keeps its ids.
"""

from __future__ import annotations

import json
import time

from streamrec import storage
from streamrec.schemas.config import Config

# Micro-batch ids a run can use before the next second's epoch: 31 years at 1 per second.
BATCHES_PER_RUN = 1_000_000_000


def _query_dir(cfg: Config, query: str) -> str:
    return storage.join(storage.absolute(cfg.paths.stream_checkpoint), query)


def spark_query_id(cfg: Config, query: str) -> str | None:
    """The query id Spark keeps in the checkpoint (None before the query first started)."""
    location = storage.join(_query_dir(cfg, query), "metadata")
    try:
        raw = storage.filesystem(location).read_bytes(location)
    except FileNotFoundError:
        return None
    first_line = raw.decode("utf-8").splitlines()[0]
    return str(json.loads(first_line)["id"])


def is_new_checkpoint(cfg: Config, query: str) -> bool:
    return spark_query_id(cfg, query) is None


def run_epoch(cfg: Config, query: str) -> int:
    """The epoch (seconds) of the checkpoint's current run; a new one when Spark's query id
    changed (the checkpoint was reset). Called once the query has started."""
    query_id = spark_query_id(cfg, query)
    if query_id is None:
        raise RuntimeError(f"no Spark checkpoint metadata for the {query} query yet")
    location = storage.join(storage.absolute(cfg.paths.stream_checkpoint), f"{query}.run.json")
    fs = storage.filesystem(location)
    try:
        known = json.loads(fs.read_bytes(location))
        if known.get("query_id") == query_id:
            return int(known["epoch_s"])
    except (FileNotFoundError, ValueError, KeyError):
        pass
    epoch = int(time.time())
    fs.write_bytes(location, json.dumps({"query_id": query_id, "epoch_s": epoch}).encode())
    return epoch


def fence_id(epoch_s: int, batch_id: int) -> int:
    """The id a micro-batch is fenced and stored under: later runs always have larger ones."""
    return epoch_s * BATCHES_PER_RUN + batch_id


def resume_offsets(
    stored_next: dict[int, int],
    bounds: dict[int, tuple[int, int]],
    default: str,
) -> dict[int, int]:
    """Where a new checkpoint's run starts in each partition of the events topic: right after
    the newest offset the event store holds (``stored_next``: partition -> that offset + 1), so
    a lost checkpoint neither skips the events sent while the stream was down nor stores any
    twice. ``bounds`` are each partition's (beginning, end) offsets now; a partition the store
    has never seen starts at ``default`` (Spark's -2 earliest, -1 latest), one whose stored
    offset is past the end (the topic was recreated) too, and one whose next offset the topic no
    longer retains at its beginning. Pure."""
    fallback = -2 if default == "earliest" else -1
    offsets = {}
    for partition, (beginning, end) in sorted(bounds.items()):
        resume = stored_next.get(partition)
        if resume is None or resume > end:
            offsets[partition] = fallback
        else:
            offsets[partition] = max(resume, beginning)
    return offsets
