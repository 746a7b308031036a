"""What the operator page shows, shaped for its charts: the stream's metrics downsampled to a
bounded number of points, whether the stream keeps up, a user's streaming state in brief, and
the newest dead letters (a bounded read of the dead-letter topic, cached briefly).

The metrics series are columnar (one array per field, one element per point) so that the page
and scripts plot them without reshaping. A point is one micro-batch while the window holds no
more micro-batches than points asked for, else ``step`` consecutive micro-batches of the same
query merged: lags and durations by their maximum (the worst in the point), rates by their
mean, counts by their sum.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from streamrec.model.user_state import UserState
from streamrec.redis_lists import decoded
from streamrec.schemas.config import KafkaConfig
from streamrec.streaming.metrics import ARCHIVE, LISTS

log = logging.getLogger(__name__)

Entry = tuple[bytes | str, dict[bytes | str, bytes | str]]  # XRANGE's (id, fields)

LAGS = ("lag_p50_ms", "lag_p95_ms", "lag_p99_ms")
RATES = ("input_rps", "processed_rps", "dead_letters_per_s")
SUMS = ("valid", "invalid", "users", "lists_written", "lists_kept")
# Utilisation (input rate over processed rate: the share of time the query is busy) from which
# the stream is called saturated: it has no slack left for a burst.
SATURATED = 0.9
# How many of the newest micro-batches decide whether the stream keeps up.
RECENT = 5
_KEYS = {
    name: name.encode()
    for name in (
        "query",
        "model",
        "batch",
        "duration_ms",
        "input_rps",
        "processed_rps",
        *SUMS,
        *LAGS,
    )
}


def entry_time_ms(entry_id: bytes | str) -> int:
    """The time of a stream entry: the milliseconds part of its id (Redis's clock at XADD)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def parse_entry(entry: Entry) -> dict[str, Any]:
    """One metrics entry as numbers (strings for ``query`` and ``model``; absent lag fields,
    as in a micro-batch that wrote no list, are None). Only the fields shown are read, as the
    bytes they arrive in: a poll parses up to 10,000 entries. Pure."""
    fields = entry[1]

    def raw(name: str) -> bytes | str | None:
        value = fields.get(_KEYS[name])
        return fields.get(name) if value is None else value

    row: dict[str, Any] = {
        "t_ms": entry_time_ms(entry[0]),
        "query": decoded(raw("query")) or "",
        "model": decoded(raw("model")) or "",
        "batch": _int(raw("batch")),
        "duration_ms": _float(raw("duration_ms")),
        "input_rps": _float(raw("input_rps")),
        "processed_rps": _float(raw("processed_rps")),
    }
    for name in SUMS:
        row[name] = _int(raw(name)) or 0
    for name in LAGS:
        row[name] = _float(raw(name))
    rows = row["valid"] + row["invalid"]
    # Records arrive at input_rps; the invalid share of them is what the dead letters get.
    rate = row["input_rps"]
    row["dead_letters_per_s"] = None if rate is None or rows == 0 else rate * row["invalid"] / rows
    return row


def _int(text: bytes | str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _float(text: bytes | str | None) -> float | None:
    try:
        return None if not text else float(text)
    except ValueError:
        return None


def _merge(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One point from consecutive micro-batches of one query, oldest first."""

    def present(name: str) -> list[float]:
        return [r[name] for r in rows if r[name] is not None]

    point: dict[str, Any] = {
        "t_ms": rows[-1]["t_ms"],
        "batch_first": rows[0]["batch"],
        "batch_last": rows[-1]["batch"],
        "batches": len(rows),
    }
    for name in (*LAGS, "duration_ms"):
        values = present(name)
        point[name] = max(values) if values else None
    for name in RATES:
        values = present(name)
        point[name] = round(sum(values) / len(values), 3) if values else None
    for name in SUMS:
        point[name] = sum(r[name] for r in rows)
    return point


def downsample(rows: Sequence[dict[str, Any]], points: int) -> dict[str, list[Any]]:
    """At most ``points`` points from ``rows`` (one query, oldest first), as columns. Pure."""
    step = max(1, -(-len(rows) // points))
    merged = [_merge(rows[i : i + step]) for i in range(0, len(rows), step)]
    names = ["t_ms", "batch_first", "batch_last", "batches", *LAGS, "duration_ms", *RATES, *SUMS]
    return {name: [p[name] for p in merged] for name in names} | {"step": [step]}


def keeping_up(rows: Sequence[dict[str, Any]], max_records: int) -> dict[str, Any]:
    """Whether the lists query keeps up, from its newest micro-batches (oldest first): it is
    behind when its newest micro-batch was capped at ``streaming.max_offsets_per_trigger`` (a
    backlog is waiting), saturated when busy ``SATURATED`` of the time or more. Pure."""
    recent = list(rows[-RECENT:])
    if not recent:
        return {"status": "unknown", "utilisation": None, "reason": "no micro-batch yet"}
    newest = recent[-1]
    taken = newest["valid"] + newest["invalid"]
    ins = [r["input_rps"] for r in recent if r["input_rps"] is not None]
    done = [r["processed_rps"] for r in recent if r["processed_rps"]]
    utilisation = round(sum(ins) / sum(done), 3) if ins and done else None
    if taken >= max_records:
        status, reason = "behind", f"micro-batch {newest['batch']} took the most it may"
        reason += f" ({max_records} records): more are waiting in Kafka"
    elif utilisation is not None and utilisation >= SATURATED:
        status = "saturated"
        reason = f"busy {utilisation:.0%} of the time over the newest {len(recent)} micro-batches"
    else:
        status = "keeping up"
        share = "n/a" if utilisation is None else f"{utilisation:.0%}"
        reason = f"busy {share} of the time; micro-batches below their cap"
    return {"status": status, "utilisation": utilisation, "reason": reason}


def stream_series(
    entries: Sequence[Entry], newest: Sequence[Entry], points: int, max_records: int
) -> dict[str, Any]:
    """The page's stream panel from ``entries`` (newest first, as XREVRANGE returns them) and
    the stream's ``newest`` entry (whatever its age). Pure."""
    rows = [parse_entry(e) for e in reversed(entries)]
    by_query = {q: [r for r in rows if r["query"] == q] for q in (LISTS, ARCHIVE)}
    latest = parse_entry(newest[0]) if newest else None
    return {
        "points": points,
        "entries": len(rows),
        "from_ms": rows[0]["t_ms"] if rows else None,
        "to_ms": rows[-1]["t_ms"] if rows else None,
        "newest": latest,
        "lists": downsample(by_query[LISTS], points),
        "archive": downsample(by_query[ARCHIVE], points),
        "keeping_up": keeping_up(by_query[LISTS], max_records),
    }


def state_summary(state: UserState, items: int = 20) -> dict[str, Any]:
    """A user's streaming state in brief: counts, newest event time and ids, and the items they
    weigh most (weights decayed to ``ref_ms``). Pure."""
    heaviest = sorted(state.weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:items]
    return {
        "events": state.events,
        "types": state.types,
        "last_event_ms": state.last_ms,
        "micro_batch": state.batch,
        "items": len(state.weights),
        "top_items": [{"item_id": item, "weight": round(w, 6)} for item, w in heaviest],
        "newest_event_ids": list(state.ids[-items:])[::-1],
    }


@dataclass
class DeadLetterReader:
    """The newest dead letters of a topic: at most ``per_partition`` records from the end of
    each partition, read with kafka-python and kept ``ttl_s`` seconds, so a page polling
    every few seconds costs Kafka one bounded read per ``ttl_s``, whoever asks."""

    kafka: KafkaConfig
    per_partition: int = 20
    ttl_s: float = 10.0
    timeout_s: float = 3.0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict[str, Any]]] | None = None

    def newest(self) -> list[dict[str, Any]]:
        """Newest first. Blocking: call it in a worker thread."""
        with self._lock:
            if self._cached is None or self.clock() - self._cached[0] >= self.ttl_s:
                self._cached = (self.clock(), self._read())
            return self._cached[1]

    def _read(self) -> list[dict[str, Any]]:
        from kafka import KafkaConsumer, TopicPartition

        from streamrec.kafka_topics import client_options

        consumer = KafkaConsumer(
            **client_options(self.kafka),
            bootstrap_servers=self.kafka.bootstrap_servers.split(","),
            client_id="streamrec-console",
            enable_auto_commit=False,
            request_timeout_ms=int(self.timeout_s * 1000) + 1000,
        )
        try:
            topic = self.kafka.dead_letter_topic
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not parts:
                return []
            consumer.assign(parts)
            start, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
            for tp in parts:
                consumer.seek(tp, max(start[tp], end[tp] - self.per_partition))
            records: list[Any] = []
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline and any(
                consumer.position(tp) < end[tp] for tp in parts
            ):
                for batch in consumer.poll(timeout_ms=200).values():
                    records.extend(
                        r for r in batch if r.offset < end[TopicPartition(r.topic, r.partition)]
                    )
        finally:
            consumer.close()
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
        return [dead_letter(r) for r in records[: self.per_partition]]


def dead_letter(record: Any) -> dict[str, Any]:
    """What the page shows of one dead-letter record (kafka-python's ConsumerRecord): when, why,
    where from, and the first bytes of the original value."""
    from streamrec.streaming import dead_letter as D

    headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}
    value = record.value or b""
    return {
        "time_ms": record.timestamp,
        "reason": headers.get(D.H_REASON, ""),
        "source": f"{headers.get(D.H_TOPIC, '?')}/{headers.get(D.H_PARTITION, '?')}/"
        f"{headers.get(D.H_OFFSET, '?')}",
        "value_bytes": int(headers.get(D.H_VALUE_BYTES, len(value))),
        "truncated": headers.get(D.H_TRUNCATED) == "true",
        "value_preview": value[:160].decode("utf-8", "replace"),
    }
