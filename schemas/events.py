"""The event contract, derived from ``event.schema.json`` (the source of truth).

Two things are derived here and nowhere else:
- ``validate_event``: the validator producers run before sending and the streaming job runs on
  every Kafka record, so both sides reject exactly the same events;
- ``spark_event_schema``: the Spark ``StructType`` of a valid event.

Only the JSON Schema keywords the contract uses are supported; a schema using any other keyword
fails at load time instead of being half-enforced.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # Spark only where a job asks for the schema: lookup clients run without it
    from pyspark.sql import types as T

# Column names of an event, shared by every job (also the JSON field names).
EVENT_ID = "event_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
EVENT_TIME = "event_time"
VALUE = "value"

_SUPPORTED_KEYWORDS = {
    "description",
    "type",
    "minLength",
    "maxLength",
    "enum",
    "minimum",
    "maximum",
}


@dataclass(frozen=True)
class FieldRule:
    name: str
    types: tuple[str, ...]
    required: bool
    min_length: int | None = None
    max_length: int | None = None
    enum: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def nullable(self) -> bool:
        return "null" in self.types


@dataclass(frozen=True)
class RecordLimits:
    """Bounds on a raw record, checked before it is parsed (``x-streamrec-limits`` in the
    schema): a record past one is garbage or an attack, and must cost little to reject."""

    max_record_bytes: int
    max_nesting_depth: int
    max_integer_digits: int


@dataclass(frozen=True)
class EventContract:  # cached_property needs a __dict__: no slots here
    schema: dict[str, Any]
    fields: tuple[FieldRule, ...]
    limits: RecordLimits

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def field_name_set(self) -> frozenset[str]:
        return frozenset(self.field_names)

    @cached_property
    def is_valid(self) -> Callable[[dict[str, Any]], bool]:
        """The rules compiled into one predicate on a dict (see ``validate_event``)."""
        return _compile_valid_check(self)

    @property
    def event_types(self) -> tuple[str, ...]:
        rule = next(f for f in self.fields if f.name == EVENT_TYPE)
        assert rule.enum is not None
        return tuple(rule.enum)


def load_json_schema() -> dict[str, Any]:
    text = (Path(__file__).parent / "event.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def contract_from_schema(schema: dict[str, Any]) -> EventContract:
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        raise ValueError("event schema must be a closed object (additionalProperties: false)")
    required = set(schema.get("required", []))
    limits = schema.get("x-streamrec-limits", {})
    try:
        record_limits = RecordLimits(
            max_record_bytes=int(limits["maxRecordBytes"]),
            max_nesting_depth=int(limits["maxNestingDepth"]),
            max_integer_digits=int(limits["maxIntegerDigits"]),
        )
    except KeyError as exc:
        raise ValueError(f"event schema's x-streamrec-limits lacks {exc.args[0]!r}") from None
    rules = []
    for name, prop in schema["properties"].items():
        unknown = set(prop) - _SUPPORTED_KEYWORDS
        if unknown:
            raise ValueError(f"event schema field {name!r} uses unsupported keywords {unknown}")
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        rules.append(
            FieldRule(
                name=name,
                types=tuple(types),
                required=name in required,
                min_length=prop.get("minLength"),
                max_length=prop.get("maxLength"),
                enum=tuple(prop["enum"]) if "enum" in prop else None,
                minimum=prop.get("minimum"),
                maximum=prop.get("maximum"),
            )
        )
    return EventContract(schema=schema, fields=tuple(rules), limits=record_limits)


@cache
def event_contract() -> EventContract:
    return contract_from_schema(load_json_schema())


# A Kafka record larger than this is rejected before it is parsed.
MAX_EVENT_BYTES = event_contract().limits.max_record_bytes
# Integers of more digits than this are refused before any arithmetic touches them (a 400-digit
# integer overflows float conversion; Python refuses to print one of over 4,300 digits).
_INTEGER_BOUND = 10 ** event_contract().limits.max_integer_digits


def _type_matches(value: Any, json_type: str) -> bool:
    # JSON booleans are not numbers, although Python's bool is an int.
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if json_type == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if json_type == "number":  # every int is finite; math.isfinite overflows on huge ones
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    raise ValueError(f"unsupported JSON type {json_type!r}")


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field_error(rule: FieldRule, value: Any) -> str | None:
    if not any(_type_matches(value, t) for t in rule.types):
        return f"{rule.name}: expected {' or '.join(rule.types)}, got {type(value).__name__}"
    if value is None:
        return None
    if isinstance(value, int) and not -_INTEGER_BOUND < value < _INTEGER_BOUND:
        digits = event_contract().limits.max_integer_digits
        return f"{rule.name}: integer of more than {digits} digits"
    if isinstance(value, str):
        if not _utf8_encodable(value):
            return f"{rule.name}: holds a lone surrogate (\\uD800-\\uDFFF), not encodable as UTF-8"
        if rule.min_length is not None and len(value) < rule.min_length:
            return f"{rule.name}: shorter than {rule.min_length} characters"
        if rule.max_length is not None and len(value) > rule.max_length:
            return f"{rule.name}: longer than {rule.max_length} characters"
    if rule.enum is not None and value not in rule.enum:
        return f"{rule.name}: {value!r} is not one of {list(rule.enum)}"
    if rule.minimum is not None and value < rule.minimum:
        return f"{rule.name}: {value} is below the minimum {rule.minimum}"
    if rule.maximum is not None and value > rule.maximum:
        return f"{rule.name}: {value} is above the maximum {rule.maximum}"
    return None


def validate_event(event: Any, contract: EventContract | None = None) -> str | None:
    """The reason ``event`` breaks the contract, or None when it is valid."""
    contract = contract or event_contract()
    try:
        if isinstance(event, dict) and contract.is_valid(event):
            return None  # the usual case, without building any reason
        return _event_error(event, contract)
    except Exception as exc:  # a case the rules missed: still a reason, never a crash
        return f"unreadable event ({type(exc).__name__}: {str(exc)[:200]})"


def _event_error(event: Any, contract: EventContract) -> str | None:
    """The first rule ``event`` breaks, in field order, as a reason for people."""
    if not isinstance(event, dict):
        return f"event must be a JSON object, got {type(event).__name__}"
    unknown = sorted(map(repr, event.keys() - contract.field_name_set))  # keys of any type
    if unknown:
        return f"unknown field(s): {', '.join(unknown[:5])}"
    for rule in contract.fields:
        if rule.name not in event:
            if rule.required:
                return f"{rule.name}: required field is missing"
            continue
        error = _field_error(rule, event[rule.name])
        if error:
            return error
    return None


def _value_check(rule: FieldRule) -> Callable[[Any], bool]:
    """True exactly when ``_field_error(rule, value)`` is None, without building reasons: every
    producer send and every Kafka record (twice: lists and archive) goes through it. The type
    tests are ``_type_matches``'s, unrolled."""
    unsupported = set(rule.types) - {"string", "null", "integer", "number"}
    if unsupported:
        raise ValueError(f"unsupported JSON type(s) {sorted(unsupported)} in field {rule.name!r}")
    string_ok, null_ok = "string" in rule.types, "null" in rule.types
    integer_ok, number_ok = "integer" in rule.types, "number" in rule.types
    min_length, max_length = rule.min_length, rule.max_length
    enum, minimum, maximum = rule.enum, rule.minimum, rule.maximum

    def check(value: Any) -> bool:
        if value is None:
            return null_ok
        if isinstance(value, str):
            if not string_ok or not (value.isascii() or _utf8_encodable(value)):
                return False
            if min_length is not None and len(value) < min_length:
                return False
            if max_length is not None and len(value) > max_length:
                return False
        elif isinstance(value, bool):  # JSON booleans are not numbers
            return False
        elif isinstance(value, int):
            if not (integer_ok or number_ok) or not -_INTEGER_BOUND < value < _INTEGER_BOUND:
                return False
        elif isinstance(value, float):
            if not ((integer_ok and value.is_integer()) or (number_ok and math.isfinite(value))):
                return False
        else:
            return False
        if enum is not None and value not in enum:
            return False
        if minimum is not None and value < minimum:
            return False
        return maximum is None or not value > maximum

    return check


