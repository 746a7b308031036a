"""Event file readers: MovieLens u.data and delimited files, on tiny files written per test.
Bad lines come back as ``Reject`` (never a crash); a missing or wholly unreadable file raises
``InputError`` naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamrec.errors import InputError
from streamrec.producer import sources
from streamrec.producer.sources import (
    DELIMITED_BASE_MS,
    Reject,
    parse_movielens_line,
    read_delimited,
    read_movielens,
    timestamp_ms,
)
from streamrec.schemas.events import validate_event

pytestmark = pytest.mark.unit

# 2001-02-04T01:42:29Z, inside the contract's 2000..2100 window.
T0 = 981_250_949


def write(tmp_path: Path, text: str | bytes, name: str = "events.txt") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def split(records: list[Any]) -> tuple[list[dict[str, Any]], list[Reject]]:
    events = [r for r in records if isinstance(r, dict)]
    rejects = [r for r in records if isinstance(r, Reject)]
    assert len(events) + len(rejects) == len(records)
    return events, rejects


# --- MovieLens --------------------------------------------------------------------------------


def test_movielens_lines_become_rating_events(tmp_path: Path) -> None:
    path = write(tmp_path, f"196\t242\t3\t{T0}\n186\t302\t4.5\t{T0 + 60}\n")
    events = list(read_movielens(path))
    assert events == [
        {
            "event_id": f"ml:196:242:{T0}",
            "user_id": "196",
            "item_id": "242",
            "event_type": "rating",
            "event_time": T0 * 1000,
            "value": 3.0,
        },
        {
            "event_id": f"ml:186:302:{T0 + 60}",
            "user_id": "186",
            "item_id": "302",
            "event_type": "rating",
            "event_time": (T0 + 60) * 1000,
            "value": 4.5,
        },
    ]
    assert all(validate_event(e) is None for e in events)


def test_movielens_line_parsing_keeps_the_file_time() -> None:
    # The first line of ml-100k (December 1997): inside the contract's window since 1995.
    event = parse_movielens_line(1, "196\t242\t3\t881250949")
    assert isinstance(event, dict)
    assert event["event_time"] == 881_250_949_000
    assert validate_event(event) is None


def test_movielens_bad_lines_are_rejected_in_place(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"1\t10\t5\t{T0}\n"
        "garbage\n"
        f"abc\t10\t5\t{T0}\n"
        f"2\t11\tfive\t{T0}\n"
        f"3\t12\t4\t{T0}\textra\n"
        "4\t13\t4\t694224000\n"  # 1992: before the contract's 1995 minimum
        f"5\t14\t-1\t{T0}\n"
        "\n"
        f"6\t15\t2\t{T0}\r\n",
    )
    records = list(read_movielens(path))
    events, rejects = split(records)
    assert [e["user_id"] for e in events] == ["1", "6"]
    assert [r.line_no for r in rejects] == [2, 3, 4, 5, 6, 7]
    reasons = [r.reason for r in rejects]
    assert "expected 4 tab-separated fields" in reasons[0]
    assert "user id 'abc'" in reasons[1]
    assert "rating 'five'" in reasons[2]
    assert "got 5" in reasons[3]
    assert "event_time" in reasons[4] and "minimum" in reasons[4]
    assert "value" in reasons[5]
    assert rejects[0].raw == "garbage"
    # Order is kept: each reject sits where its line was.
    assert records[0] == events[0] and records[-1] == events[1]


def test_rejects_before_the_first_good_line_are_released_when_it_comes(tmp_path: Path) -> None:
    path = write(tmp_path, f"user\titem\trating\ttimestamp\n1\t10\t5\t{T0}\n")
    records = list(read_movielens(path))
    assert isinstance(records[0], Reject) and records[0].line_no == 1
    assert isinstance(records[1], dict)


def test_a_line_that_is_not_utf8_is_a_reject(tmp_path: Path) -> None:
    path = write(tmp_path, f"1\t10\t5\t{T0}\n".encode() + b"\xff\xfe\t1\t2\t3\n")
    events, rejects = split(list(read_movielens(path)))
    assert len(events) == 1
    assert rejects[0].line_no == 2 and "not UTF-8" in rejects[0].reason


def test_a_missing_file_raises_input_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "u.data"
    with pytest.raises(InputError, match=r"u\.data"):
        read_movielens(missing)
    with pytest.raises(InputError, match="nope"):
        read_delimited(missing)


def test_a_directory_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=str(tmp_path)):
        read_movielens(tmp_path)


def test_a_file_with_no_readable_line_raises_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "1|10|5|981250949\n2|11|3|981250950\n", name="pipes.data")
    with pytest.raises(InputError, match=r"pipes\.data.*line 1"):
        list(read_movielens(path))


def test_a_long_garbage_prefix_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "UNREADABLE_AFTER", 5)
    path = write(tmp_path, "junk\n" * 20 + f"1\t10\t5\t{T0}\n")
    with pytest.raises(InputError, match="first 5 lines"):
        list(read_movielens(path))


def test_an_empty_file_has_no_events(tmp_path: Path) -> None:
    assert list(read_movielens(write(tmp_path, ""))) == []


# --- delimited --------------------------------------------------------------------------------


def test_delimited_without_timestamps_uses_the_base_time_plus_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "alice,song-1,3\nbob,song-2,0.5\n")
    events = list(read_delimited(path))
    assert [(e["user_id"], e["item_id"], e["value"]) for e in events] == [
        ("alice", "song-1", 3.0),
        ("bob", "song-2", 0.5),
    ]
    assert [e["event_time"] for e in events] == [DELIMITED_BASE_MS + 1000, DELIMITED_BASE_MS + 2000]
    assert {e["event_type"] for e in events} == {"play"}
    assert all(validate_event(e) is None for e in events)


def test_delimited_timestamps_in_seconds_milliseconds_and_iso(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"a,x,1,{T0}\na,x,1,{T0 * 1000 + 123}\na,x,1,{T0}.5\na,x,1,2024-03-01T12:00:00Z\na,x,1,\n",
    )
    times = [e["event_time"] for e in read_delimited(path)]
    assert times == [
        T0 * 1000,
        T0 * 1000 + 123,
        T0 * 1000 + 500,
        1_709_294_400_000,
        DELIMITED_BASE_MS + 5 * 1000,
    ]


def test_delimited_header_is_skipped_when_announced(tmp_path: Path) -> None:
    path = write(tmp_path, "user,item,weight\nalice,song-1,2\n")
    events, rejects = split(list(read_delimited(path, header=True)))
    assert [e["user_id"] for e in events] == ["alice"] and rejects == []
    # Line numbers still count the header: the event's time is that of line 2.
    assert events[0]["event_time"] == DELIMITED_BASE_MS + 2000


def test_an_unannounced_header_is_a_reject_with_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "user,item,weight\nalice,song-1,2\n")
    events, rejects = split(list(read_delimited(path)))
    assert len(events) == 1
    assert rejects[0].line_no == 1 and "--header" in rejects[0].reason


@pytest.mark.parametrize(
    ("sep", "line"),
    [
        ("\t", "alice\tsong-1\t2"),
        (";", "alice; song-1; 2"),
        ("::", "alice::song-1::2"),
        (",", '"alice, the second","song, live",2'),
    ],
)
def test_delimited_separators_and_quoting(tmp_path: Path, sep: str, line: str) -> None:
    [event] = read_delimited(write(tmp_path, line + "\n"), sep=sep)
    assert isinstance(event, dict)
    assert event["user_id"].startswith("alice")
    assert event["item_id"].startswith("song")
    assert event["value"] == 2.0
    if sep == ",":
        assert (event["user_id"], event["item_id"]) == ("alice, the second", "song, live")


def test_delimited_bad_lines_are_rejected_with_reasons(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "alice,song-1,1\n"
        "alice,song-1\n"
        ",song-1,1\n"
        "alice,song-1,nan\n"
        "alice,song-1,-2\n"
        "alice,song-1,1,yesterday\n"
        "alice,song-1,1,1\n"
        "alice,song-1,1,2,3\n",
    )
    events, rejects = split(list(read_delimited(path)))
    assert len(events) == 1
    reasons = {r.line_no: r.reason for r in rejects}
    assert "got 2" in reasons[2]
    assert "empty user or item id" in reasons[3]
    assert "'nan' is not a finite number" in reasons[4]
    assert "value" in reasons[5] and "minimum" in reasons[5]
    assert "'yesterday'" in reasons[6]
    assert "event_time" in reasons[7]
    assert "got 5" in reasons[8]


def test_delimited_event_ids_are_deterministic_and_distinct(tmp_path: Path) -> None:
    path = write(tmp_path, f"a,x,1,{T0}\na,x,1,{T0 + 1}\nb,x,1,{T0}\na,x,1\na,x,1\n")
    first = [e["event_id"] for e in read_delimited(path)]
    assert first == [e["event_id"] for e in read_delimited(path)]
    assert len(set(first)) == len(first)
    assert all(i.startswith("dl:") for i in first)


def test_delimited_needs_a_separator(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        read_delimited(write(tmp_path, "a,b,1\n"), sep="")


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("981250949", 981_250_949_000),
        ("981250949.25", 981_250_949_250),
        ("981250949000", 981_250_949_000),
        ("1700000000123", 1_700_000_000_123),
        ("2024-01-01T00:00:00", 1_704_067_200_000),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000),
        ("2024-01-01 00:00:00.5Z", 1_704_067_200_500),
    ],
)
def test_timestamp_ms(text: str, expected: int) -> None:
    assert timestamp_ms(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "12:00", "nan", "inf"])
def test_timestamp_ms_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="neither unix seconds"):
        timestamp_ms(text)
