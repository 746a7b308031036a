"""Readers of event files. Each yields contract-valid event dicts, and a ``Reject`` for a line that
cannot be one, so that one bad line never stops a read.

A file that does not exist or cannot be opened raises ``InputError`` when the reader is called.
A file none of whose first ``UNREADABLE_AFTER`` lines (or none at all, if shorter) can be read
raises ``InputError`` too: it is not in the format asked for, and yielding thousands of rejects
would only hide that.

Formats:
- MovieLens ``u.data``: ``user<TAB>item<TAB>rating<TAB>unix-seconds``, integer ids; each line
  becomes a ``rating`` event with ``value`` = rating and id ``ml:<user>:<item>:<seconds>``.
- delimited: ``user<sep>item<sep>weight[<sep>timestamp]``, each line a ``play`` event with
  ``value`` = weight. A one-character ``sep`` follows CSV quoting (a quoted id may hold ``sep``);
  a longer one (MovieLens 1M's ``::``) splits plainly. The timestamp may be unix seconds, unix
  milliseconds (told apart by magnitude, see ``timestamp_ms``) or ISO-8601; when it is absent
  the event time is ``DELIMITED_BASE_MS`` plus one second per line number, so that a file
  without times still replays to the same, ordered events.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.errors import InputError
from streamrec.schemas.events import (
    EVENT_ID,
    EVENT_TIME,
    EVENT_TYPE,
    ITEM_ID,
    USER_ID,
    VALUE,
    validate_event,
)

# A file whose first this many non-blank lines are all rejects is not in the format asked for.
UNREADABLE_AFTER = 1000
# 2024-01-01T00:00:00Z: the time of line 0 of a delimited file without timestamps.
DELIMITED_BASE_MS = 1_704_067_200_000
# Numeric timestamps below this are seconds, above it milliseconds: 1e11 s is the year 5138,
# 1e11 ms is 1973, and the contract only takes 2000..2100 either way.
SECONDS_BELOW = 100_000_000_000
_RAW_KEPT = 200  # characters of a rejected line kept for the report


@dataclass(frozen=True)
class Reject:
    """A line that is not a valid event: where, why, and (the start of) what it was."""

    line_no: int
    reason: str
    raw: str


Record = dict[str, Any] | Reject
# Parses one non-blank line (number, text) into an event, or the reason it cannot.
LineParser = Callable[[int, str], dict[str, Any] | str]


def _open_check(path: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _lines(path: Path) -> Iterator[tuple[int, str | Reject]]:
    """Non-blank lines as (number, text), or a Reject for a line that is not UTF-8."""
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = raw[:_RAW_KEPT].decode("utf-8", "replace")
                yield line_no, Reject(line_no, f"not UTF-8 ({exc.reason})", shown)
                continue
            if line_no == 1:
                text = text.removeprefix("\ufeff")  # a BOM left by spreadsheet exports
            text = text.rstrip("\r\n")
            if text.strip():
                yield line_no, text


def _records(path: Path, fmt: str, parse: LineParser, skip_first: bool) -> Iterator[Record]:
    held: list[Reject] = []  # rejects not yet released: the file has shown no good line so far
    good = 0
    first = True
    for line_no, line in _lines(path):
        if first and skip_first:
            first = False
            continue
        first = False
        record = line if isinstance(line, Reject) else _record(line_no, line, parse)
        if isinstance(record, Reject) and not good:
            held.append(record)
            if len(held) >= UNREADABLE_AFTER:
                raise InputError(_unreadable(path, fmt, held))
            continue
        if not good:
            yield from held
            held.clear()
        good += not isinstance(record, Reject)
        yield record
    if held:
        raise InputError(_unreadable(path, fmt, held))


def _record(line_no: int, line: str, parse: LineParser) -> Record:
    parsed = parse(line_no, line)
    reason = parsed if isinstance(parsed, str) else validate_event(parsed)
    if reason is not None:
        return Reject(line_no, reason, line[:_RAW_KEPT])
    assert isinstance(parsed, dict)
    return parsed


def _unreadable(path: Path, fmt: str, rejects: list[Reject]) -> str:
    examples = "; ".join(f"line {r.line_no}: {r.reason}" for r in rejects[:3])
    return f"{path}: none of the first {len(rejects)} lines is {fmt} ({examples})"


def read_movielens(path: str | Path) -> Iterator[Record]:
    """Events of a MovieLens ``u.data`` file (see the module docstring)."""
    file = Path(path)
    _open_check(file)
    return _records(file, "a MovieLens u.data line", parse_movielens_line, skip_first=False)


def parse_movielens_line(line_no: int, line: str) -> dict[str, Any] | str:
    fields = line.split()
    if len(fields) != 4:
        return f"expected 4 tab-separated fields (user item rating timestamp), got {len(fields)}"
    user, item, rating, seconds = fields
    for name, text in (("user id", user), ("item id", item), ("timestamp", seconds)):
        if not text.isdigit():
            return f"{name} {text!r} is not a non-negative integer"
    value = _number(rating)
    if value is None:
        return f"rating {rating!r} is not a finite number"
    return {
        EVENT_ID: f"ml:{user}:{item}:{seconds}",
        USER_ID: user,
        ITEM_ID: item,
        EVENT_TYPE: "rating",
        EVENT_TIME: int(seconds) * 1000,
        VALUE: value,
    }


def read_delimited(path: str | Path, sep: str = ",", header: bool = False) -> Iterator[Record]:
    """Events of a ``user,item,weight[,timestamp]`` file (see the module docstring)."""
    if not sep:
        raise ValueError("sep must not be empty")
    file = Path(path)
    _open_check(file)
    fmt = f"a 'user{sep}item{sep}weight[{sep}timestamp]' line"
    return _records(file, fmt, delimited_parser(sep), skip_first=header)


def delimited_parser(sep: str) -> LineParser:
    """The line parser of a delimited file with separator ``sep``."""

    def split(line: str) -> list[str]:
        if len(sep) == 1:
            return next(csv.reader([line], delimiter=sep, skipinitialspace=True))
        return line.split(sep)

    def parse(line_no: int, line: str) -> dict[str, Any] | str:
        try:
            fields = [f.strip() for f in split(line)]
        except csv.Error as exc:
            return f"not a delimited line: {exc}"
        return delimited_event(line_no, fields, sep)

    return parse


def delimited_event(line_no: int, fields: list[str], sep: str = ",") -> dict[str, Any] | str:
    """The event of one split delimited line, or the reason it is not one."""
    if len(fields) not in (3, 4):
        hint = " (a header? pass --header)" if line_no == 1 else ""
        return (
            f"expected 3 or 4 fields (user, item, weight[, timestamp]) split by {sep!r}, "
            f"got {len(fields)}{hint}"
        )
    user, item, weight = fields[:3]
    if not user or not item:
        return "empty user or item id"
    value = _number(weight)
    if value is None:
        hint = " (a header? pass --header)" if line_no == 1 else ""
        return f"weight {weight!r} is not a finite number{hint}"
    stamp = fields[3] if len(fields) == 4 else ""
    if stamp:
        try:
            event_time = timestamp_ms(stamp)
        except ValueError as exc:
            return str(exc)
    else:
        event_time = DELIMITED_BASE_MS + line_no * 1000
    digest = hashlib.blake2b(
        "\x1f".join((user, item, weight, str(event_time))).encode("utf-8"), digest_size=10
    ).hexdigest()
    return {
        EVENT_ID: f"dl:{digest}",
        USER_ID: user,
        ITEM_ID: item,
        EVENT_TYPE: "play",
        EVENT_TIME: event_time,
        VALUE: value,
    }


def timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch of unix seconds, unix milliseconds or an ISO-8601 time.

    Numbers below ``SECONDS_BELOW`` are seconds (fractions kept to the millisecond), larger ones
    milliseconds. An ISO time without a zone is taken as UTC.
    """
    number = _number(text)
    if number is not None:
        return round(number * 1000) if abs(number) < SECONDS_BELOW else round(number)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither unix seconds, unix milliseconds nor ISO-8601"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
