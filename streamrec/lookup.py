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
in other languages and on Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import redis

from streamrec.errors import StreamrecError
from streamrec.redis_lists import connect, decoded, unavailable
from streamrec.schemas import events as E
from streamrec.schemas import redis_layout as L
from streamrec.schemas.config import RedisConfig


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
def max_user_id_length() -> int:
    """The event contract's bound on a user id (schemas/event.schema.json)."""
    rule = next(f for f in E.event_contract().fields if f.name == E.USER_ID)
    return int(rule.max_length or 256)


def check_user_id(user_id: str) -> None:
    limit = max_user_id_length()
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= limit:
        raise BadLookup(f"a user id is a string of 1 to {limit} characters, got {user_id!r:.80}")


Exclusions = Collection[str] | Mapping[str, Collection[str]]


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
    blocked = set(exclude)
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

    def __init__(self, client: redis.Redis, cfg: RedisConfig) -> None:
        self.client, self.cfg = client, cfg
        self._pointer = L.current_model_key(cfg.key_prefix)
        self._lookup = client.register_script(L.LOOKUP_LUA)
        self._segment = client.register_script(L.READ_SEGMENT_LUA)

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
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.cfg, exc) from exc

    def model_version(self) -> str | None:
        """The version readers follow now (None before the first publish)."""
        try:
            return decoded(self.client.get(self._pointer))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.cfg, exc) from exc

    def has_lists(self, version: str) -> bool:
        """Whether ``version``'s lists are in Redis (its popular list, which every publish
        writes, stands for them): False after Redis lost its data or the lists expired."""
        try:
            return bool(self.client.exists(L.popular_list_key(self.cfg.key_prefix, version)))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise unavailable(self.cfg, exc) from exc

    def lookup(self, user_id: str, n: int = 10, exclude: Collection[str] = ()) -> Recommendations:
        """The user's top ``n`` (user list, else segment list, else popular), one round trip."""
        return self.lookup_many([user_id], n, exclude)[user_id]

    def lookup_many(
        self, user_ids: Iterable[str], n: int = 10, exclude: Exclusions = ()
    ) -> dict[str, Recommendations]:
        """Several users in one round trip, all from the same version. ``exclude`` is one set
        of items for everyone, or a mapping from user id to that user's items."""
        users = list(dict.fromkeys(user_ids))
        if n < 1:
            raise BadLookup(f"n must be at least 1, got {n}")
        for user in users:
            check_user_id(user)
        if not users:
            return {}
        per_user = exclude if isinstance(exclude, Mapping) else None
        every = bool(exclude) and (per_user is None or any(per_user.values()))
        raw = self._call(self._lookup, [self.cfg.key_prefix, "1" if every else "0", *users])
        if raw[0] is None:
            return {u: Recommendations(u, (), None, None) for u in users}
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

    def segment(self, user_id: str) -> SegmentInfo:
        """The user's segment (and probabilities) under the current version, one round trip."""
        check_user_id(user_id)
        raw = self._call(self._segment, [self.cfg.key_prefix, user_id])
        if raw[0] is None:
            return SegmentInfo(user_id, None, None)
        segment, probabilities = raw[1], decoded(raw[2])
        return SegmentInfo(
            user_id,
            decoded(raw[0]),
            None if segment is None else int(segment),
            L.decode_segment_probabilities(probabilities) if probabilities else None,
        )


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
