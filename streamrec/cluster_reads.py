"""The layout's Lua readers done as separate commands, for Redis Cluster.

``LOOKUP_LUA``, ``READ_SEGMENT_LUA``, ``READ_SIMILAR_LUA``, ``READ_POPULAR_LUA`` and
``READ_LISTS_LUA`` (schemas/redis_layout.py) read the pointer and keys of several slots in one
call, which Redis Cluster refuses. Here each is a plan of rounds (docs/redis-layout.md, "Redis
Cluster"): ``GET`` the pointer, read the keys under that version (a round's commands go in one
cluster pipeline, split by node), and, when something is missing that a reader falls back from
(a user with no own list, an unknown item, no popular list), ``GET`` the pointer again: if a
publish switched versions meanwhile (and may be deleting the old one's keys), start over under
the new version. Every key of an answer is named with the same version, so an answer never
mixes versions. A plan returns exactly the reply its script returns, so the lookup clients
decode both the same way (streamrec/lookup.py).

A plan is a generator: it yields a round's commands, is sent their replies, and returns the
reply. ``ClusterScript`` and ``AsyncClusterScript`` run plans against redis-py's sync and
asyncio cluster clients, and are called like the ``Script`` objects of ``register_script``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from streamrec.schemas import redis_layout as L
from streamrec.schemas import redis_lua as LUA

Command = tuple[str, ...]
# A round's commands out, their replies in; the script's reply at the end.
Plan = Generator[Sequence[Command], list[Any], list[Any]]
Read = Generator[Sequence[Command], list[Any], tuple[list[Any], bool]]

# Starts over at most this often: a publish switches versions minutes apart, so a second round
# is already rare. Past it, the last answer is returned (whole, from one version).
MAX_ROUNDS = 5


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def under_version(pointer: str, read: Callable[[str], Read]) -> Plan:
    """``read(version)`` under the current version: ``[version, *its replies]``, or ``[None]``
    without one. ``read`` returns its replies and whether they are whole (nothing missing that
    could be missing because the version was being deleted); when they are not, the pointer is
    read again, and a changed pointer starts the read over."""
    body: list[Any] = []
    for _ in range(MAX_ROUNDS):
        (version,) = yield [("GET", pointer)]
        if version is None:
            return [None]
        body, whole = yield from read(_text(version))
        if whole:
            break
        (now,) = yield [("GET", pointer)]
        if now == version:
            break
    return [version, *body]


def _fetch(commands: Sequence[Command], whole: Callable[[list[Any]], bool]) -> Read:
    replies = yield commands
    return list(replies), whole(replies)


def lookup_plan(pointer: str, args: Sequence[str]) -> Plan:
    """``LOOKUP_LUA``: ARGV = prefix, "1" to return every fallback list, user ids."""
    prefix, every, users = args[0], args[1] == "1", list(args[2:])

    def read(version: str) -> Read:
        fields = yield [
            ("HMGET", L.user_list_key(prefix, version, u), "list", "segment") for u in users
        ]
        falls = [every or own is None for own, _ in fields]
        segments = sorted(
            {seg for (_, seg), fall in zip(fields, falls, strict=True) if seg is not None and fall}
        )
        reads = [("HGET", L.segment_list_key(prefix, version, int(s)), "list") for s in segments]
        if any(falls):
            reads.append(("HGET", L.popular_list_key(prefix, version), "list"))
        replies = (yield reads) if reads else []
        segment_lists = dict(zip(segments, replies, strict=False))
        need_popular, body = every, [None]
        for (own, seg), fall in zip(fields, falls, strict=True):
            seg_list = segment_lists.get(seg) if seg is not None and fall else None
            need_popular = need_popular or (own is None and seg_list is None)
            body += [own, seg, seg_list]
        if need_popular:
            body[0] = replies[-1]
        # A user's own list is an answer of this version; a fallback may be one only because
        # the version's keys are being deleted.
        return body, all(own is not None for own, _ in fields)

    return under_version(pointer, read)


def segment_plan(pointer: str, args: Sequence[str]) -> Plan:
    """``READ_SEGMENT_LUA``: ARGV = prefix, user id."""
    prefix, user = args[0], args[1]

    def read(version: str) -> Read:
        key = L.user_list_key(prefix, version, user)
        ((segment, probabilities),) = yield [("HMGET", key, "segment", "segment_p")]
        return [segment, probabilities], segment is not None

    return under_version(pointer, read)


def _one_list(pointer: str, key: Callable[[str], str]) -> Plan:
    return under_version(
        pointer, lambda v: _fetch([("HGET", key(v), "list")], lambda r: r[0] is not None)
    )


def similar_plan(pointer: str, args: Sequence[str]) -> Plan:
    """``READ_SIMILAR_LUA``: ARGV = prefix, item id."""
    return _one_list(pointer, lambda v: L.similar_list_key(args[0], v, args[1]))


def popular_plan(pointer: str, args: Sequence[str]) -> Plan:
    """``READ_POPULAR_LUA``: ARGV = prefix."""
    return _one_list(pointer, lambda v: L.popular_list_key(args[0], v))


def lists_plan(pointer: str, args: Sequence[str]) -> Plan:
    """``READ_LISTS_LUA``: ARGV = prefix, user ids."""
    prefix, users = args[0], args[1:]
    return under_version(
        pointer,
        lambda v: _fetch(
            [("HGET", L.popular_list_key(prefix, v), "list")]
            + [("HGET", L.user_list_key(prefix, v, u), "list") for u in users],
            lambda replies: all(r is not None for r in replies),
        ),
    )


def drive(plan: Plan, run: Callable[[Sequence[Command]], list[Any]]) -> list[Any]:
    """The reply of ``plan``, each round's commands run by ``run`` (which returns their
    replies in order)."""
    replies: list[Any] | None = None
    try:
        while True:
            replies = run(plan.send(replies))  # type: ignore[arg-type]
    except StopIteration as done:
        return list(done.value)


PLANS: dict[str, Callable[[str, Sequence[str]], Plan]] = {
    LUA.LOOKUP_LUA: lookup_plan,
    LUA.READ_SEGMENT_LUA: segment_plan,
    LUA.READ_SIMILAR_LUA: similar_plan,
    LUA.READ_POPULAR_LUA: popular_plan,
    LUA.READ_LISTS_LUA: lists_plan,
}


def _plan_for(lua: str) -> Callable[[str, Sequence[str]], Plan]:
    try:
        return PLANS[lua]
    except KeyError:
        raise ValueError("no Redis Cluster plan for this Lua script") from None


class ClusterScript:
    """A reader script run as its plan on a sync ``RedisCluster``: ``script(keys, args)``."""

    def __init__(self, client: RedisCluster, lua: str) -> None:
        self.client, self.plan = client, _plan_for(lua)

    def __call__(self, keys: Sequence[str], args: Sequence[str]) -> list[Any]:
        return drive(self.plan(keys[0], args), self._round)

    def _round(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [self.client.execute_command(*commands[0])]
        pipe = self.client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())


class AsyncClusterScript:
    """The same on redis-py's asyncio ``RedisCluster``: ``await script(keys, args)``."""

    def __init__(self, client: AsyncRedisCluster, lua: str) -> None:
        self.client, self.plan = client, _plan_for(lua)

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> list[Any]:
        plan = self.plan(keys[0], args)
        replies: list[Any] | None = None
        try:
            while True:
                replies = await self._round(plan.send(replies))  # type: ignore[arg-type]
        except StopIteration as done:
            return list(done.value)

    async def _round(self, commands: Sequence[Command]) -> list[Any]:
        if len(commands) == 1:
            return [await self.client.execute_command(*commands[0])]
        pipe = self.client.pipeline()
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


def reader(client: Any, lua: str) -> Any:
    """A callable for the reader script ``lua``: redis-py's ``Script`` on one node, its plan on
    Redis Cluster (sync or asyncio)."""
    if isinstance(client, RedisCluster):
        return ClusterScript(client, lua)
    if isinstance(client, AsyncRedisCluster):
        return AsyncClusterScript(client, lua)
    return client.register_script(lua)
