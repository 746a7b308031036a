"""The parser and the validator face untrusted input: whatever it is, they return an event or a
reason and never raise (a raise would fail the micro-batch, and every replay of it)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamrec.producer.publisher import EventPublisher
from streamrec.schemas import events as E
from streamrec.schemas.config import KafkaConfig

pytestmark = pytest.mark.unit

LIMITS = E.event_contract().limits
VALID = {
    E.EVENT_ID: "e-1",
    E.USER_ID: "u-1",
    E.ITEM_ID: "i-1",
    E.EVENT_TYPE: "play",
    E.EVENT_TIME: 1_700_000_000_000,
    E.VALUE: 3.5,
}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**450), max_value=10**450)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# What a producer's caller may hand over: any keys, any values, including non-JSON ones.
python_values = st.recursive(
    json_scalars | st.binary() | st.complex_numbers() | st.tuples(st.integers()),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers() | st.text() | st.none(), inner, max_size=4),
    max_leaves=20,
)


def _assert_result(result: tuple[dict[str, Any] | None, str | None]) -> None:
    event, reason = result
    assert (event is None) != (reason is None)
    if event is not None:
        assert E.validate_event(event) is None
        assert isinstance(event[E.EVENT_TIME], int)
    else:
        assert isinstance(reason, str) and reason


@SETTINGS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_an_event_or_a_reason(raw: bytes) -> None:
    _assert_result(E.parse_event(raw))


@SETTINGS
@given(json_values)
def test_arbitrary_json_gives_an_event_or_a_reason(value: Any) -> None:
    raw = json.dumps(value, allow_nan=True).encode()
    _assert_result(E.parse_event(raw))
    _assert_result(E.parse_event(raw.decode()))


@SETTINGS
@given(st.sampled_from([*sorted(VALID), "extra"]), json_values)
def test_a_valid_event_with_any_field_replaced_gives_an_event_or_a_reason(
    field: str, value: Any
) -> None:
    raw = json.dumps({**VALID, field: value}, allow_nan=True).encode()
    _assert_result(E.parse_event(raw))


@SETTINGS
@given(st.integers(0, 200), st.integers(0, 40), st.binary(max_size=64))
def test_a_valid_record_with_bytes_spliced_in_gives_an_event_or_a_reason(
    at: int, cut: int, inserted: bytes
) -> None:
    raw = E.encode_event(VALID)
    at = min(at, len(raw))
    _assert_result(E.parse_event(raw[:at] + inserted + raw[at + cut :]))


@SETTINGS
@given(python_values)
def test_the_validator_takes_any_python_object(value: Any) -> None:
    reason = E.validate_event(value)
    assert reason is None or isinstance(reason, str)
    if isinstance(value, dict):
        reason = E.validate_event({**VALID, **value})
        assert reason is None or isinstance(reason, str)


@SETTINGS
@given(st.sampled_from(sorted(VALID)), python_values)
def test_the_validator_takes_any_field_value(field: str, value: Any) -> None:
    reason = E.validate_event({**VALID, field: value})
    assert reason is None or isinstance(reason, str)


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_nesting_past_the_limit_is_refused_before_parsing(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    for depth in (LIMITS.max_nesting_depth, LIMITS.max_nesting_depth + 1, 2000, 100_000):
        raw = (opener * depth + "1" + closer * depth).encode()[: E.MAX_EVENT_BYTES]
        event, reason = E.parse_event(raw)
        assert event is None and reason
        deep = depth > LIMITS.max_nesting_depth
        assert ("nested deeper than the limit" in reason) == deep


def test_integers_past_the_limit_are_refused_before_parsing() -> None:
    digits = LIMITS.max_integer_digits
    for n in (digits, digits + 1, 400, 5000):
        raw = E.encode_event({**VALID, E.VALUE: 0}).replace(b'"value":0', b'"value":' + b"9" * n)
        event, reason = E.parse_event(raw)
        assert event is None and reason
        assert ("integer of more than" in reason) == (n > digits)
    # A float's digits are not an integer's: long fractions parse as floats.
    raw = E.encode_event({**VALID, E.VALUE: 0}).replace(b'"value":0', b'"value":1.' + b"5" * 500)
    assert E.parse_event(raw)[0] is not None


def test_brackets_and_digits_inside_strings_do_not_count_toward_the_limits() -> None:
    odd = {**VALID, E.USER_ID: "[" * 200 + "{" * 50, E.ITEM_ID: "9" * 250 + '\\"[[['}
    event, reason = E.parse_event(E.encode_event(odd))
    assert reason is None and event is not None
    assert event[E.USER_ID] == odd[E.USER_ID] and event[E.ITEM_ID] == odd[E.ITEM_ID]
    # The standard library's path (orjson refuses the lone surrogate) sees the same.
    slow = E.encode_event({**odd, E.EVENT_ID: "\\ud800"}).replace(b"\\\\ud800", b"\\ud800")
    assert "lone surrogate" in (E.parse_event(slow)[1] or "")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (10**400, "value: integer of more than 20 digits"),
        (-(10**5000), "value: integer of more than 20 digits"),
        (math.nan, "value: expected number or null, got float"),
        (math.inf, "value: expected number or null, got float"),
        ([[[[1]]]], "value: expected number or null, got list"),
    ],
    ids=["400 digits", "5000 digits", "nan", "inf", "nested"],
)
def test_the_producer_refuses_poison_values_with_a_reason(value: Any, expected: str) -> None:
    # send() validates before it needs a connection: nothing here reaches a broker.
    publisher = EventPublisher(KafkaConfig())
    assert publisher.send({**VALID, E.VALUE: value}) == expected
    assert publisher.stats.sent == 0


def test_the_limits_live_in_the_contract() -> None:
    limits = E.load_json_schema()["x-streamrec-limits"]
    assert limits["maxRecordBytes"] == E.MAX_EVENT_BYTES == LIMITS.max_record_bytes
    assert limits["maxNestingDepth"] == LIMITS.max_nesting_depth
    assert limits["maxIntegerDigits"] == LIMITS.max_integer_digits
    schema = {k: v for k, v in E.load_json_schema().items() if k != "x-streamrec-limits"}
    with pytest.raises(ValueError, match="x-streamrec-limits"):
        E.contract_from_schema(schema)
