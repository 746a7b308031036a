"""The event contract: the Python validator and the Spark schema, both derived from
``event.schema.json``, agree with the JSON Schema itself as the reference ``jsonschema`` library
reads it."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
from typing import Any

import jsonschema
import pytest
from pyspark.sql import types as T

from streamrec.schemas import events
from streamrec.schemas.events import (
    MAX_EVENT_BYTES,
    contract_from_schema,
    encode_event,
    event_contract,
    load_json_schema,
    parse_event,
    spark_event_schema,
    validate_event,
)

pytestmark = pytest.mark.unit

SCHEMA = load_json_schema()
REFERENCE = jsonschema.Draft202012Validator(SCHEMA)
PROPS: dict[str, Any] = SCHEMA["properties"]
REQUIRED: list[str] = SCHEMA["required"]
T_MIN: int = PROPS["event_time"]["minimum"]
T_MAX: int = PROPS["event_time"]["maximum"]
V_MAX: int = PROPS["value"]["maximum"]
EMOJI = "\U0001f600"  # one code point, four UTF-8 bytes, two UTF-16 units


def jsonschema_valid(event: Any) -> bool:
    return bool(REFERENCE.is_valid(event))


def valid_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "e-1",
        "user_id": "u-1",
        "item_id": "i-1",
        "event_type": "play",
        "event_time": 1_700_000_000_000,
        "value": 12.5,
    }
    event.update(changes)
    return event


def without(field: str) -> dict[str, Any]:
    event = valid_event()
    del event[field]
    return event


# (id, event, valid?) -- every rule of the schema, on both sides of each boundary.
CORPUS: list[tuple[str, Any, bool]] = [
    # valid
    ("full", valid_event(), True),
    ("no value", without("value"), True),
    ("value null", valid_event(value=None), True),
    ("value int", valid_event(value=3), True),
    ("value zero", valid_event(value=0), True),
    ("value negative zero", valid_event(value=-0.0), True),
    ("value at max", valid_event(value=V_MAX), True),
    ("value float at max", valid_event(value=float(V_MAX)), True),
    ("event_time at min", valid_event(event_time=T_MIN), True),
    ("event_time at max", valid_event(event_time=T_MAX), True),
    ("event_time integral float", valid_event(event_time=1.7e12), True),
    ("event_time integral float at max", valid_event(event_time=float(T_MAX)), True),
    *[(f"event_type {t}", valid_event(event_type=t), True) for t in PROPS["event_type"]["enum"]],
    ("event_id at 128 ascii", valid_event(event_id="e" * 128), True),
    ("user_id at 256 ascii", valid_event(user_id="u" * 256), True),
    ("item_id at 256 ascii", valid_event(item_id="i" * 256), True),
    ("event_id at 128 emoji", valid_event(event_id=EMOJI * 128), True),
    ("user_id at 256 emoji", valid_event(user_id=EMOJI * 256), True),
    ("item_id at 256 cjk", valid_event(item_id="品" * 256), True),
    ("ids of one character", valid_event(event_id="x", user_id="y", item_id="z"), True),
    ("odd ids", valid_event(user_id="a:b {c} d/e", item_id=' \t\n"\\ '), True),
    ("whitespace id", valid_event(user_id=" "), True),
    # required fields missing
    *[(f"missing {name}", without(name), False) for name in REQUIRED],
    ("empty object", {}, False),
    # wrong types
    ("event_id int", valid_event(event_id=1), False),
    ("user_id int", valid_event(user_id=42), False),
    ("item_id float", valid_event(item_id=4.0), False),
    ("item_id null", valid_event(item_id=None), False),
    ("user_id list", valid_event(user_id=["u"]), False),
    ("user_id object", valid_event(user_id={"id": "u"}), False),
    ("event_type int", valid_event(event_type=1), False),
    ("event_type bool", valid_event(event_type=True), False),
    ("event_time string", valid_event(event_time="1700000000000"), False),
    ("event_time bool", valid_event(event_time=True), False),
    ("event_time null", valid_event(event_time=None), False),
    ("event_time fractional", valid_event(event_time=1_700_000_000_000.5), False),
    ("event_time list", valid_event(event_time=[1_700_000_000_000]), False),
    ("value bool true", valid_event(value=True), False),
    ("value bool false", valid_event(value=False), False),
    ("value string", valid_event(value="3"), False),
    ("value list", valid_event(value=[3]), False),
    # empty strings
    ("event_id empty", valid_event(event_id=""), False),
    ("user_id empty", valid_event(user_id=""), False),
    ("item_id empty", valid_event(item_id=""), False),
    ("event_type empty", valid_event(event_type=""), False),
    # over the max length, counted in code points
    ("event_id 129 ascii", valid_event(event_id="e" * 129), False),
    ("user_id 257 ascii", valid_event(user_id="u" * 257), False),
    ("item_id 257 ascii", valid_event(item_id="i" * 257), False),
    ("event_id 129 emoji", valid_event(event_id=EMOJI * 129), False),
    ("user_id 257 emoji", valid_event(user_id=EMOJI * 257), False),
    # 65 decomposed "é" are 65 characters on screen but 130 code points
    ("event_id 130 combining", valid_event(event_id="e\u0301" * 65), False),
    # enum
    ("event_type capitalised", valid_event(event_type="Play"), False),
    ("event_type trailing space", valid_event(event_type="play "), False),
    ("event_type unknown", valid_event(event_type="listen"), False),
    # bounds
    ("event_time below min", valid_event(event_time=T_MIN - 1), False),
    ("event_time above max", valid_event(event_time=T_MAX + 1), False),
    ("event_time in seconds", valid_event(event_time=1_700_000_000), False),
    ("event_time zero", valid_event(event_time=0), False),
    ("event_time negative", valid_event(event_time=-1_700_000_000_000), False),
    ("event_time huge float", valid_event(event_time=1e300), False),
    ("value negative", valid_event(value=-1), False),
    ("value slightly negative", valid_event(value=-1e-9), False),
    ("value above max", valid_event(value=V_MAX + 1), False),
    ("value float above max", valid_event(value=V_MAX + 0.5), False),
    ("value huge int", valid_event(value=10**30), False),
    # unknown fields
    ("unknown field", valid_event(extra=1), False),
    ("unknown null field", valid_event(extra=None), False),
    ("field name case", {**without("value"), "Value": 1}, False),
    # not an object
    ("list of events", [valid_event()], False),
    ("empty list", [], False),
    ("string", json.dumps(valid_event()), False),
    ("int", 42, False),
    ("float", 4.2, False),
    ("null", None, False),
    ("bool", True, False),
]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_corpus_is_large_and_covers_both_outcomes() -> None:
    assert len(CORPUS) >= 40
    assert len({name for name, _, _ in CORPUS}) == len(CORPUS)
    assert sum(ok for _, _, ok in CORPUS) >= 15
    assert sum(not ok for _, _, ok in CORPUS) >= 40


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_validator_agrees_with_jsonschema(event: Any, expected: bool) -> None:
    reason = validate_event(event)
    assert (reason is None) == jsonschema_valid(event)
    assert (reason is None) == expected, reason
    if reason is not None:
        assert isinstance(reason, str) and reason


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_parse_event_agrees_with_jsonschema_on_the_wire(event: Any, expected: bool) -> None:
    parsed, reason = parse_event(json.dumps(event, ensure_ascii=False).encode("utf-8"))
    assert (reason is None) == expected, reason
    assert (parsed is None) == (reason is not None)


def test_reasons_name_the_field() -> None:
    assert "user_id" in (validate_event(without("user_id")) or "")
    assert "event_time" in (validate_event(valid_event(event_time=True)) or "")
    assert "item_id" in (validate_event(valid_event(item_id="i" * 257)) or "")
    assert "event_type" in (validate_event(valid_event(event_type="listen")) or "")
    assert "value" in (validate_event(valid_event(value=-1)) or "")
    assert "'extra'" in (validate_event(valid_event(extra=1)) or "")
    assert "list" in (validate_event([]) or "")


def test_non_finite_numbers_rejected_by_the_validator() -> None:
    # Not JSON values, so outside the agreement corpus (jsonschema happens to accept a NaN
    # value: NaN compares false with both bounds); the validator must still refuse them.
    for bad in (math.nan, math.inf, -math.inf):
        assert validate_event(valid_event(value=bad)) is not None
        assert validate_event(valid_event(event_time=bad)) is not None


# --- parse_event -----------------------------------------------------------------------------


def test_parse_event_none_record() -> None:
    event, reason = parse_event(None)
    assert event is None
    assert reason and "null" in reason


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",
        '{"event_id":"caf\u00e9"}'.encode("latin-1"),
        encode_event(valid_event())[:-3] + b"\xc3",
    ],
    ids=["utf16-bom", "latin-1", "truncated-sequence"],
)
def test_parse_event_rejects_bytes_that_are_not_utf8(raw: bytes) -> None:
    event, reason = parse_event(raw)
    assert event is None
    assert reason and reason.startswith("not UTF-8")


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"hello", b'{"event_id":', b"{'event_id': 'e'}", b"{}{}", b"\xef\xbb\xbf{}"],
    ids=["empty", "blank", "word", "truncated", "single-quotes", "two-objects", "utf8-bom"],
)
def test_parse_event_rejects_text_that_is_not_json(raw: bytes) -> None:
    event, reason = parse_event(raw)
    assert event is None
    assert reason and reason.startswith("not JSON")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["value", "event_time"])
def test_parse_event_rejects_nan_and_infinity(token: str, field: str) -> None:
    raw = json.dumps(valid_event(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {token}')
    assert token in raw
    event, reason = parse_event(raw.encode())
    assert event is None
    assert reason and token.lstrip("-") in reason


def test_parse_event_rejects_numbers_that_overflow_to_infinity() -> None:
    raw = json.dumps(valid_event(value=0)).replace('"value": 0', '"value": 1e400')
    event, reason = parse_event(raw.encode())
    assert event is None
    assert reason and "value" in reason


def _padded(size: int) -> bytes:
    raw = encode_event(valid_event())
    padded = raw[:-1] + b" " * (size - len(raw)) + b"}"
    assert len(padded) == size
    return padded


def test_parse_event_size_limit() -> None:
    event, reason = parse_event(_padded(MAX_EVENT_BYTES))
    assert reason is None and event is not None
    event, reason = parse_event(_padded(MAX_EVENT_BYTES + 1))
    assert event is None
    assert reason and str(MAX_EVENT_BYTES + 1) in reason and str(MAX_EVENT_BYTES) in reason


def test_parse_event_size_limit_counts_utf8_bytes_of_text() -> None:
    # Fewer characters than the limit, but more bytes once encoded.
    text = json.dumps(valid_event(), ensure_ascii=False)[:-1]
    text += ',"pad":"' + "é" * (MAX_EVENT_BYTES // 2) + '"}'
    assert len(text) < MAX_EVENT_BYTES < len(text.encode("utf-8"))
    event, reason = parse_event(text)
    assert event is None
    assert reason and "exceeds" in reason


def test_parse_event_normalises_a_valid_event() -> None:
    raw = (
        b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
        b'"event_time":1.7e12,"value":3}'
    )
    event, reason = parse_event(raw)
    assert reason is None
    assert event == {
        "event_id": "e",
        "user_id": "u",
        "item_id": "i",
        "event_type": "play",
        "event_time": 1_700_000_000_000,
        "value": 3.0,
    }
    assert type(event["event_time"]) is int
    assert type(event["value"]) is float


@pytest.mark.parametrize("value_json", ["", ',"value":null'], ids=["absent", "null"])
def test_parse_event_missing_or_null_value_becomes_none(value_json: str) -> None:
    raw = (
        '{"event_id":"e","user_id":"u","item_id":"i","event_type":"view",'
        f'"event_time":1700000000000{value_json}}}'
    )
    event, reason = parse_event(raw)  # str input is accepted as well as bytes
    assert reason is None and event is not None
    assert event["value"] is None
    assert type(event["event_time"]) is int


ODD_IDS = [
    "user with spaces",
    "a:b:c",
    "{hash-tag}",
    "}{",
    "path/to/user",
    "back\\slash",
    'quote"d',
    "emoji " + EMOJI + "\U0001f1eb\U0001f1f7",
    "日本語ユーザー",
    "\u05e9\u05dc\u05d5\u05dd",  # right-to-left
    "tab\tnew\nline",
    "nul\x00byte",
    "e\u0301",
    " ",
]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_encode_then_parse_round_trip(odd: str) -> None:
    event = valid_event(event_id=odd, user_id=odd, item_id=odd)
    raw = encode_event(event)
    assert isinstance(raw, bytes)
    parsed, reason = parse_event(raw)
    assert reason is None
    assert parsed == event
    # Unicode is kept as UTF-8, not \u-escaped: the wire form stays small and readable.
    if any(ord(ch) > 127 for ch in odd):
        assert odd.encode("utf-8") in raw


def test_encode_event_is_compact() -> None:
    raw = encode_event({"a": 1, "b": "x"})
    assert raw == b'{"a":1,"b":"x"}'


# --- regressions: env expansion and encoding edge cases found in review ---------------------


# Regression (schemas/events.py, parse_event line `size = len(raw.encode("utf-8"))`, outside the
# try):
# a str record holding a lone surrogate raises UnicodeEncodeError instead of returning
# (None, reason); parse_event is documented to return a reason for every bad record.
def test_parse_event_never_raises_on_a_lone_surrogate_str() -> None:
    event, reason = parse_event('{"event_id":"\ud800"}')
    assert event is None
    assert reason


# Regression (schemas/events.py, validate_event/_field_error): a JSON escape such as "\ud800"
# yields a
# lone surrogate; the validator (like jsonschema, which does not look at code points) accepts the
# event, but it cannot be written back as UTF-8: encode_event raises UnicodeEncodeError, and so
# would the Redis key of such a user id. Expected: rejected as invalid data (dead letter).
def test_every_accepted_event_can_be_encoded_again() -> None:
    raw = encode_event(valid_event()).replace(b'"u-1"', b'"\\ud800"')
    event, reason = parse_event(raw)
    if reason is None:
        assert event is not None
        encode_event(event)


# --- the contract derived from the schema ----------------------------------------------------


def test_contract_fields_follow_the_schema() -> None:
    contract = event_contract()
    assert contract.field_names == tuple(PROPS)
    assert contract.event_types == tuple(PROPS["event_type"]["enum"])
    for rule in contract.fields:
        assert rule.required == (rule.name in REQUIRED)
    constants = (
        events.EVENT_ID,
        events.USER_ID,
        events.ITEM_ID,
        events.EVENT_TYPE,
        events.EVENT_TIME,
        events.VALUE,
    )
    assert tuple(PROPS) == constants


def test_contract_refuses_keywords_it_cannot_enforce() -> None:
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["user_id"]["pattern"] = "^u"
    with pytest.raises(ValueError, match="pattern"):
        contract_from_schema(schema)
    open_schema = copy.deepcopy(SCHEMA)
    open_schema["additionalProperties"] = True
    with pytest.raises(ValueError, match="additionalProperties"):
        contract_from_schema(open_schema)


_SPARK_BY_JSON = {"string": T.StringType(), "integer": T.LongType(), "number": T.DoubleType()}


def test_spark_schema_matches_the_json_schema() -> None:
    struct = spark_event_schema()
    assert isinstance(struct, T.StructType)
    assert struct.fieldNames() == list(PROPS)
    for f in struct.fields:
        json_types = PROPS[f.name]["type"]
        json_types = json_types if isinstance(json_types, list) else [json_types]
        (concrete,) = [t for t in json_types if t != "null"]
        assert f.dataType == _SPARK_BY_JSON[concrete], f.name
        assert f.nullable == (f.name not in REQUIRED), f.name


def test_spark_schema_exact() -> None:
    assert spark_event_schema() == T.StructType(
        [
            T.StructField("event_id", T.StringType(), nullable=False),
            T.StructField("user_id", T.StringType(), nullable=False),
            T.StructField("item_id", T.StringType(), nullable=False),
            T.StructField("event_type", T.StringType(), nullable=False),
            T.StructField("event_time", T.LongType(), nullable=False),
            T.StructField("value", T.DoubleType(), nullable=True),
        ]
    )


# --- property-style: random mutations of valid events ----------------------------------------


def _string_pool(rng: random.Random) -> list[Any]:
    def text(n: int) -> str:
        # Any code point but surrogates (not encodable as UTF-8, see the regression tests above).
        out: list[str] = []
        while len(out) < n:
            cp = rng.choice(
                [
                    rng.randrange(32, 127),
                    rng.randrange(0xA0, 0xD800),
                    rng.randrange(0xE000, 0x110000),
                ]
            )
            out.append(chr(cp))
        return "".join(out)

    lengths = [0, 1, 2, 127, 128, 129, 255, 256, 257, rng.randrange(3, 300)]
    return [text(n) for n in lengths] + [EMOJI * 128, EMOJI * 129, EMOJI * 256, EMOJI * 257]


_OTHER_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    0.5,
    -0.0,
    1e-9,
    V_MAX,
    V_MAX + 1,
    V_MAX + 0.5,
    float(V_MAX),
    T_MIN - 1,
    T_MIN,
    T_MAX,
    T_MAX + 1,
    float(T_MIN),
    float(T_MAX),
    T_MIN + 0.5,
    1.7e12,
    1_700_000_000_000,
    1e300,
    -1e300,
    10**30,
    [],
    {},
    [1],
    {"a": 1},
    "",
    "1700000000000",
    "3",
    *PROPS["event_type"]["enum"],
    "Play",
    "listen",
]


def _mutate(event: dict[str, Any], rng: random.Random, strings: list[Any]) -> Any:
    kind = rng.randrange(10)
    if kind == 0 and event:
        del event[rng.choice(sorted(event))]
    elif kind == 1:
        event[rng.choice(["extra", "Value", "userId", "", " "])] = rng.choice(_OTHER_VALUES)
    elif kind == 2:
        return rng.choice([[event], json.dumps(event), 1, None, "x", []])
    else:
        field = rng.choice(list(PROPS))
        event[field] = rng.choice(strings + _OTHER_VALUES)
    return event


def test_random_mutations_agree_with_jsonschema() -> None:
    rng = random.Random(20240601)
    strings = _string_pool(rng)
    outcomes = {True: 0, False: 0}
    for i in range(3000):
        event: Any = valid_event(
            event_type=rng.choice(PROPS["event_type"]["enum"]),
            event_time=rng.randrange(T_MIN, T_MAX + 1),
            value=rng.choice([None, 0, rng.random() * 100, rng.randrange(600)]),
        )
        if rng.random() < 0.2:
            del event["value"]
        for _ in range(rng.randrange(0, 4)):
            if not isinstance(event, dict):
                break
            event = _mutate(event, rng, strings)
        # Only JSON values: what a Kafka record can hold.
        event = json.loads(json.dumps(event, allow_nan=False))
        expected = jsonschema_valid(event)
        reason = validate_event(event)
        assert (reason is None) == expected, (i, event, reason)
        _parsed, wire_reason = parse_event(json.dumps(event, ensure_ascii=False).encode("utf-8"))
        assert (wire_reason is None) == expected, (i, event, wire_reason)
        outcomes[expected] += 1
    # The generator must exercise both sides, or agreement would prove little.
    assert outcomes[True] > 300
    assert outcomes[False] > 1000


# --- the fast path: orjson and the compiled predicate against the reference -----------------
# parse_event and validate_event take a fast path for valid events (orjson, the contract's
# rules compiled into one predicate) and the reference path for everything else. Both must give
# exactly the reference's answer: the same event, the same reason, on every record.

_ODD_RECORDS: list[bytes] = [
    b'{"event_id":"e","user_id":"\\ud800","item_id":"i","event_type":"play",'
    b'"event_time":1700000000000}',  # a lone surrogate: the standard library reads it
    b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
    b'"event_time":18446744073709551616}',  # past 64 bits: orjson reads a float
    b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
    b'"event_time":1700000000000,"value":1e400}',
    b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
    b'"event_time":1700000000000,"value":NaN}',
    b'{"event_id":"e","user_id":"u","user_id":"v","item_id":"i","event_type":"play",'
    b'"event_time":1700000000000}',  # a repeated key: the last one counts, both ways
    b'\xef\xbb\xbf{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
    b'"event_time":1700000000000}',
    b' \t\r\n{"event_id":"e","user_id":"u","item_id":"i","event_type":"play",'
    b'"event_time":1.7e12,"value":-0.0} \n',
    b'{"event_id":"e","user_id":"u","item_id":"i","event_type":"play","event_time":17e11}\x0c',
    b"\xff\xfe{}",
    b"",
    b"[]",
    b"null",
    _padded(MAX_EVENT_BYTES),
    _padded(MAX_EVENT_BYTES + 1),
]


def _agrees_with_the_reference(raw: bytes) -> None:
    fast, slow = parse_event(raw), events._parse_event_slowly(raw)
    assert fast == slow, raw[:120]
    if fast[0] is not None:
        assert [type(v) for v in fast[0].values()] == [type(v) for v in slow[0].values()]  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", _ODD_RECORDS, ids=range(len(_ODD_RECORDS)))
def test_parse_event_fast_path_agrees_with_the_reference_on_odd_records(raw: bytes) -> None:
    _agrees_with_the_reference(raw)


@pytest.mark.parametrize(("event", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_compiled_rules_agree_with_the_reasons(event: Any, expected: bool) -> None:
    contract = event_contract()
    if isinstance(event, dict):
        assert contract.is_valid(event) == (events._event_error(event, contract) is None)
    assert (validate_event(event) is None) == expected
    _agrees_with_the_reference(json.dumps(event, ensure_ascii=False).encode("utf-8"))


def test_compiled_rules_agree_with_the_reasons_on_random_mutations() -> None:
    rng = random.Random(20261126)
    strings = _string_pool(rng)
    contract = event_contract()
    outcomes = {True: 0, False: 0}
    for _ in range(3000):
        event: Any = valid_event(
            event_time=rng.randrange(T_MIN, T_MAX + 1),
            value=rng.choice([None, rng.random() * 100, 7]),
        )
        for _ in range(rng.randrange(0, 3)):
            if isinstance(event, dict):
                event = _mutate(event, rng, strings)
        if isinstance(event, dict):  # the predicate also sees producers' Python values
            verdict = contract.is_valid(event)
            assert verdict == (events._event_error(event, contract) is None), event
            outcomes[verdict] += 1
        with contextlib.suppress(ValueError):  # NaN is not JSON
            _agrees_with_the_reference(json.dumps(event, allow_nan=False).encode("utf-8"))
    assert outcomes[True] > 300 and outcomes[False] > 1000


def test_numbers_of_the_contract_are_bounded_far_below_64_bits() -> None:
    # orjson reads integers past 64 bits as floats (the standard library as ints); the fast path
    # equals the reference only because no valid number gets near that.
    for rule in event_contract().fields:
        if {"integer", "number"} & set(rule.types):
            assert rule.minimum is not None and rule.maximum is not None, rule.name
            assert -(2**53) < rule.minimum <= rule.maximum < 2**53, rule.name
