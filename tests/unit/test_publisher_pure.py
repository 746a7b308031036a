"""The producer's pure parts: pacing math, malformed-record injection, record keys, error
messages, produce options and the report. Sending to a real broker is an integration test."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streamrec import cli
from streamrec.errors import ConfigError, InputError
from streamrec.producer import run
from streamrec.producer.invalid import KINDS, RawRecord, malformed, with_invalid
from streamrec.producer.pacing import MIN_SLEEP_S, Pacer, due_in
from streamrec.producer.publisher import event_key, no_topic_message, unreachable_message
from streamrec.producer.run import (
    DEFAULT_SYNTHETIC_COUNT,
    ProduceOptions,
    ProduceReport,
    outgoing_records,
)
from streamrec.producer.sources import Reject
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas.config import Config, KafkaConfig
from streamrec.schemas.events import parse_event

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(SyntheticWorld(100, 50, 2, seed=1).events(3000))


# --- pacing -----------------------------------------------------------------------------------


def test_due_in_schedules_against_the_start() -> None:
    assert due_in(0, 10.0, 0.0) == 0.0
    assert due_in(5, 10.0, 0.2) == pytest.approx(0.3)
    assert due_in(5, 10.0, 0.9) == 0.0  # late: send at once, the schedule catches up
    assert due_in(10**6, 0.0, 0.0) == 0.0  # rate 0 is unthrottled


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_holds_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(50.0, clock=clock, sleep=clock.sleep)
    for _ in range(101):
        pacer.wait()
    assert clock.now - 100.0 == pytest.approx(2.0)  # record 100 is due 100 / 50 s in


def test_pacer_catches_up_after_a_slow_send_without_sleeping() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 0.55  # a send that took five records' time
    for _ in range(5):
        pacer.wait()
    assert clock.slept == []
    pacer.wait()  # record 6 is due at 0.6 s
    assert clock.slept == [pytest.approx(0.05)]


def test_unthrottled_pacer_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(0.0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        pacer.wait()
    assert clock.slept == []


def test_pacer_skips_sleeps_too_short_to_honour() -> None:
    clock = FakeClock()
    pacer = Pacer(1 / (MIN_SLEEP_S / 2), clock=clock, sleep=clock.sleep)
    pacer.wait()
    pacer.wait()
    assert clock.slept == []


# --- malformed records ------------------------------------------------------------------------

EXPECTED_REASON = {
    "not_json": "not JSON",
    "not_utf8": "not UTF-8",
    "not_object": "must be a JSON object",
    "missing_field": "user_id: required field is missing",
    "wrong_type": "event_time: expected integer",
    "unknown_event_type": "'teleport' is not one of",
    "time_in_seconds": "event_time",
    "negative_value": "value",
    "unknown_field": "unknown field",
    "oversize": "exceeds the",
    "giant": "1048400 bytes exceeds the",
    "deep_nesting": "nested deeper than the limit",
    "deep_value": "nested deeper than the limit",
    "huge_integer": "integer of more than 20 digits",
    "huge_time": "integer of more than 20 digits",
    "nan": "NaN is not valid JSON",
    "infinity": "Infinity is not valid JSON",
    "negative_infinity": "-Infinity is not valid JSON",
    "float_overflow": "value: expected number",
    "value_too_large": "value: 2000000000.0 is above the maximum",
    "boolean_value": "value: expected number or null, got bool",
    "string_value": "value: expected number or null, got str",
    "object_value": "value: expected number or null, got dict",
    "fractional_time": "event_time: expected integer, got float",
    "time_past_2100": "event_time: 4102444800001 is above the maximum",
    "null_user": "user_id: expected string, got NoneType",
    "empty_event_id": "event_id: shorter than 1",
    "long_user_id": "user_id: longer than 256",
    "upper_case_type": "event_type: 'LIKE' is not one of",
    "lone_surrogate": "item_id: holds a lone surrogate",
    "control_character": "Invalid control character",
    "bad_escape": "Invalid \\escape",
    "overlong_utf8": "not UTF-8",
    "utf16": "not UTF-8",
    "byte_order_mark": "Unexpected UTF-8 BOM",
    "trailing_garbage": "Extra data",
    "two_events": "Extra data",
    "array_of_events": "must be a JSON object, got list",
    "bare_string": "must be a JSON object, got str",
    "bare_number": "must be a JSON object, got int",
    "json_null": "must be a JSON object, got NoneType",
    "empty": "not JSON",
    "whitespace": "not JSON",
    "tombstone": "empty record (null value)",
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_malformed_kind_is_rejected_by_the_consumer_contract(
    kind: str, events: list[dict[str, Any]]
) -> None:
    record = malformed(kind, events[0], n=7)
    event, reason = parse_event(record.value)
    assert event is None
    assert reason is not None and EXPECTED_REASON[kind] in reason
    assert record.kind == kind
    assert record.key == events[0]["user_id"].encode()
    # A corrupt copy never carries its original's event id.
    assert f'"{events[0]["event_id"]}"'.encode() not in (record.value or b"")


def test_malformed_kinds_cover_the_documented_variety() -> None:
    assert set(EXPECTED_REASON) == set(KINDS)


def test_injection_hits_the_share_and_keeps_every_event_in_order(
    events: list[dict[str, Any]],
) -> None:
    out = list(with_invalid(events, 0.2, seed=3))
    raw = [r for r in out if isinstance(r, RawRecord)]
    assert [r for r in out if not isinstance(r, RawRecord)] == events
    assert abs(len(raw) / len(out) - 0.2) < 0.03
    assert set(Counter(r.kind for r in raw)) == set(KINDS)
    # Each corrupt record is a copy of the event that follows it.
    for before, after in itertools.pairwise(out):
        if isinstance(before, RawRecord) and isinstance(after, dict):
            assert before.key == after["user_id"].encode()


def test_injection_is_deterministic_by_seed(events: list[dict[str, Any]]) -> None:
    def positions(seed: int) -> list[int]:
        out = with_invalid(events[:500], 0.1, seed=seed)
        return [n for n, r in enumerate(out) if isinstance(r, RawRecord)]

    assert positions(3) == positions(3)
    assert positions(3) != positions(4)
    a = [r for r in with_invalid(events[:500], 0.1, seed=3) if isinstance(r, RawRecord)]
    b = [r for r in with_invalid(events[:500], 0.1, seed=3) if isinstance(r, RawRecord)]
    assert a == b


def test_no_injection_at_share_zero_and_rejects_pass_through(
    events: list[dict[str, Any]],
) -> None:
    assert list(with_invalid(events[:50], 0.0, seed=1)) == events[:50]
    rejects = [Reject(n, "bad", "x") for n in range(200)]
    assert list(with_invalid(rejects, 0.5, seed=1)) == rejects
    with pytest.raises(ValueError):
        list(with_invalid(events, 1.0, seed=1))


# --- keys and messages ------------------------------------------------------------------------


def test_event_key_is_the_user_id_in_utf8() -> None:
    assert event_key({"user_id": "u00042"}) == b"u00042"
    assert event_key({"user_id": "zoë {1}: x"}) == "zoë {1}: x".encode()


def test_unreachable_message_says_how_to_start_the_broker() -> None:
    kafka = KafkaConfig(bootstrap_servers="10.0.0.9:9092")
    message = unreachable_message(kafka, TimeoutError("Unable to bootstrap"))
    assert "10.0.0.9:9092" in message
    assert "streamrec stack up" in message
    assert "kafka.bootstrap_servers" in message
    message = no_topic_message(kafka, "t.events", TimeoutError("metadata"))
    assert "'t.events'" in message and "streamrec stack up" in message


# --- produce options and report ---------------------------------------------------------------


def test_produce_options_are_the_cli_flags_with_the_same_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[ProduceOptions] = []

    def fake_produce(cfg: Config, options: ProduceOptions) -> ProduceReport:
        seen.append(options)
        return ProduceReport(topic=cfg.kafka.events_topic)

    monkeypatch.setattr(run, "produce", fake_produce)
    args = cli.build_parser().parse_args(["produce"])
    assert args.func(Config(), args) == 0
    assert seen == [ProduceOptions()]


def test_synthetic_source_defaults_to_ten_thousand_events() -> None:
    records, total = outgoing_records(ProduceOptions(progress=False))
    assert total == DEFAULT_SYNTHETIC_COUNT == 10_000
    first = next(records)
    assert isinstance(first, dict) and first["event_id"].startswith("syn-")
    records, total = outgoing_records(ProduceOptions(count=25, users=10, items=10, segments=2))
    assert total == 25 and len(list(records)) == 25


def test_injected_records_come_on_top_of_the_count() -> None:
    records, _ = outgoing_records(ProduceOptions(count=400, inject_invalid=0.25, seed=2))
    out = list(records)
    valid = [r for r in out if isinstance(r, dict)]
    assert len(valid) == 400
    assert 0.15 < (len(out) - 400) / len(out) < 0.35


def test_count_limits_a_file_source(tmp_path: Path) -> None:
    path = tmp_path / "plays.csv"
    path.write_text("a,x,1\nb,y,2\nc,z,3\n", encoding="utf-8")
    records, total = outgoing_records(ProduceOptions(source="delimited", path=str(path), count=2))
    assert total == 2
    assert [r["user_id"] for r in records if isinstance(r, dict)] == ["a", "b"]
    records, total = outgoing_records(ProduceOptions(source="delimited", path=str(path)))
    assert total is None and len(list(records)) == 3


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"source": "movielens"}, "--path"),
        ({"source": "kafka"}, "--source"),
        ({"rate": -1.0}, "--rate"),
        ({"count": -5}, "--count"),
        ({"inject_invalid": 1.0}, "--inject-invalid"),
        ({"new_user_share": 2.0}, "--new-user-share"),
        ({"items": 3, "segments": 5}, "--items"),
    ],
)
def test_impossible_options_name_the_flag(changes: dict[str, Any], flag: str) -> None:
    options = dataclasses.replace(ProduceOptions(), **changes)
    with pytest.raises(ConfigError, match=flag):
        outgoing_records(options)


def test_a_missing_input_file_is_reported_before_kafka_is_contacted(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"u\.data"):
        outgoing_records(ProduceOptions(source="movielens", path=str(tmp_path / "u.data")))


def test_report_summary_gives_the_final_counts() -> None:
    report = ProduceReport(topic="streamrec.events", sent=990, acknowledged=1040, elapsed_s=2.0)
    for _ in range(3):
        report.reject("weight 'x' is not a finite number")
    report.reject("empty user or item id")
    report.injected_invalid = 50
    report.injected_kinds.update({"not_json": 30, "oversize": 20})
    text = report.summary()
    assert "sent 990 events to streamrec.events" in text
    assert "rejected 4 records" in text
    assert "3  weight 'x' is not a finite number" in text
    assert "injected 50 malformed records" in text and "not_json 30" in text
    assert "acknowledged 1040" in text


class _Cluster:
    """The two metadata calls a partitioner makes, for a topic of ``n`` partitions."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))


def test_remembering_partitioner_assigns_as_kafkas_default() -> None:
    from kafka.partitioner import DefaultPartitioner

    from streamrec.producer.publisher import RememberingPartitioner

    remembering, default = RememberingPartitioner(max_keys=50), DefaultPartitioner()
    keys = [f"user-{n}".encode() for n in range(200)]
    for n in (1, 2, 3, 12):  # a topic grown to more partitions moves keys as Kafka does
        cluster = _Cluster(n)
        for key in keys + keys:  # the second time from memory (or after it was cleared)
            want = default.partition("t", key, key, b"v", b"v", cluster)
            assert remembering.partition("t", key, key, b"v", b"v", cluster) == want
    assert len(remembering._known) <= 50
    assert remembering.partition("t", None, None, b"v", b"v", _Cluster(3)) in {0, 1, 2}


def test_kafka_python_checksums_batches_in_c() -> None:
    # The crc32c dependency: without it kafka-python falls back, silently, to a pure-Python
    # CRC-32C of every record batch (~0.1 of a core at 2,000 events/s).
    from kafka.record import util

    assert util.crc32c_c is not None
    assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
