"""The stream's Arrow parse of Kafka rows agrees with the contract's parse_event, row by row."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyspark.sql.pandas.types import to_arrow_schema

from streamrec.producer.invalid import KINDS, malformed
from streamrec.producer.synthetic import SyntheticWorld
from streamrec.schemas import events as E
from streamrec.schemas.event_store import SOURCE_OFFSET, SOURCE_PARTITION
from streamrec.streaming.parse import (
    KAFKA_TIMESTAMP_MS,
    RAW_KEY,
    RAW_VALUE,
    REASON,
    SOURCE_TOPIC,
    parse_batch,
    parsed_schema,
)

# The broker's append time: after every synthetic event (late events are always accepted).
RECORD_MS = 4_000_000_000_000


def _kafka_rows(
    records: list[tuple[bytes | None, bytes | None]], binary: pa.DataType
) -> pa.RecordBatch:
    n = len(records)
    return pa.RecordBatch.from_pydict(
        {
            "key": pa.array([k for k, _ in records], binary),
            "value": pa.array([v for _, v in records], binary),
            "topic": pa.array(["events"] * n, pa.string()),
            "partition": pa.array([i % 3 for i in range(n)], pa.int32()),
            "offset": pa.array([1000 + i for i in range(n)], pa.int64()),
            "timestamp_ms": pa.array([RECORD_MS + i for i in range(n)], pa.int64()),
        }
    )


def _records() -> list[tuple[bytes | None, bytes | None]]:
    world = SyntheticWorld(users=50, items=40, segments=3, seed=5)
    events = list(world.events(60))
    records: list[tuple[bytes | None, bytes | None]] = [
        (e[E.USER_ID].encode(), E.encode_event(e)) for e in events
    ]
    for n, kind in enumerate(KINDS):
        bad = malformed(kind, events[n], n)
        records.append((bad.key, bad.value))
    with_int_value = {**events[0], E.EVENT_ID: "int-value", E.VALUE: 3}
    without_value = {k: v for k, v in events[1].items() if k != E.VALUE}
    records += [
        (None, E.encode_event(with_int_value)),
        (b"k", E.encode_event({**without_value, E.EVENT_ID: "no-value"})),
        (b"k", None),  # a tombstone: no value at all
        (None, b""),
    ]
    return records


@pytest.mark.parametrize("binary", [pa.binary(), pa.large_binary()])
def test_parse_batch_matches_parse_event_row_by_row(binary: pa.DataType) -> None:
    records = _records()
    batch = _kafka_rows(records, binary)
    out = parse_batch(batch)
    assert out.schema == to_arrow_schema(parsed_schema())
    rows = out.to_pylist()
    assert len(rows) == len(records)
    reasons = 0
    for i, ((key, value), row) in enumerate(zip(records, rows, strict=True)):
        event, reason = E.parse_event(value)
        assert row[REASON] == reason
        coordinates = (row[SOURCE_TOPIC], row[SOURCE_PARTITION], row[SOURCE_OFFSET])
        assert coordinates == ("events", i % 3, 1000 + i)
        assert row[KAFKA_TIMESTAMP_MS] == RECORD_MS + i
        if event is None:
            reasons += 1
            # Dead letters carry the record exactly as it came.
            assert (row[RAW_KEY], row[RAW_VALUE]) == (key, value)
            assert all(row[name] is None for name in E.event_contract().field_names)
        else:
            assert (row[RAW_KEY], row[RAW_VALUE]) == (None, None)
            assert {name: row[name] for name in E.event_contract().field_names} == {
                name: event.get(name) for name in E.event_contract().field_names
            }
    assert reasons == len(KINDS) + 2


def test_parse_batch_types_numbers_as_the_spark_schema_does() -> None:
    rows = {r[E.EVENT_ID]: r for r in parse_batch(_kafka_rows(_records(), pa.binary())).to_pylist()}
    assert rows["int-value"][E.VALUE] == 3.0 and isinstance(rows["int-value"][E.VALUE], float)
    assert rows["no-value"][E.VALUE] is None
    assert all(isinstance(r[E.EVENT_TIME], int) for r in rows.values() if r[E.EVENT_ID])


def test_parse_batch_of_no_rows() -> None:
    out = parse_batch(_kafka_rows([], pa.binary()))
    assert out.num_rows == 0 and out.schema == to_arrow_schema(parsed_schema())


def test_an_event_dated_ahead_of_its_record_is_a_dead_letter_and_a_late_one_is_not() -> None:
    from streamrec.streaming.parse import parse_with_clock, valid_event_frame

    world = SyntheticWorld(users=5, items=5, segments=1, seed=1)
    ahead, late, near = (dict(e) for e in world.events(3))
    hour = 3_600_000
    ahead[E.EVENT_TIME] = RECORD_MS + hour + 1
    late[E.EVENT_TIME] = RECORD_MS - 30 * 365 * 24 * hour  # a backfill, decades old
    near[E.EVENT_TIME] = RECORD_MS + hour  # clocks a little apart: within the bound
    values = [E.encode_event(e) for e in (ahead, late, near)]
    parsed = parse_with_clock(values, [RECORD_MS] * 3, hour)
    assert parsed[0][0] is None and "max_event_time_ahead_s" in str(parsed[0][1])
    assert parsed[1][0] is not None and parsed[2][0] is not None
    batch = pa.RecordBatch.from_pydict(
        {
            "key": pa.array([None] * 3, pa.binary()),
            "value": pa.array(values, pa.binary()),
            "topic": pa.array(["events"] * 3, pa.string()),
            "partition": pa.array([0] * 3, pa.int32()),
            "offset": pa.array([0, 1, 2], pa.int64()),
            "timestamp_ms": pa.array([RECORD_MS] * 3, pa.int64()),
        }
    )
    reasons = [row[REASON] for row in parse_batch(batch, hour).to_pylist()]
    assert reasons[0] == parsed[0][1] and reasons[1:] == [None, None]
    # The lists query leaves out what the archive query dead-letters.
    frame = valid_event_frame(values, [RECORD_MS] * 3, hour)
    assert list(frame[E.EVENT_ID]) == [late[E.EVENT_ID], near[E.EVENT_ID]]
    # No record time (an old message format): nothing to check against.
    assert parse_with_clock(values[:1], [None], hour)[0][0] is not None
