"""Deliberately malformed records, to exercise the dead-letter path of the streaming job.

Each kind corrupts a real event the way real producers break: truncated JSON, a wrong type,
a missing field, an unknown event type, a record too large, and a few more. All of them are
rejected by ``parse_event``, which a unit test proves kind by kind. Injection is seeded, so a
demo run replays the same corrupt records at the same places.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from streamrec.schemas.events import (
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    ITEM_ID,
    MAX_EVENT_BYTES,
    USER_ID,
    VALUE,
    encode_event,
)

T = TypeVar("T")


@dataclass(frozen=True)
class RawRecord:
    """Bytes sent as they are, past the producer's validation; ``kind`` says how they are bad."""

    key: bytes | None
    value: bytes
    kind: str


def _tagged(event: dict[str, Any], n: int) -> dict[str, Any]:
    # A distinct id, so a corrupt copy is never mistaken for its valid original.
    return {**event, EVENT_ID: f"{event[EVENT_ID]}:invalid:{n}"}


def _not_json(event: dict[str, Any]) -> bytes:
    data = encode_event(event)
    return data[: len(data) // 2]  # cut off mid-record, as by a crashed writer


def _not_utf8(event: dict[str, Any]) -> bytes:
    return b"\xff\xfe" + encode_event(event)


def _not_object(event: dict[str, Any]) -> bytes:
    return json.dumps(list(event.values())).encode("utf-8")


def _missing_field(event: dict[str, Any]) -> bytes:
    return encode_event({k: v for k, v in event.items() if k != USER_ID})


def _wrong_type(event: dict[str, Any]) -> bytes:
    return encode_event({**event, EVENT_TIME: "2024-01-01T00:00:00Z"})


def _unknown_event_type(event: dict[str, Any]) -> bytes:
    return encode_event({**event, EVENT_TYPE: "teleport"})


def _time_in_seconds(event: dict[str, Any]) -> bytes:
    return encode_event({**event, EVENT_TIME: int(event[EVENT_TIME]) // 1000})


def _negative_value(event: dict[str, Any]) -> bytes:
    return encode_event({**event, VALUE: -1.0})


def _unknown_field(event: dict[str, Any]) -> bytes:
    return encode_event({**event, "rating_v2": 5})


def _oversize(event: dict[str, Any]) -> bytes:
    return encode_event({**event, ITEM_ID: "x" * (MAX_EVENT_BYTES + 1024)})


MALFORMERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "not_json": _not_json,
    "not_utf8": _not_utf8,
    "not_object": _not_object,
    "missing_field": _missing_field,
    "wrong_type": _wrong_type,
    "unknown_event_type": _unknown_event_type,
    "time_in_seconds": _time_in_seconds,
    "negative_value": _negative_value,
    "unknown_field": _unknown_field,
    "oversize": _oversize,
}
KINDS = tuple(MALFORMERS)


def malformed(kind: str, event: dict[str, Any], n: int = 0) -> RawRecord:
    """The ``n``-th injected record: ``event`` corrupted in the way ``kind`` names."""
    value = MALFORMERS[kind](_tagged(event, n))
    key = str(event[USER_ID]).encode("utf-8") if USER_ID in event else None
    return RawRecord(key=key, value=value, kind=kind)


def with_invalid(records: Iterable[T], share: float, seed: int) -> Iterator[T | RawRecord]:
    """``records`` with malformed copies of their events slipped in, ``share`` of the output.

    Before each event (a dict; anything else passes through untouched) a corrupt record is
    inserted while a seeded draw falls below ``share``: a geometric number per event, so
    corrupt records make up ``share`` of all records on average and may come in runs.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"the share of invalid records must be within [0, 1), got {share}")
    rng = random.Random(f"streamrec.invalid:{seed}")
    n = 0
    for record in records:
        if isinstance(record, dict):
            while share and rng.random() < share:
                yield malformed(rng.choice(KINDS), record, n)
                n += 1
        yield record
