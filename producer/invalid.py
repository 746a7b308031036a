"""Deliberately malformed records, to exercise the dead-letter path of the streaming job.

Each kind corrupts a real event the way real producers break (truncated JSON, a wrong type,
a missing field, an unknown event type, a record too large) or the way an attacker would
(nesting thousands deep, a 400-digit integer, a record at Kafka's 1 MB limit). All of them
are rejected by ``parse_event``, which a unit test proves kind by kind. Injection is seeded, so
a demo run replays the same corrupt records at the same places.
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
    value: bytes | None  # None: a tombstone
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


# Just under what a default Kafka broker and client accept (1 MiB with the record's overhead):
# too large to go on to the dead-letter topic whole.
GIANT_RECORD_BYTES = 1_048_400


def _giant(event: dict[str, Any]) -> bytes:
    data = encode_event({**event, ITEM_ID: ""})
    return data[:-1] + b',"pad":"' + b"x" * (GIANT_RECORD_BYTES - len(data) - 9) + b'"}'


def _with_raw_value(event: dict[str, Any], literal: bytes) -> bytes:
    """``event`` on the wire with its value replaced by ``literal``, as written."""
    data = encode_event({**event, VALUE: 0})
    return data.replace(b'"value":0', b'"value":' + literal)


def _replaced(event: dict[str, Any], field: str, literal: bytes) -> bytes:
    """``event`` on the wire with ``field``'s JSON replaced by ``literal``, as written."""
    marker = "\x00marker\x00"
    data = encode_event({**event, field: marker})
    return data.replace(json.dumps(marker).encode(), literal)


def _deep_nesting(event: dict[str, Any]) -> bytes:
    return b"[" * 2000  # 2 KB that recurse 2,000 deep in a recursive parser


def _deep_value(event: dict[str, Any]) -> bytes:
    return _with_raw_value(event, b"[" * 1500 + b"1" + b"]" * 1500)


def _huge_integer(event: dict[str, Any]) -> bytes:
    return _with_raw_value(event, b"9" * 400)  # overflows float conversion


def _huge_time(event: dict[str, Any]) -> bytes:
    return _replaced(event, EVENT_TIME, b"1" + b"0" * 5000)  # past Python's int-to-str limit


MALFORMERS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
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
    "giant": _giant,
    "deep_nesting": _deep_nesting,
    "deep_value": _deep_value,
    "huge_integer": _huge_integer,
    "huge_time": _huge_time,
    "nan": lambda e: _with_raw_value(e, b"NaN"),
    "infinity": lambda e: _with_raw_value(e, b"Infinity"),
    "negative_infinity": lambda e: _with_raw_value(e, b"-Infinity"),
    "float_overflow": lambda e: _with_raw_value(e, b"1e400"),
    "value_too_large": lambda e: _with_raw_value(e, b"2e9"),
    "boolean_value": lambda e: _with_raw_value(e, b"true"),
    "string_value": lambda e: _with_raw_value(e, b'"3"'),
    "object_value": lambda e: _with_raw_value(e, b'{"plays":3}'),
    "fractional_time": lambda e: _replaced(e, EVENT_TIME, str(e[EVENT_TIME]).encode() + b".5"),
    "time_past_2100": lambda e: _replaced(e, EVENT_TIME, b"4102444800001"),
    "null_user": lambda e: _replaced(e, USER_ID, b"null"),
    "empty_event_id": lambda e: encode_event({**e, EVENT_ID: ""}),
    "long_user_id": lambda e: encode_event({**e, USER_ID: "u" * 300}),
    "upper_case_type": lambda e: encode_event({**e, EVENT_TYPE: str(e[EVENT_TYPE]).upper()}),
    "lone_surrogate": lambda e: _replaced(e, ITEM_ID, b'"\\ud800"'),
    "control_character": lambda e: _replaced(e, ITEM_ID, b'"a\tb"'),
    "bad_escape": lambda e: _replaced(e, ITEM_ID, b'"a\\qb"'),
    "overlong_utf8": lambda e: _replaced(e, ITEM_ID, b'"\xc0\xaf"'),
    "utf16": lambda e: json.dumps(e).encode("utf-16"),
    "byte_order_mark": lambda e: b"\xef\xbb\xbf" + encode_event(e),
    "trailing_garbage": lambda e: encode_event(e) + b"}",
    "two_events": lambda e: encode_event(e) + b"\n" + encode_event(e),
    "array_of_events": lambda e: b"[" + encode_event(e) + b"]",
    "bare_string": lambda e: json.dumps(str(e[EVENT_ID])).encode(),
    "bare_number": lambda e: b"42",
    "json_null": lambda e: b"null",
    "empty": lambda e: b"",
    "whitespace": lambda e: b" \r\n\t ",
    "tombstone": lambda e: None,
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
