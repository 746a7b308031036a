"""The producer against the real test broker: what lands in the topic, under which key and in
which partition, what the report counts, pacing, the errors that say what to fix, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka.partitioner.default import murmur2

from streamrec.errors import ServiceUnavailable
from streamrec.producer.invalid import RawRecord, malformed
from streamrec.producer.publisher import EventPublisher
from streamrec.producer.run import ProduceOptions, produce, publish_events
from streamrec.schemas.config import Config
from streamrec.schemas.config_loader import with_overrides
from streamrec.schemas.events import (
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    ITEM_ID,
    USER_ID,
    VALUE,
    encode_event,
    parse_event,
    validate_event,
)
from tests.conftest import read_topic

pytestmark = pytest.mark.integration

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
# Ids of any shape are allowed by the contract; the key must be their UTF-8 bytes.
USERS = ("u1", "u2", "u3", "user:{odd} id/ü", "ユーザー", "u 6", "u7", "u8")
STREAMREC = Path(sys.executable).with_name("streamrec")  # the venv's console script


def _event(n: int, user: str) -> dict[str, Any]:
    return {
        EVENT_ID: f"ev-{n}",
        USER_ID: user,
        ITEM_ID: f"i{n % 5}",
        EVENT_TYPE: "play",
        EVENT_TIME: BASE_MS + n * 1000,
        VALUE: float(n),
    }


def _expected_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``, as in the Java client."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def test_publish_events_sends_valid_events_by_key_and_raw_records_as_they_are(
    isolated_cfg: Config,
) -> None:
    cfg = isolated_cfg
    valid = [_event(n, USERS[n % len(USERS)]) for n in range(40)]
    invalid = [
        {k: v for k, v in _event(100, "u1").items() if k != USER_ID},  # missing user_id
        {**_event(101, "u2"), EVENT_TYPE: "teleport"},
        {**_event(102, "u3"), EVENT_TIME: (BASE_MS + 102_000) // 1000},  # seconds, not ms
        {**_event(103, "u4"), "rating_v2": 5},
        {**_event(104, "u5"), VALUE: -1.0},
    ]
    raw = [
        malformed("not_json", _event(200, "u1"), 0),
        malformed("not_utf8", _event(201, "u2"), 1),
        malformed("missing_field", _event(202, "u3"), 2),
        RawRecord(key=None, value=b"\x00\x01 no key, not an event", kind="keyless"),
    ]
    # Interleave all three kinds so nothing depends on them coming in blocks.
    records: list[Any] = list(valid)
    for i, extra in enumerate(invalid + raw):
        records.insert(3 + i * 4, extra)

    report = publish_events(cfg, records)

    assert report.topic == cfg.kafka.events_topic
    assert (report.sent, report.rejected, report.injected_invalid) == (
        len(valid),
        len(invalid),
        len(raw),
    )
    assert report.reject_reasons == Counter(validate_event(e) for e in invalid)
    assert report.injected_kinds == Counter(r.kind for r in raw)
    assert report.acknowledged == len(valid) + len(raw)

    in_topic = read_topic(cfg, cfg.kafka.events_topic)
    got = Counter((r.key, r.value) for r in in_topic)
    want = Counter((e[USER_ID].encode("utf-8"), encode_event(e)) for e in valid)
    want.update((r.key, r.value) for r in raw)
    assert got == want  # exactly the valid events and the raw bytes, nothing else, no duplicate

    # The rejected dicts never reached the topic, not even as a part of a record.
    for bad in invalid:
        assert all(f'"{bad[EVENT_ID]}"'.encode() not in r.value for r in in_topic)

    # Keyed by user: one partition per user, the one the default partitioner picks, the users
    # spread over the topic's partitions, and each user's events in the order they were sent.
    by_value = {encode_event(e): e for e in valid}
    partitions_of: dict[str, set[int]] = defaultdict(set)
    order_of: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in in_topic:
        event = by_value.get(r.value)
        if event is None:
            continue
        user = event[USER_ID]
        partitions_of[user].add(r.partition)
        order_of[user].append((r.offset, event[EVENT_ID]))
        assert r.partition == _expected_partition(r.key, cfg.kafka.partitions)
    assert set(partitions_of) == set(USERS)
    assert all(len(p) == 1 for p in partitions_of.values()), partitions_of
    used = set().union(*partitions_of.values())
    assert used == set(range(cfg.kafka.partitions))
    for user, seen in order_of.items():
        sent_ids = [e[EVENT_ID] for e in valid if e[USER_ID] == user]
        assert [event_id for _, event_id in sorted(seen)] == sent_ids


def test_produce_movielens_file_publishes_good_lines_and_reports_the_bad_one(
    isolated_cfg: Config, tmp_path: Path
) -> None:
    cfg = isolated_cfg
    u_data = tmp_path / "u.data"
    u_data.write_text(
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "22\t377\tone\t878887116\n"  # line 3: the rating is not a number
        "244\t51\t2\t880606923\n"
    )

    report = produce(cfg, ProduceOptions(source="movielens", path=str(u_data), progress=False))

    assert (report.sent, report.rejected, report.injected_invalid) == (3, 1, 0)
    assert report.reject_reasons == Counter({"rating 'one' is not a finite number": 1})
    assert report.acknowledged == 3
    expected: list[dict[str, Any]] = [
        {
            EVENT_ID: f"ml:{user}:{item}:{seconds}",
            USER_ID: user,
            ITEM_ID: item,
            EVENT_TYPE: "rating",
            EVENT_TIME: seconds * 1000,
            VALUE: rating,
        }
        for user, item, rating, seconds in (
            ("196", "242", 3.0, 881250949),
            ("186", "302", 3.0, 891717742),
            ("244", "51", 2.0, 880606923),
        )
    ]
    in_topic = read_topic(cfg, cfg.kafka.events_topic)
    got = sorted((json.loads(r.value) for r in in_topic), key=lambda e: e[EVENT_ID])
    assert got == sorted(expected, key=lambda e: e[EVENT_ID])
    assert all(r.key == json.loads(r.value)[USER_ID].encode() for r in in_topic)
    assert all(b"377" not in r.value for r in in_topic)


def test_produce_paces_to_the_rate_asked(isolated_cfg: Config) -> None:
    start = time.monotonic()
    report = produce(isolated_cfg, ProduceOptions(count=100, rate=200.0, progress=False))
    elapsed = time.monotonic() - start

    assert report.sent == 100
    # Record n is due n / rate seconds after the first: record 99 at 0.495 s. A lower bound
    # only: a slow machine may take longer, never less.
    assert elapsed >= 0.45
    assert report.elapsed_s >= 0.45
    assert len(read_topic(isolated_cfg, isolated_cfg.kafka.events_topic)) == 100


def test_unreachable_broker_says_how_to_start_the_stack(isolated_cfg: Config) -> None:
    cfg = with_overrides(isolated_cfg, kafka=dict(bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(ServiceUnavailable, match="streamrec stack up") as info:
        publish_events(cfg, [_event(1, "u1")])
    assert "127.0.0.1:1" in str(info.value)


def test_missing_topic_is_named(isolated_cfg: Config) -> None:
    missing = f"{isolated_cfg.kafka.events_topic}.missing"
    cfg = with_overrides(isolated_cfg, kafka=dict(events_topic=missing))
    with pytest.raises(ServiceUnavailable) as info:
        EventPublisher(cfg.kafka).open()
    assert repr(missing) in str(info.value)
    assert "streamrec stack up" in str(info.value)


def _run_cli(config_file: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert STREAMREC.exists(), f"no console script at {STREAMREC}: pip install -e . in the venv"
    env = {k: v for k, v in os.environ.items() if k != "STREAMREC_CONFIG"}
    return subprocess.run(
        [str(STREAMREC), "--config", str(config_file), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=180,
    )


def _kafka_section(cfg: Config) -> dict[str, Any]:
    return {
        "bootstrap_servers": cfg.kafka.bootstrap_servers,
        "controller_port": cfg.kafka.controller_port,
        "events_topic": cfg.kafka.events_topic,
        "dead_letter_topic": cfg.kafka.dead_letter_topic,
        "partitions": cfg.kafka.partitions,
    }


def test_cli_produce_publishes_the_count_asked(isolated_cfg: Config, tmp_path: Path) -> None:
    config_file = tmp_path / "streamrec.yaml"
    config_file.write_text(yaml.safe_dump({"kafka": _kafka_section(isolated_cfg)}))

    proc = _run_cli(config_file, "produce", "--count", "50", "--no-progress", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert f"sent 50 events to {isolated_cfg.kafka.events_topic}" in proc.stdout
    in_topic = read_topic(isolated_cfg, isolated_cfg.kafka.events_topic)
    assert len(in_topic) == 50
    for r in in_topic:
        event, reason = parse_event(r.value)
        assert reason is None and event is not None
        assert r.key == event[USER_ID].encode("utf-8")


def test_cli_rejects_an_unknown_config_key_naming_it_and_the_file(
    isolated_cfg: Config, tmp_path: Path
) -> None:
    section = {**_kafka_section(isolated_cfg), "bootstrap_serverz": "127.0.0.1:9"}
    config_file = tmp_path / "typo.yaml"
    config_file.write_text(yaml.safe_dump({"kafka": section}))

    proc = _run_cli(config_file, "produce", "--count", "5", "--no-progress", cwd=tmp_path)

    assert proc.returncode == 2
    assert "kafka.bootstrap_serverz" in proc.stderr
    assert str(config_file) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert read_topic(isolated_cfg, isolated_cfg.kafka.events_topic) == []