def _compile_valid_check(contract: EventContract) -> Callable[[dict[str, Any]], bool]:
    """``contract``'s rules compiled into one predicate: True exactly when ``_event_error``
    finds nothing (a unit test holds the two together on every corpus event)."""
    names = contract.field_name_set
    rules = tuple((rule.name, rule.required, _value_check(rule)) for rule in contract.fields)

    def valid(event: dict[str, Any]) -> bool:
        if not event.keys() <= names:
            return False
        for name, required, check in rules:
            if name in event:
                if not check(event[name]):
                    return False
            elif required:
                return False
        return True

    return valid


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def parse_event(raw: object) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and validate one raw record: ``(event, None)`` or ``(None, reason)``, never an
    exception: one record must not stop the stream that reads it.

    A valid event comes back normalised: integral floats become ints, a missing value is None.
    """
    try:
        if isinstance(raw, bytes | bytearray) and len(raw) <= MAX_EVENT_BYTES:
            # The usual case, a valid event, through orjson (about 5x the standard library).
            # orjson is stricter (it refuses NaN, lone surrogates, integers past 64 bits,
            # nesting past 1,024), never looser, so whatever it refuses or the contract rejects
            # goes the standard library's way below, for the same reason as ever.
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(event, dict) and event_contract().is_valid(event):
                    return normalise_event(event), None
        return _parse_event_slowly(raw)
    except Exception as exc:  # a case the limits missed: still a reason, never a crash
        return None, f"unparsable record ({type(exc).__name__}: {str(exc)[:200]})"


def ahead_of_record_reason(
    event_time_ms: int, record_ms: int | None, max_ahead_ms: int
) -> str | None:
    """Why an event dated more than ``max_ahead_ms`` after its Kafka record's timestamp (the
    broker's clock: the events topic appends with LogAppendTime) is refused, or None. Only the
    future is bounded: late events and backfills of old data are normal, while one event dated
    ahead would fence its user's lists until that date."""
    if record_ms is None or record_ms <= 0 or event_time_ms <= record_ms + max_ahead_ms:
        return None
    return (
        f"event_time {event_time_ms} is {event_time_ms - record_ms} ms after the Kafka record's "
        f"timestamp {record_ms}: more than streaming.max_event_time_ahead_s allows "
        f"({max_ahead_ms // 1000} s); the producer's clock or the event's time is wrong"
    )


