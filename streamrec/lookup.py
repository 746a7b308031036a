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
a few commands instead (streamrec/cluster_reads.py) and gives the same reply. The answers and
their decoding from a reply are streamrec/lookup_answers.py, shared by both clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Collection, Iterable, Mapping
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from streamrec.cluster_reads import reader
from streamrec.lookup_answers import (
    BadLookup,
    Exclusions,
    ItemList,
    Recommendations,
    SegmentInfo,
    answers,
    check_item_id,
    check_user_id,
    item_list,
    segment_info,
)
from streamrec.redis_lists import (
    UNREACHABLE,
    RedisClient,
    async_client,
    connect,
    decoded,
    unavailable,
)
from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA
from streamrec.schemas.config import RedisConfig

T = TypeVar("T")


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
