"""What a lookup answers, and the pure steps from a Redis reply to that answer: the answer
types (a user's ``Recommendations``, an ``ItemList``, ``SegmentInfo``), id checks against the
event contract, ``ItemFilter`` (exclusions and categories), and the decoders of the readers'
replies, shared by the sync and asyncio clients and by the Redis Cluster reads. No Redis here:
unit-tested on replies alone."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from streamrec.errors import StreamrecError
from streamrec.redis_lists import decoded
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L


class BadLookup(StreamrecError, ValueError):
    """A lookup asked for something that cannot be answered: an empty or too long id, n < 1."""


@dataclass(frozen=True)
class Recommendations:
    """One user's answer. ``source`` is None (and ``items`` empty) when there is no list at
    all: no model published yet, or no list of any kind under the current version."""

    user_id: str
    items: tuple[tuple[str, float], ...]
    source: str | None
    model_version: str | None
    generated_ms: int | None = None
    watermark_ms: int | None = None
    segment: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "source": self.source,
            "model_version": self.model_version,
            "generated_ms": self.generated_ms,
            "watermark_ms": self.watermark_ms,
            "segment": self.segment,
            "items": [{"item_id": item, "score": score} for item, score in self.items],
        }


@dataclass(frozen=True)
class SegmentInfo:
    """A user's segment under the current version (None when they have none) and, for a
    Gaussian mixture, their membership probabilities."""

    user_id: str
    model_version: str | None
    segment: int | None
    probabilities: tuple[float, ...] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "model_version": self.model_version,
            "segment": self.segment,
            "probabilities": None if self.probabilities is None else list(self.probabilities),
        }


@cache
def _max_length(field: str) -> int:
    """The event contract's bound on an id field (schemas/event.schema.json)."""
    rule = next(f for f in E.event_contract().fields if f.name == field)
    return int(rule.max_length or 256)


def max_user_id_length() -> int:
    return _max_length(E.USER_ID)


def max_item_id_length() -> int:
    return _max_length(E.ITEM_ID)


def _check_id(what: str, field: str, value: str) -> None:
    limit = _max_length(field)
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise BadLookup(f"{what} is a string of 1 to {limit} characters, got {value!r:.80}")


def check_user_id(user_id: str) -> None:
    _check_id("a user id", E.USER_ID, user_id)


def check_item_id(item_id: str) -> None:
    _check_id("an item id", E.ITEM_ID, item_id)


@dataclass(frozen=True)
class ItemList:
    """A list that is not a user's: an item's similar items, or the popular list. ``source`` is
    None (and ``items`` empty) when the current version has no such list."""

    items: tuple[tuple[str, float], ...]
    source: str | None
    model_version: str | None
    generated_ms: int | None = None
    watermark_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model_version": self.model_version,
            "generated_ms": self.generated_ms,
            "watermark_ms": self.watermark_ms,
            "items": [{"item_id": item, "score": score} for item, score in self.items],
        }


def item_list(raw: list[Any], n: int, exclude: Collection[str]) -> ItemList:
    """The answer from ``READ_SIMILAR_LUA`` or ``READ_POPULAR_LUA``'s reply. Pure."""
    if n < 1:
        raise BadLookup(f"n must be at least 1, got {n}")
    if raw[0] is None:
        return ItemList((), None, None)
    version = decoded(raw[0])
    if raw[1] is None:
        return ItemList((), None, version)
    blocked = exclude if isinstance(exclude, ItemFilter) else set(exclude)
    rec = L.decode_list(raw[1], n, blocked)
    return ItemList(rec.items, rec.source, rec.model_version, rec.generated_ms, rec.watermark_ms)


Exclusions = Collection[str] | Mapping[str, Collection[str]]


class ItemFilter(Collection[str]):
    """The items a lookup leaves out: the ``excluded`` ones, and with ``allowed`` categories,
    every item in none of them (``categories`` maps an item to its categories; an item it does
    not know is in none). A lookup whose list is left empty falls through to the next list."""

    def __init__(
        self,
        excluded: Collection[str],
        allowed: Collection[str] | None = None,
        categories: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.excluded = frozenset(excluded)
        self.allowed = None if allowed is None else frozenset(allowed)
        self.categories = categories or {}

    def __contains__(self, item: object) -> bool:
        if item in self.excluded:
            return True
        if self.allowed is None:
            return False
        return self.categories.get(str(item), frozenset()).isdisjoint(self.allowed)

    def __bool__(self) -> bool:
        return bool(self.excluded) or self.allowed is not None

    def __len__(self) -> int:
        return len(self.excluded)

    def __iter__(self) -> Iterator[str]:
        return iter(self.excluded)


def pick(
    user_id: str,
    version: str,
    candidates: Iterable[bytes | None],
    segment: int | None,
    n: int,
    exclude: Collection[str],
) -> Recommendations:
    """The answer from the lists the script returned, in fallback order: the first one with an
    item left after ``exclude``, cut to ``n``. Pure: unit-tested without Redis."""
    blocked = exclude if isinstance(exclude, ItemFilter) else set(exclude)
    for raw in candidates:
        if raw is None:
            continue
        rec = L.decode_list(raw, n, blocked)
        if rec.items:
            return Recommendations(
                user_id,
                rec.items,
                rec.source,
                rec.model_version,
                rec.generated_ms,
                rec.watermark_ms,
                segment,
            )
    return Recommendations(user_id, (), None, version, segment=segment)


def answers(
    raw: list[Any], users: list[str], n: int, exclude: Exclusions
) -> dict[str, Recommendations]:
    """Each user's answer from ``LOOKUP_LUA``'s reply. Pure."""
    if raw[0] is None:
        return {u: Recommendations(u, (), None, None) for u in users}
    per_user = exclude if isinstance(exclude, Mapping) else None
    version, popular = str(decoded(raw[0])), raw[1]
    out = {}
    for i, user in enumerate(users):
        own, segment, segment_list = raw[2 + 3 * i : 5 + 3 * i]
        blocked = per_user.get(user, ()) if per_user is not None else exclude
        out[user] = pick(
            user,
            version,
            (own, segment_list, popular),
            None if segment is None else int(segment),
            n,
            blocked,
        )
    return out


def segment_info(user_id: str, raw: list[Any]) -> SegmentInfo:
    """The answer from ``READ_SEGMENT_LUA``'s reply. Pure."""
    if raw[0] is None:
        return SegmentInfo(user_id, None, None)
    segment, probabilities = raw[1], decoded(raw[2])
    return SegmentInfo(
        user_id,
        decoded(raw[0]),
        None if segment is None else int(segment),
        L.decode_segment_probabilities(probabilities) if probabilities else None,
    )
