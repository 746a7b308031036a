"""The operator page's shaping of the stream's metrics: points, merging, keep-up, user state."""

from __future__ import annotations

import pytest

from streamrec.console_data import (
    downsample,
    entry_time_ms,
    keeping_up,
    parse_entry,
    state_summary,
    stream_series,
)
from streamrec.model.user_state import UserState
from streamrec.streaming.metrics import ARCHIVE, LISTS, BatchMetrics

pytestmark = pytest.mark.unit


def entry(t_ms: int, metrics: BatchMetrics) -> tuple[bytes, dict[bytes, bytes]]:
    """A metrics entry as XREVRANGE returns it (bytes), written by the stream's own code."""
    fields = {k.encode(): v.encode() for k, v in metrics.fields().items()}
    return f"{t_ms}-0".encode(), fields


def lists_batch(batch: int, valid: int = 90, invalid: int = 10, **kw: object) -> BatchMetrics:
    defaults: dict[str, object] = dict(
        duration_s=0.5,
        input_rps=100.0,
        lag_ms={"p50_ms": 100.0 + batch, "p95_ms": 200.0 + batch, "p99_ms": 300.0 + batch},
    )
    defaults.update(kw)
    return BatchMetrics(LISTS, batch, valid, invalid, **defaults)  # type: ignore[arg-type]


def test_an_entry_parses_to_numbers() -> None:
    row = parse_entry(entry(1_700_000_000_123, lists_batch(7, users=4, model_version="v1")))
    assert row["t_ms"] == 1_700_000_000_123 and row["query"] == LISTS and row["model"] == "v1"
    assert (row["batch"], row["valid"], row["invalid"], row["users"]) == (7, 90, 10, 4)
    assert (row["lag_p50_ms"], row["lag_p99_ms"]) == (107.0, 307.0)
    assert row["processed_rps"] == 200.0  # 100 records in 0.5 s
    # 10 of 100 records arriving at 100/s are invalid: 10 dead letters/s.
    assert row["dead_letters_per_s"] == pytest.approx(10.0)


def test_a_batch_without_lists_has_no_lag() -> None:
    row = parse_entry(entry(5, lists_batch(1, lag_ms={})))
    assert row["lag_p50_ms"] is None and row["lag_p95_ms"] is None
    assert entry_time_ms("17-3") == 17


def test_few_batches_are_one_point_each() -> None:
    rows = [parse_entry(entry(1000 + i, lists_batch(i))) for i in range(5)]
    columns = downsample(rows, points=10)
    assert columns["batch_first"] == columns["batch_last"] == [0, 1, 2, 3, 4]
    assert columns["t_ms"] == [1000, 1001, 1002, 1003, 1004] and columns["step"] == [1]


def test_many_batches_merge_into_at_most_points() -> None:
    rows = [
        parse_entry(entry(i, lists_batch(i, input_rps=float(i), duration_s=i / 1000)))
        for i in range(1, 11)
    ]
    columns = downsample(rows, points=3)  # 10 batches, 4 per point: 4 + 4 + 2
    assert columns["step"] == [4] and columns["batches"] == [4, 4, 2]
    assert columns["batch_first"] == [1, 5, 9] and columns["batch_last"] == [4, 8, 10]
    assert columns["t_ms"] == [4, 8, 10]  # a point is as new as its newest batch
    assert columns["lag_p99_ms"] == [304.0, 308.0, 310.0]  # the worst
    assert columns["duration_ms"] == [4.0, 8.0, 10.0]
    assert columns["input_rps"] == [2.5, 6.5, 9.5]  # the mean
    assert columns["valid"] == [360, 360, 180]  # the sum
    assert downsample([], 3)["t_ms"] == []


def test_keeping_up_behind_and_saturated() -> None:
    def rows(**kw: object) -> list[dict[str, object]]:
        return [parse_entry(entry(i, lists_batch(i, **kw))) for i in range(6)]

    calm = keeping_up(rows(input_rps=50.0), max_records=1000)  # 100 records in 0.5 s: 200/s
    assert calm["status"] == "keeping up" and calm["utilisation"] == 0.25
    busy = keeping_up(rows(input_rps=190.0), max_records=1000)
    assert busy["status"] == "saturated" and busy["utilisation"] == 0.95
    capped = keeping_up(rows(input_rps=50.0), max_records=100)
    assert capped["status"] == "behind" and "100 records" in capped["reason"]
    assert keeping_up([], 100)["status"] == "unknown"


def test_stream_series_splits_queries_and_keeps_the_newest() -> None:
    entries = [entry(100 + i, lists_batch(i)) for i in range(4)]
    entries += [entry(200, BatchMetrics(ARCHIVE, 0, 40, 2, 1.0, 21.0))]
    newest_first = sorted(entries, key=lambda e: e[0], reverse=True)
    body = stream_series(newest_first, newest_first[:1], points=50, max_records=1000)
    assert body["entries"] == 5 and (body["from_ms"], body["to_ms"]) == (100, 200)
    assert body["lists"]["batch_last"] == [0, 1, 2, 3]
    assert body["archive"]["dead_letters_per_s"] == [1.0]  # 2 of 42 records at 21/s
    assert body["newest"]["query"] == ARCHIVE and body["keeping_up"]["status"] == "keeping up"


def test_state_summary_orders_items_by_weight() -> None:
    state = UserState(
        batch=3,
        weights={"a": 0.5, "b": -2.0, "c": 1.0},
        events=5,
        types={"play": 4, "skip": 1},
        last_ms=99,
        ids=("e1", "e2", "e3"),
    )
    summary = state_summary(state, items=2)
    assert [i["item_id"] for i in summary["top_items"]] == ["b", "c"]
    assert summary["newest_event_ids"] == ["e3", "e2"]
    assert (summary["events"], summary["items"], summary["last_event_ms"]) == (5, 3, 99)
