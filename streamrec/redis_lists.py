"""Writing recommendation lists to Redis: connect fast-failing, and write many lists in one
pipeline through the fenced Lua script of the layout (schemas/redis_layout.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from pyspark.sql import DataFrame, Row
from pyspark.sql import types as T

from streamrec.errors import ServiceUnavailable
from streamrec.schemas.config import Config, RedisConfig
from streamrec.schemas.redis_layout import FENCED_WRITE_LUA


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client that has answered PING, or ServiceUnavailable saying how to start Redis."""
    client = redis.Redis(
        host=cfg.host,
        port=cfg.port,
        db=cfg.db,
        password=cfg.password or None,
        socket_timeout=10,
        socket_connect_timeout=5,
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(
            f"Redis at {cfg.host}:{cfg.port} does not answer ({exc.__class__.__name__}: {exc}). "
            "Start the local stack with `streamrec stack up`, or fix redis.host/redis.port in "
            "the config file."
        ) from exc
    return client


def write_lists(
    client: redis.Redis,
    rows: Iterable[tuple[str, bytes, int]],
    ttl_seconds: int,
    chunk: int = 500,
) -> tuple[int, int]:
    """Write (key, encoded list, fence) rows; returns (written, kept because newer)."""
    script = client.register_script(FENCED_WRITE_LUA)
    written = kept = 0
    pipe = client.pipeline(transaction=False)
    pending = 0

    def flush() -> None:
        nonlocal written, kept, pending
        for result in pipe.execute():
            if int(result) == 1:
                written += 1
            else:
                kept += 1
        pending = 0

    for key, encoded, fence in rows:
        script(keys=[key], args=[encoded, int(fence), int(ttl_seconds)], client=pipe)
        pending += 1
        if pending >= chunk:
            flush()
    if pending:
        flush()
    return written, kept


# The rows both jobs produce for Redis: the list's key, its encoded value and its fence.
LIST_ROWS = T.StructType(
    [
        T.StructField("key", T.StringType(), False),
        T.StructField("payload", T.BinaryType(), False),
        T.StructField("fence", T.LongType(), False),
    ]
)


@dataclass(frozen=True)
class ListStamp:
    """What every list of one publish carries besides its items."""

    source: str
    model_version: str
    generated_ms: int
    watermark_ms: int


def write_list_rows(rows: DataFrame, cfg: Config) -> tuple[int, int]:
    """Write LIST_ROWS from the executors, one pipeline per partition; (written, kept) totals."""
    redis_cfg, ttl = cfg.redis, cfg.lists.ttl_seconds
    sc = rows.sparkSession.sparkContext
    written_acc, kept_acc = sc.accumulator(0), sc.accumulator(0)

    def write_partition(it: Iterator[Row]) -> None:
        client = connect(redis_cfg)
        try:
            w, k = write_lists(client, ((r.key, r.payload, r.fence) for r in it), ttl)
        finally:
            client.close()
        written_acc.add(w)
        kept_acc.add(k)

    rows.foreachPartition(write_partition)
    return written_acc.value, kept_acc.value
