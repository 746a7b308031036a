"""Lookup for apps: a user's recommendations from Redis in one round trip.

``LookupClient.lookup(user_id, n)`` runs ``LOOKUP_LUA`` (schemas/redis_layout.py): one atomic
step reads the current model version and, under it, the first list that exists of

1. the user's own list (source ``stream`` or ``batch``),
2. their segment's list (source ``segment``), when the user has a segment,
3. the popular list (source ``popular``).

Every answer is wholly from one model version, even while a batch publish switches versions.
With ``exclude``, the script returns every fallback list, the excluded items are left out,
and a list with nothing left falls through to the next one. ``lookup_many`` asks for several
users in the same single round trip. docs/redis-layout.md describes the same lookup for clients
in other languages and on Redis Cluster. On Redis Cluster (``redis.cluster``) each script runs as
a few commands instead (streamrec/cluster_reads.py) and gives the same reply, decoded here alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from streamrec.cluster_reads import reader
from streamrec.errors import StreamrecError
from streamrec.redis_lists import (
    UNREACHABLE,
    RedisClient,
    async_client,
    connect,
    decoded,
    unavailable,
)
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import RedisConfig

T = TypeVar("T")


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


class LookupClient:
    """Lookups against one Redis (connection pool inside; safe to share between threads)."""

    def __init__(self, client: RedisClient, cfg: RedisConfig) -> None:
        self.client, self.cfg = client, cfg
        self._pointer = L.current_model_key(cfg.key_prefix)
        self._lookup = reader(client, LUA.LOOKUP_LUA)
        self._segment = reader(client, LUA.READ_SEGMENT_LUA)
        self._similar = reader(client, LUA.READ_SIMILAR_LUA)
        self._popular = reader(client, LUA.READ_POPULAR_LUA)

    @classmethod
    def open(cls, cfg: RedisConfig) -> LookupClient:
        """Connect (fails fast with ServiceUnavailable saying how to start Redis); a lookup
        waits at most ``redis.socket_timeout_s`` per try and retries once."""
        return cls(connect(cfg, patient=False), cfg)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LookupClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, script: Any, args: list[str]) -> list[Any]:
        try:
            return list(script(keys=[self._pointer], args=args))
        except UNREACHABLE as exc:
            raise unavailable(self.cfg, exc) from exc

    def model_version(self) -> str | None:
        """The version readers follow now (None before the first publish)."""
        try:
            return decoded(self.client.get(self._pointer))
        except UNREACHABLE as exc:
            raise unavailable(self.cfg, exc) from exc

    def has_lists(self, version: str) -> bool:
        """Whether ``version``'s lists are in Redis (its popular list, which every publish
        writes, stands for them): False after Redis lost its data or the lists expired."""
        try:
            return bool(self.client.exists(L.popular_list_key(self.cfg.key_prefix, version)))
        except UNREACHABLE as exc:
            raise unavailable(self.cfg, exc) from exc

    def lookup(self, user_id: str, n: int = 10, exclude: Collection[str] = ()) -> Recommendations:
        """The user's top ``n`` (user list, else segment list, else popular), one round trip."""
        return self.lookup_many([user_id], n, exclude)[user_id]

    def lookup_many(
        self, user_ids: Iterable[str], n: int = 10, exclude: Exclusions = ()
    ) -> dict[str, Recommendations]:
        """Several users in one round trip, all from the same version. ``exclude`` is one set
        of items for everyone, or a mapping from user id to that user's items."""
        users, args = lookup_args(self.cfg.key_prefix, user_ids, n, exclude)
        if not users:
            return {}
        return answers(self._call(self._lookup, args), users, n, exclude)

    def segment(self, user_id: str) -> SegmentInfo:
        """The user's segment (and probabilities) under the current version, one round trip."""
        check_user_id(user_id)
        return segment_info(user_id, self._call(self._segment, [self.cfg.key_prefix, user_id]))

    def similar(self, item_id: str, n: int = 10, exclude: Collection[str] = ()) -> ItemList:
        """The items most like ``item_id`` under the current version, one round trip."""
        check_item_id(item_id)
        return item_list(self._call(self._similar, [self.cfg.key_prefix, item_id]), n, exclude)

    def popular(self, n: int = 10, exclude: Collection[str] = ()) -> ItemList:
        """The current version's popular list, one round trip."""
        return item_list(self._call(self._popular, [self.cfg.key_prefix]), n, exclude)


def lookup_args(
    prefix: str, user_ids: Iterable[str], n: int, exclude: Exclusions
) -> tuple[list[str], list[str]]:
    """The distinct users, checked, and ``LOOKUP_LUA``'s arguments for them."""
    users = list(dict.fromkeys(user_ids))
    if n < 1:
        raise BadLookup(f"n must be at least 1, got {n}")
    for user in users:
        check_user_id(user)
    per_user = exclude if isinstance(exclude, Mapping) else None
    every = bool(exclude) and (per_user is None or any(per_user.values()))
    return users, [prefix, "1" if every else "0", *users]


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