# JSON's tokens that matter to the limits: strings (skipped whole, so brackets and digits inside
# them do not count), brackets, and numbers with their fraction and exponent.
_LIMIT_TOKENS = re.compile(
    rb'"(?:[^"\\]++|\\.)*+"|[\[{]|[\]}]|-?(\d+)((?:\.\d+)?(?:[eE][+-]?\d+)?)', re.DOTALL
)


def _limit_error(raw: bytes) -> str | None:
    """The first of the contract's nesting and integer limits that ``raw`` breaks, if any,
    found without parsing it: the standard library's parser recurses once per bracket and turns
    any integer into a Python int, however long."""
    limits = event_contract().limits
    depth = 0
    for token in _LIMIT_TOKENS.finditer(raw):
        first = raw[token.start()]
        if first in b"[{":
            depth += 1
            if depth > limits.max_nesting_depth:
                return f"nested deeper than the limit of {limits.max_nesting_depth} levels"
        elif first in b"]}":
            depth -= 1
        elif first != ord('"') and not token.group(2):  # an integer, not a float
            if len(token.group(1)) > limits.max_integer_digits:
                return f"an integer of more than {limits.max_integer_digits} digits"
    return None


def _parse_event_slowly(raw: object) -> tuple[dict[str, Any] | None, str | None]:
    """``parse_event`` with the standard library's parser: the reference, and the path that says
    why a record is invalid."""
    if raw is None:
        return None, "empty record (null value)"
    if isinstance(raw, str):
        if not _utf8_encodable(raw):
            return None, "record holds a lone surrogate, not encodable as UTF-8"
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes | bytearray):
        return None, f"record must be bytes or text, got {type(raw).__name__}"
    if len(raw) > MAX_EVENT_BYTES:
        return None, f"record of {len(raw)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit"
    limit_error = _limit_error(bytes(raw))
    if limit_error:
        return None, limit_error
    try:
        text = raw.decode("utf-8")
        event = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: {exc.reason} at byte {exc.start}"
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    reason = validate_event(event)
    if reason:
        return None, reason
    return normalise_event(event), None


def normalise_event(event: dict[str, Any]) -> dict[str, Any]:
    out = dict(event)
    out[EVENT_TIME] = int(out[EVENT_TIME])
    value = out.get(VALUE)
    out[VALUE] = None if value is None else float(value)
    return out


def encode_event(event: dict[str, Any]) -> bytes:
    """The wire form of an event: compact UTF-8 JSON (unicode kept as is)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def spark_event_schema(contract: EventContract | None = None) -> T.StructType:
    """The Spark schema of a valid event, derived field by field from the JSON Schema."""
    from pyspark.sql import types as T

    spark_types: dict[str, T.DataType] = {
        "string": T.StringType(),
        "integer": T.LongType(),
        "number": T.DoubleType(),
    }
    contract = contract or event_contract()
    fields = []
    for rule in contract.fields:
        concrete = [t for t in rule.types if t != "null"]
        if len(concrete) != 1:
            raise ValueError(f"{rule.name}: cannot map JSON types {rule.types} to one Spark type")
        fields.append(
            T.StructField(
                rule.name,
                spark_types[concrete[0]],
                nullable=rule.nullable or not rule.required,
            )
        )
    return T.StructType(fields)
