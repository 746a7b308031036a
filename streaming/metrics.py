"""Per-micro-batch metrics of the streaming job: logged, and kept in Redis for operators and
benchmarks.

Every micro-batch of either query adds one entry to the Redis stream ``P:stats:stream``
(``schemas.redis_layout.stream_metrics_key``; XADD, trimmed to about ``streaming.metrics_kept``
entries), with the fields of ``BatchMetrics.fields``. The newest ten:

    redis-cli XREVRANGE <prefix>:stats:stream + - COUNT 10
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import redis

from streamrec.redis_lists import RedisClient
from streamrec.schemas import redis_layout as L

log = logging.getLogger(__name__)

LISTS, ARCHIVE = "lists", "archive"


@dataclass
class BatchMetrics:
    query: str  # LISTS (state, lists, segments) or ARCHIVE (event store, dead letters)
    batch_id: int
    valid: int
    invalid: int
    duration_s: float
    # Records of this micro-batch per second since the previous one of the same query started:
    # the rate at which events arrive; ``processed_rps`` is the rate at which they were handled.
    input_rps: float
    users: int = 0
    lists_written: int = 0
    lists_kept: int = 0
    model_version: str | None = None
    # Event time -> the user's list written in Redis: p50/p95/p99 in ms (lists query only).
    lag_ms: dict[str, float] = field(default_factory=dict)
    # Seconds per step of the micro-batch.
    steps_s: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.valid + self.invalid

    @property
    def processed_rps(self) -> float:
        return self.rows / self.duration_s if self.duration_s > 0 else 0.0

    def fields(self) -> dict[str, str]:
        """The Redis stream entry: flat strings, readable from any language."""
        values: dict[str, object] = {
            "query": self.query,
            "batch": self.batch_id,
            "valid": self.valid,
            "invalid": self.invalid,
            "users": self.users,
            "lists_written": self.lists_written,
            "lists_kept": self.lists_kept,
            "model": self.model_version or "",
            "duration_ms": round(self.duration_s * 1000, 1),
            "input_rps": round(self.input_rps, 1),
            "processed_rps": round(self.processed_rps, 1),
            **{f"lag_{name}": round(value, 1) for name, value in self.lag_ms.items()},
            "steps_ms": json.dumps({k: round(v * 1000, 1) for k, v in self.steps_s.items()}),
        }
        return {key: str(value) for key, value in values.items()}

    def summary(self) -> str:
        lag = ", ".join(f"{k} {v:.0f}" for k, v in self.lag_ms.items())
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in self.steps_s.items())
        if self.query == ARCHIVE:
            return (
                f"stream archive batch {self.batch_id}: {self.valid} events stored, "
                f"{self.invalid} dead-lettered, {self.duration_s:.2f}s ({steps})"
            )
        return (
            f"stream batch {self.batch_id}: {self.rows} records ({self.invalid} invalid), "
            f"{self.users} users, {self.lists_written} lists written, {self.lists_kept} kept "
            f"(newer), model {self.model_version}, {self.duration_s:.2f}s ({steps}), "
            f"{self.input_rps:.0f} in/s, {self.processed_rps:.0f} processed/s"
            + (f", event -> Redis ms: {lag}" if lag else "")
        )


def lag_percentiles(lags_ms: Sequence[int] | np.ndarray) -> dict[str, float]:
    if len(lags_ms) == 0:
        return {}
    values = np.percentile(np.asarray(lags_ms, dtype=np.float64), [50, 95, 99])
    return {f"p{q}_ms": float(v) for q, v in zip((50, 95, 99), values, strict=True)}


def record(client: RedisClient, prefix: str, keep: int, metrics: BatchMetrics) -> None:
    """Log the micro-batch and add it to the metrics stream in Redis. Metrics are not worth a
    failed micro-batch: a Redis error here is logged, and the next batch tries again."""
    log.info("%s", metrics.summary())
    try:
        client.xadd(
            L.stream_metrics_key(prefix),
            metrics.fields(),  # type: ignore[arg-type]
            maxlen=keep,
            approximate=True,
        )
    except redis.RedisError as exc:
        log.warning("stream metrics not kept in Redis: %s", exc)