class AsyncLookupClient:
    """The same lookups on redis-py's asyncio client, for the HTTP server (one per event
    loop). Every call waits at most ``timeout_s`` in all, retries included, then raises
    ServiceUnavailable."""

    def __init__(
        self, client: aioredis.Redis | AsyncRedisCluster, cfg: RedisConfig, timeout_s: float
    ) -> None:
        self.client, self.cfg, self.timeout_s = client, cfg, timeout_s
        self._pointer = L.current_model_key(cfg.key_prefix)
        self._lookup = reader(client, LUA.LOOKUP_LUA)
        self._segment = reader(client, LUA.READ_SEGMENT_LUA)
        self._similar = reader(client, LUA.READ_SIMILAR_LUA)
        self._popular = reader(client, LUA.READ_POPULAR_LUA)

    @classmethod
    async def open(cls, cfg: RedisConfig, timeout_s: float, ping: bool = True) -> AsyncLookupClient:
        """A client; with ``ping``, one that has answered (else ServiceUnavailable). Without,
        it connects on first use, so a server starts while Redis is away and answers 503."""
        client = async_client(cfg)
        lookups = cls(client, cfg, timeout_s)
        if ping:
            await lookups._bounded(client.ping())
        return lookups

    async def close(self) -> None:
        await self.client.aclose()

    async def _bounded(self, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call
        except (*UNREACHABLE, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and not isinstance(exc, redis.TimeoutError):
                exc = redis.TimeoutError(f"no answer within {self.timeout_s:g} s")
            raise unavailable(self.cfg, exc) from exc

    async def model_version(self) -> str | None:
        return decoded(await self._bounded(self.client.get(self._pointer)))

    async def user_state(self, user_id: str) -> bytes | None:
        """The streaming job's stored state of the user (model/user_state.py), None if none."""
        check_user_id(user_id)
        key = L.user_state_key(self.cfg.key_prefix, user_id)
        raw = await self._bounded(self.client.hget(key, "state"))
        return raw.encode("utf-8") if isinstance(raw, str) else raw

    async def has_lists(self, version: str) -> bool:
        key = L.popular_list_key(self.cfg.key_prefix, version)
        return bool(await self._bounded(self.client.exists(key)))

    async def lookup(
        self, user_id: str, n: int = 10, exclude: Collection[str] = ()
    ) -> Recommendations:
        users, args = lookup_args(self.cfg.key_prefix, [user_id], n, exclude)
        raw = await self._bounded(self._lookup(keys=[self._pointer], args=args))
        return answers(list(raw), users, n, exclude)[user_id]

    async def segment(self, user_id: str) -> SegmentInfo:
        check_user_id(user_id)
        args = [self.cfg.key_prefix, user_id]
        raw = await self._bounded(self._segment(keys=[self._pointer], args=args))
        return segment_info(user_id, list(raw))

    async def similar(self, item_id: str, n: int = 10, exclude: Collection[str] = ()) -> ItemList:
        check_item_id(item_id)
        args = [self.cfg.key_prefix, item_id]
        raw = await self._bounded(self._similar(keys=[self._pointer], args=args))
        return item_list(list(raw), n, exclude)

    async def popular(self, n: int = 10, exclude: Collection[str] = ()) -> ItemList:
        args = [self.cfg.key_prefix]
        raw = await self._bounded(self._popular(keys=[self._pointer], args=args))
        return item_list(list(raw), n, exclude)


def table(
    rec: Recommendations, titles: Mapping[str, str] | None = None, now_ms: int | None = None
) -> str:
    """A readable table of one answer (`streamrec recommend`), with titles when known."""
    titles = titles or {}
    if rec.source is None:
        why = (
            "no model published yet (run `streamrec batch run`)"
            if rec.model_version is None
            else f"no list of any kind under model {rec.model_version}"
        )
        return f"{rec.user_id}: nothing to recommend: {why}"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    age = (now_ms - (rec.generated_ms or now_ms)) / 1000
    segment = "" if rec.segment is None else f", segment {rec.segment}"
    lines = [
        f"{rec.user_id}  (source {rec.source}, model {rec.model_version}{segment}, "
        f"generated {age:.1f}s ago)"
    ]
    width = max((len(item) for item, _ in rec.items), default=4)
    for rank, (item, score) in enumerate(rec.items, start=1):
        title = titles.get(item)
        lines.append(
            f"  {rank:>3}. {item:<{width}}  {score:10.4f}" + (f"  {title}" if title else "")
        )
    return "\n".join(lines)
